"""Baselines: each one's known behaviour, and AMHT-LRS against them."""

import numpy as np
import pytest

import lowrank_sparse as ls
from lowrank_sparse import metrics
from lowrank_sparse.baselines import convex_low_rank_sparse

from conftest import make_instance


def test_low_rank_only_recovers_exactly_when_k_is_zero():
    problem = ls.make_problem(30, 200, 2, 0, rng=1)
    data = ls.sample_data(problem, 10, n_test=0, rng=2)
    fit = ls.LowRankOnly(2).fit(data.X, data.y)
    assert metrics.subspace_distance(problem.U, fit.U_) <= 1e-8
    np.testing.assert_allclose(fit.theta_, problem.theta, atol=1e-7)


def test_low_rank_only_has_an_error_floor_when_k_is_not_zero():
    problem, data = make_instance(d=30, t=200, r=2, k=2, n=30, seed=3)
    fit = ls.LowRankOnly(2).fit(data.X, data.y)
    assert metrics.relative_error(problem.theta, fit.theta_) >= 0.3


@pytest.mark.parametrize("n,exact", [(20, True), (30, True), (19, False)])
def test_per_user_least_squares_is_exact_iff_n_at_least_d(n, exact):
    problem, data = make_instance(d=20, t=30, r=2, k=2, n=n, seed=4)
    fit = ls.PerUserLeastSquares().fit(data.X, data.y)
    errors = metrics.per_user_relative_error(problem.theta, fit.theta_)
    assert np.all(errors <= 1e-9) if exact else np.all(errors >= 1e-3)
    np.testing.assert_allclose(fit.predict(data.X), data.y, atol=1e-8)  # interpolates


def test_per_user_sparse_recovers_sparse_parameters_with_n_well_below_d():
    rng = np.random.default_rng(5)
    t, n, d, k = 200, 25, 100, 3
    theta = np.zeros((t, d))
    support = np.argsort(rng.random((t, d)), axis=1)[:, :k]
    np.put_along_axis(theta, support, rng.choice([-1, 1], (t, k)) * rng.uniform(0.5, 1.5, (t, k)), axis=1)
    X = rng.standard_normal((t, n, d))
    y = np.einsum("tnd,td->tn", X, theta)
    fit = ls.PerUserSparse(k).fit(X, y)
    assert np.mean(metrics.per_user_relative_error(theta, fit.theta_) <= 1e-9) >= 0.97
    assert np.all((fit.theta_ != 0).sum(axis=1) <= k)


def test_convex_solution_satisfies_optimality_conditions():
    problem, data = make_instance(d=12, t=30, r=2, k=1, n=10, noise=0.1, seed=6)
    X, y = data.X, data.y
    lam_nuc, lam_l1 = 0.8, 0.15
    L, S, it = convex_low_rank_sparse(X, y, lam_nuc, lam_l1, n_iter=20000, tol=1e-13)
    n = X.shape[1]
    G = -np.einsum("tnd,tn->td", X, np.einsum("tnd,td->tn", X, L + S) - y) / n  # -gradient
    tol = 1e-6
    # l1: G = lam sign(S) on the support, |G| <= lam off it.
    on = S != 0
    np.testing.assert_allclose(G[on], lam_l1 * np.sign(S[on]), atol=tol)
    assert np.all(np.abs(G[~on]) <= lam_l1 + tol)
    # nuclear norm: G = lam (U V^T + W), U^T W = 0, W V = 0, ||W||_2 <= 1.
    u, s, vt = np.linalg.svd(L, full_matrices=False)
    rank = int(np.sum(s > 1e-8))
    assert rank >= 1
    u, vt = u[:, :rank], vt[:rank]
    np.testing.assert_allclose(u.T @ G @ vt.T, lam_nuc * np.eye(rank), atol=tol)
    W = G / lam_nuc - u @ vt
    np.testing.assert_allclose(u.T @ W, 0, atol=tol)
    np.testing.assert_allclose(W @ vt.T, 0, atol=tol)
    assert np.linalg.norm(W, 2) <= 1 + tol


@pytest.mark.slow
def test_amht_beats_every_baseline_that_does_not_know_the_truth():
    n = int(np.ceil(2 * (2 + 2 * np.log(50 / 2))))  # 2 (r + k log(d / k)) = 17
    problem, data = make_instance(d=50, t=400, r=2, k=2, n=n, noise=0.1, seed=7, n_test=100)

    def mse(model):
        fitted = model.fit(data.X, data.y)
        return np.median(metrics.per_user_test_mse(fitted.theta_, data.X_test, data.y_test))

    ours = mse(ls.AMHTLRS(2, 2))
    for baseline in (ls.LowRankOnly(2), ls.PerUserLeastSquares(), ls.PerUserSparse(4),
                     ls.ConvexLowRankSparse(), ls.PrivateLowRankOnly(2, 8.0, 1e-5, rng=0)):
        assert ours < mse(baseline), type(baseline).__name__
    assert ours <= 1.5 * mse(ls.Oracle(problem.U, problem.support))


@pytest.mark.parametrize("make", [
    lambda: ls.LowRankOnly(2), lambda: ls.PerUserLeastSquares(), lambda: ls.PerUserSparse(2),
    lambda: ls.ConvexLowRankSparse(), lambda: ls.PrivateLowRankOnly(2, 1.0, 1e-5),
])
def test_baselines_reject_bad_input(make):
    problem, data = make_instance(d=10, t=8, r=2, k=1, n=6, seed=8)
    with pytest.raises(ValueError, match=r"y must have shape \(8, 6\)"):
        make().fit(data.X, data.y[:, :5])
    X = data.X.copy()
    X[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="X must be finite"):
        make().fit(X, data.y)


def test_per_user_sparse_rejects_bad_sparsity():
    problem, data = make_instance(d=10, t=8, r=2, k=1, n=6, seed=8)
    with pytest.raises(ValueError, match="sparsity must be <= 6; got 7"):
        ls.PerUserSparse(7).fit(data.X, data.y)
    with pytest.raises(ValueError, match="sparsity must be >= 1; got 0"):
        ls.PerUserSparse(0).fit(data.X, data.y)


def test_personalize_needs_a_shared_subspace():
    problem, data = make_instance(d=10, t=8, r=2, k=1, n=12, seed=9)
    model = ls.PerUserLeastSquares().fit(data.X, data.y)
    with pytest.raises(ValueError, match="PerUserLeastSquares shares no subspace"):
        model.personalize(data.X, data.y)
