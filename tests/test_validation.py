"""Every error a user can meet names the parameter and the value received."""

import numpy as np
import pytest

import lowrank_sparse as ls


@pytest.fixture
def xy():
    problem = ls.make_problem(10, 8, 2, 1, rng=0)
    data = ls.sample_data(problem, 6, n_test=0, rng=1)
    return data.X, data.y


@pytest.mark.parametrize("make", [
    lambda: ls.AMHTLRS(2, 1),
    lambda: ls.KnownSubspace(np.linalg.qr(np.ones((10, 2)) + np.eye(10, 2))[0], 1),
])
def test_shape_mismatch(xy, make):
    X, y = xy
    with pytest.raises(ValueError, match=r"y must have shape \(8, 6\); got y with shape \(8, 5\)"):
        make().fit(X, y[:, :5])
    with pytest.raises(ValueError, match=r"X must have 3 dimensions; got shape \(8, 6\)"):
        make().fit(X[:, :, 0], y)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(xy, bad):
    X, y = xy
    X = X.copy()
    X[3, 2, 1] = bad
    with pytest.raises(ValueError, match=rf"X must be finite .*got {bad} at index \(3, 2, 1\)"):
        ls.AMHTLRS(2, 1).fit(X, y)
    y = y.copy()
    y[0, 0] = bad
    with pytest.raises(ValueError, match="y must be finite"):
        ls.amht_lrs(xy[0], y, 2, 1)


@pytest.mark.parametrize("rank,message", [
    (0, "rank must be >= 1; got 0"),
    (10, "rank must be < 10; got 10"),
    (-1, "rank must be >= 1; got -1"),
    (2.0, "rank must be an integer; got 2.0"),
    (True, "rank must be an integer; got True"),
])
def test_bad_rank(xy, rank, message):
    with pytest.raises(ValueError, match=message):
        ls.AMHTLRS(rank, 1).fit(*xy)


@pytest.mark.parametrize("sparsity,message", [
    (-1, "sparsity must be >= 0; got -1"),
    (11, "sparsity must be <= 10; got 11"),
    (1.5, "sparsity must be an integer; got 1.5"),
    ("2", "sparsity must be an integer; got '2'"),
])
def test_bad_sparsity(xy, sparsity, message):
    with pytest.raises(ValueError, match=message):
        ls.AMHTLRS(2, sparsity).fit(*xy)


def test_too_few_samples_for_rank_plus_sparsity(xy):
    with pytest.raises(ValueError, match=r"n \(samples per user\) must be >= rank \+ sparsity = 7.*got n = 6"):
        ls.AMHTLRS(2, 5).fit(*xy)


@pytest.mark.parametrize("kwargs,message", [
    ({"n_iter": 0}, "n_iter must be >= 1; got 0"),
    ({"n_iter": 2.5}, "n_iter must be an integer; got 2.5"),
    ({"tol": -1.0}, "tol must be >= 0; got -1.0"),
    ({"robust": 3.0},
     r"robust must be Adaptive\(\), Huber\(c\), Trimmed\(fraction\) or None; got 3.0"),
    ({"solver": "lu"}, "solver must be 'cg' or 'direct'; got 'lu'"),
    ({"init": "svd"}, "init must be 'moments', 'random' or a \\(d, r\\) array; got 'svd'"),
    ({"init": np.ones((9, 2))}, r"init must have shape \(10, 2\); got \(9, 2\)"),
    ({"chunk_size": 0}, "chunk_size must be >= 1; got 0"),
])
def test_bad_options(xy, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ls.amht_lrs(*xy, 2, 1, **kwargs)


@pytest.mark.parametrize("args,message", [
    ((10, 5, 10, 1), "r must be < 10; got 10"),
    ((10, 5, 2, 11), "k must be <= 10; got 11"),
    ((10, 0, 2, 1), "t must be >= 1; got 0"),
    ((10.0, 5, 2, 1), "d must be an integer; got 10.0"),
])
def test_make_problem_errors(args, message):
    with pytest.raises(ValueError, match=message):
        ls.make_problem(*args)


def test_sample_data_errors():
    problem = ls.make_problem(10, 5, 2, 1, rng=0)
    with pytest.raises(ValueError, match="noise must be >= 0; got -0.1"):
        ls.sample_data(problem, 5, noise=-0.1)
    with pytest.raises(ValueError, match="n must be >= 1; got 0"):
        ls.sample_data(problem, 0)


def test_unfitted_and_mismatched_prediction(xy):
    X, y = xy
    model = ls.AMHTLRS(2, 1)
    with pytest.raises(ValueError, match="not fitted yet"):
        model.predict(X)
    model.fit(X, y)
    with pytest.raises(ValueError, match=r"X must have shape \(t=8, m, d=10\); got \(8, 6, 9\)"):
        model.predict(X[:, :, :9])
    with pytest.raises(ValueError, match="X_new must have d = 10 features; got 9"):
        model.personalize(X[:, :, :9], y)


def test_oracle_support_errors(xy):
    X, y = xy
    U = np.linalg.qr(np.random.default_rng(0).standard_normal((10, 2)))[0]
    with pytest.raises(ValueError, match=r"support must have shape \(t, d\) = \(8, 10\); got \(8, 9\)"):
        ls.Oracle(U, np.ones((8, 9), bool)).fit(X, y)
    uneven = np.zeros((8, 10), bool)
    uneven[0, :2] = True
    with pytest.raises(ValueError, match="same number of non-zeros for every user"):
        ls.Oracle(U, uneven).fit(X, y)


def test_input_arrays_are_not_modified(xy):
    X, y = xy
    X0, y0 = X.copy(), y.copy()
    ls.AMHTLRS(2, 1).fit(X, y)
    assert np.array_equal(X, X0) and np.array_equal(y, y0)
