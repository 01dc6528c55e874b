"""Invariances of the estimators (hypothesis): scale, permutations of users and of
features, and the independence of users' local fits."""

import numpy as np
from hypothesis import given, settings, strategies as st

import lowrank_sparse as ls
from lowrank_sparse import metrics

from conftest import make_instance

# One well-posed problem (noiseless, n well above r + k, so the fit is exact) shared by
# the examples; each example only transforms it.
PROBLEM, DATA = make_instance(d=16, t=60, r=2, k=2, n=28, seed=5, n_test=0)
BASE = ls.amht_lrs(DATA.X, DATA.y, 2, 2)
powers = st.integers(-100, 100).map(lambda e: 10.0 ** e)


def test_the_shared_fit_is_exact():
    assert metrics.subspace_distance(PROBLEM.U, BASE.U) <= 1e-9
    np.testing.assert_allclose(BASE.theta, PROBLEM.theta, atol=1e-8)


@settings(max_examples=15, deadline=None)
@given(a=powers, b=powers, mantissa=st.floats(1.0, 9.9))
def test_fits_are_invariant_to_the_scale_of_the_data(a, b, mantissa):
    """fit(a X, b y) gives theta b / a, for a, b from 1e-100 to 1e100."""
    a = a * mantissa
    fit = ls.amht_lrs(DATA.X * a, DATA.y * b, 2, 2)
    np.testing.assert_allclose(fit.theta * (a / b), BASE.theta, rtol=0, atol=1e-9)
    known = ls.KnownSubspace(PROBLEM.U, 2).fit(DATA.X * a, DATA.y * b)
    np.testing.assert_allclose(known.theta_ * (a / b), PROBLEM.theta, atol=1e-8)
    lstsq = ls.PerUserLeastSquares().fit(DATA.X * a, DATA.y * b)
    np.testing.assert_allclose(lstsq.theta_ * (a / b), PROBLEM.theta, atol=1e-8)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2 ** 16))
def test_permuting_users_permutes_their_parameters(seed):
    perm = np.random.default_rng(seed).permutation(DATA.X.shape[0])
    fit = ls.amht_lrs(DATA.X[perm], DATA.y[perm], 2, 2)
    assert metrics.subspace_distance(BASE.U, fit.U) <= 1e-9
    np.testing.assert_allclose(fit.theta, BASE.theta[perm], atol=1e-9)
    np.testing.assert_array_equal(fit.B != 0, BASE.B[perm] != 0)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2 ** 16))
def test_permuting_features_permutes_the_subspace_and_the_supports(seed):
    perm = np.random.default_rng(seed).permutation(DATA.X.shape[2])
    fit = ls.amht_lrs(DATA.X[:, :, perm], DATA.y, 2, 2)
    assert metrics.subspace_distance(BASE.U[perm], fit.U) <= 1e-9
    np.testing.assert_allclose(fit.theta, BASE.theta[:, perm], atol=1e-9)
    np.testing.assert_array_equal(fit.B != 0, BASE.B[:, perm] != 0)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2 ** 16), where=st.floats(0, 1), scale=st.sampled_from([1e-6, 1.0, 1e6]),
       backend=st.sampled_from(["numba", "numpy"]))
def test_adding_a_user_does_not_change_the_others_local_fits(seed, where, scale, backend):
    """Given U, a user's local fit is its own (from greedy starts, or warm starts with
    every user restarted): a new user, anywhere and at any scale, changes no other's."""
    rng = np.random.default_rng(seed)
    problem, data = make_instance(d=12, t=30, r=2, k=2, n=9, noise=0.1, seed=seed % 7, n_test=0)
    U = np.linalg.qr(problem.U + 0.1 * rng.standard_normal(problem.U.shape))[0]
    i = int(where * 30)
    X2 = np.insert(data.X, i, scale * rng.standard_normal((9, 12)), axis=0)
    y2 = np.insert(data.y, i, scale * rng.standard_normal(9), axis=0)
    others = np.delete(np.arange(31), i)
    cold = ls.local_step(data.X, data.y, U, 2, backend=backend)
    cold2 = ls.local_step(X2, y2, U, 2, backend=backend)
    warm = ls.local_step(data.X, data.y, U, 2, support_init=cold.support, restart_above=None,
                         backend=backend)
    warm2 = ls.local_step(X2, y2, U, 2, support_init=cold2.support, restart_above=None,
                          backend=backend)
    for mine, theirs in ((cold, cold2), (warm, warm2)):
        np.testing.assert_array_equal(mine.support, theirs.support[others])
        np.testing.assert_allclose(mine.W, theirs.W[others], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(mine.values, theirs.values[others], rtol=1e-12, atol=1e-14)
