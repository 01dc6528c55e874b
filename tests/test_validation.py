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
     r"robust must be 'auto', Adaptive\(\), Huber\(c\), Trimmed\(fraction\) or None; got 3.0"),
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


# ---------------------------------------------------------------- honest answers (issue 14)

def test_fewer_users_than_the_rank(xy):
    X, y = xy
    with pytest.raises(ValueError, match=r"t \(users\) must be >= rank = 2: .*got t = 1"):
        ls.amht_lrs(X[:1], y[:1], 2, 1)


def test_complex_input_is_rejected(xy):
    X, y = xy
    with pytest.raises(ValueError, match=r"X must be real; got complex values \(dtype complex128\)"):
        ls.AMHTLRS(2, 1).fit(X + 1j, y)
    with pytest.raises(ValueError, match="y must be real"):
        ls.PerUserLeastSquares().fit(X, y.astype(complex))


@pytest.mark.parametrize("make", [
    lambda: ls.AMHTLRS(2, 1), lambda: ls.PerUserLeastSquares(), lambda: ls.PerUserSparse(2),
    lambda: ls.ConvexLowRankSparse(), lambda: ls.LowRankOnly(2),
])
def test_all_zero_or_constant_features_are_rejected(xy, make):
    X, y = xy
    with pytest.raises(ValueError, match="X must not be all zeros: nothing can be learned"):
        make().fit(np.zeros_like(X), y)
    with pytest.raises(ValueError, match="X must not be constant: every entry is 1.5"):
        make().fit(np.full_like(X, 1.5), y)


@pytest.mark.parametrize("make", [lambda: ls.AMHTLRS(2, 1), lambda: ls.PerUserLeastSquares()])
def test_one_astronomical_entry_is_rejected_not_overflowed(xy, make):
    X, y = xy
    X = X.copy()
    X[3, 2, 1] = 1e200
    with pytest.raises(ValueError, match="X spans too many orders of magnitude .*median magnitude"):
        make().fit(X, y)
    y = y.copy()
    y[0, 0] = -1e250
    with pytest.raises(ValueError, match="y spans too many orders of magnitude"):
        make().fit(xy[0], y)


@pytest.mark.parametrize("U,message", [
    (np.zeros((10, 2)), r"U must have orthonormal columns \(U\^T U = I\); got max \|U\^T U - I\| = 1"),
    (2 * np.eye(10, 2), "U must have orthonormal columns"),
    (np.eye(9, 2), r"U must have shape \(10, r\) with r >= 1; got \(9, 2\)"),
    (np.zeros((10, 0)), r"U must have shape \(10, r\) with r >= 1; got \(10, 0\)"),
])
def test_known_subspace_checks_its_subspace(xy, U, message):
    with pytest.raises(ValueError, match=message):
        ls.KnownSubspace(U, 1).fit(*xy)
    with pytest.raises(ValueError, match=message):
        ls.Oracle(U, np.eye(8, 10, dtype=bool)).fit(*xy)


@pytest.mark.parametrize("kwargs,message", [
    ({"n_iter": 0}, "n_iter must be >= 1; got 0"),
    ({"grid": ()}, r"grid must be a non-empty sequence of factors > 0; got \(\)"),
    ({"grid": (0.1, -1.0)}, "grid must be a non-empty sequence of factors > 0"),
    ({"holdout": 1.5}, r"holdout must be in \(0, 1\); got 1.5"),
    ({"tol": -1.0}, "tol must be >= 0; got -1.0"),
    ({"lam_nuclear": -1.0, "lam_l1": 0.1}, "lam_nuclear must be > 0; got -1.0"),
])
def test_convex_baseline_errors(xy, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ls.ConvexLowRankSparse(**kwargs).fit(*xy)


def test_outer_loop_out_of_iterations_warns(xy):
    with pytest.warns(ls.ConvergenceWarning, match="did not converge in n_iter=2 iterations"):
        fit = ls.amht_lrs(*xy, 2, 1, n_iter=2)
    assert not fit.converged and fit.history.cg_converged.all()


def test_u_step_solver_stopping_short_is_recorded_and_warned(xy, monkeypatch):
    from lowrank_sparse import amht, global_step
    capped = lambda *args, **kwargs: global_step.solve_cg(*args, **{**kwargs, "max_iter": 0})
    monkeypatch.setattr(amht, "solve_cg", capped)
    with pytest.warns(ls.ConvergenceWarning, match="conjugate gradients stopped before their "
                                                   r"tolerance in iteration\(s\) \[1"):
        fit = ls.amht_lrs(*xy, 2, 1, n_iter=3)
    assert not fit.history.cg_converged.any()


def test_cg_reports_its_status():
    from lowrank_sparse.global_step import normal_rhs, solve_cg
    problem = ls.make_problem(12, 40, 2, 1, rng=3)
    data = ls.sample_data(problem, 10, n_test=0, rng=4)
    Z = data.y - np.einsum("tnd,td->tn", data.X, problem.B)
    rhs = normal_rhs(data.X, Z, problem.W, np.ones(40))
    U0 = np.linalg.qr(np.random.default_rng(0).standard_normal((12, 2)))[0]
    assert solve_cg(data.X, problem.W, np.ones(40), U0, rhs=rhs, max_iter=1)[2] is False
    U, iterations, converged = solve_cg(data.X, problem.W, np.ones(40), U0, rhs=rhs)
    assert converged and iterations > 1
    # Every user's weight 0: a zero normal operator, CG breaks down at once.
    assert solve_cg(data.X, problem.W, np.zeros(40), U0, rhs=rhs)[1:] == (0, False)
