"""Recovery, convergence and efficiency of AMHT-LRS against planted truths and oracles."""

import warnings

import numpy as np
import pytest

import lowrank_sparse as ls
from lowrank_sparse import metrics
from lowrank_sparse.global_step import normal_rhs, solve_cg, solve_direct

from conftest import make_instance


@pytest.mark.slow
def test_noiseless_exact_recovery_in_most_seeds():
    recovered = 0
    for seed in range(5):
        problem, data = make_instance(seed=seed)
        fit = ls.AMHTLRS(2, 2).fit(data.X, data.y)
        dist = metrics.subspace_distance(problem.U, fit.U_)
        frac = np.mean(metrics.per_user_relative_error(problem.theta, fit.theta_) <= 1e-6)
        recovered += dist <= 1e-8 and frac >= 0.99
    assert recovered >= 4


def test_plain_least_squares_u_step_is_biased_where_robust_step_is_exact():
    # At n = 14 about 6% of users end on a wrong support; with the plain least-squares
    # U step their error spreads to every user (nobody is recovered to 1e-3), with the
    # robust step U is exact and all the other users are recovered.
    problem, data = make_instance(n=14, seed=1)
    robust = ls.amht_lrs(data.X, data.y, 2, 2)
    plain = ls.amht_lrs(data.X, data.y, 2, 2, robust=None)
    assert metrics.subspace_distance(problem.U, robust.U) <= 1e-8
    assert metrics.success_rate(problem.theta, robust.theta) >= 0.9
    assert metrics.subspace_distance(problem.U, plain.U) >= 1e-3
    assert metrics.success_rate(problem.theta, plain.theta) <= 0.05


@pytest.mark.slow
def test_noisy_recovery_matches_oracles():
    problem, data = make_instance(noise=0.1, seed=3, n_test=100)
    fit = ls.AMHTLRS(2, 2).fit(data.X, data.y)
    # Reference for U: least squares with the true W and B.
    Z = data.y - np.einsum("tnd,td->tn", data.X, problem.B)
    U_ls = solve_direct(data.X, Z, problem.W, np.ones(problem.t), chunk_size=problem.t)
    dist_ref = metrics.subspace_distance(problem.U, U_ls)
    dist = metrics.subspace_distance(problem.U, fit.U_)
    assert dist <= 1.5 * dist_ref
    oracle = ls.Oracle(problem.U, problem.support).fit(data.X, data.y)
    mse = np.median(metrics.per_user_test_mse(fit.theta_, data.X_test, data.y_test))
    mse_oracle = np.median(metrics.per_user_test_mse(oracle.theta_, data.X_test, data.y_test))
    assert mse <= 1.5 * mse_oracle
    assert mse_oracle >= 0.1 ** 2  # the Bayes floor: nothing beats the noise


@pytest.mark.slow
def test_sample_efficiency_close_to_known_subspace():
    ns = [5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 20]
    problem = ls.make_problem(50, 400, 2, 2, rng=11)
    known, learned = [], []
    for n in ns:
        data = ls.sample_data(problem, n, n_test=0, rng=[12, n])
        known.append(metrics.success_rate(
            problem.theta, ls.KnownSubspace(problem.U, 2).fit(data.X, data.y).theta_))
        learned.append(metrics.success_rate(
            problem.theta, ls.AMHTLRS(2, 2, n_iter=60).fit(data.X, data.y).theta_))
    n50_known, n50_learned = metrics.n_50(ns, known), metrics.n_50(ns, learned)
    assert n50_known <= 3 * (2 + 2)
    assert n50_learned <= 2 * n50_known


def test_oracle_is_exact_iff_n_at_least_r_plus_k():
    problem, data = make_instance(d=30, t=50, r=3, k=2, n=5, seed=2)
    oracle = ls.Oracle(problem.U, problem.support).fit(data.X, data.y)
    np.testing.assert_allclose(oracle.theta_, problem.theta, atol=1e-9)
    with pytest.raises(ValueError, match="n .* must be >= rank \\+ sparsity = 5"):
        ls.Oracle(problem.U, problem.support).fit(data.X[:, :4], data.y[:, :4])


@pytest.mark.parametrize("seed,r", [(0, 2), (1, 3), (2, 5)])
def test_sparsity_zero_is_alternating_minimization(seed, r):
    # t n = 12 d r >= 10 d r total samples, n = 4 r per user. (At t n = 10 d r exactly
    # with n = r + 1, alternating minimization stalls at a spurious fixed point.)
    d, n = 40, 4 * r
    t = 12 * d * r // n
    problem = ls.make_problem(d, t, r, 0, rng=seed)
    data = ls.sample_data(problem, n, n_test=0, rng=seed + 50)
    fit = ls.AMHTLRS(r, 0, n_iter=300).fit(data.X, data.y)
    assert not fit.B_.any()
    assert metrics.subspace_distance(problem.U, fit.U_) <= 1e-8
    np.testing.assert_allclose(fit.theta_, problem.theta, atol=1e-7)


def test_noiseless_convergence_is_geometric():
    problem, data = make_instance(seed=0)
    fit = ls.AMHTLRS(2, 2, tol=1e-12).fit(data.X, data.y)
    change = fit.history_.subspace_change
    assert fit.converged_ and change[-1] <= 1e-12
    # After a burn-in, every step contracts by a factor bounded away from 1.
    ratios = change[3:] / change[2:-1]
    assert np.all(ratios < 0.6), ratios
    assert np.all(np.diff(fit.history_.train_loss[2:]) <= 1e-12)


def test_callback_sees_every_iterate():
    problem, data = make_instance(d=20, t=100, r=2, k=1, n=20, seed=4)
    seen = []
    fit = ls.AMHTLRS(2, 1).fit(data.X, data.y, callback=lambda it, U: seen.append(
        metrics.subspace_distance(problem.U, U)))
    assert len(seen) == fit.n_iter_
    assert seen[-1] == pytest.approx(metrics.subspace_distance(problem.U, fit.U_))


def test_cg_u_step_solves_the_normal_equations_exactly():
    problem, data = make_instance(d=30, t=150, r=3, k=2, n=15, noise=0.05, seed=5)
    Z = data.y - np.einsum("tnd,td->tn", data.X, problem.B)
    omega = np.random.default_rng(0).uniform(0.2, 1.0, problem.t)
    U0 = np.linalg.qr(np.random.default_rng(1).standard_normal((30, 3)))[0]
    exact = solve_direct(data.X, Z, problem.W, omega, chunk_size=problem.t)
    R = normal_rhs(data.X, Z, problem.W, omega, chunk_size=40)
    for backend in ("numba", "numpy"):
        cg, _, converged = solve_cg(data.X, problem.W, omega, U0, rhs=R, chunk_size=40,
                                    backend=backend)
        assert converged
        np.testing.assert_allclose(cg, exact, atol=1e-11)


def test_cg_and_direct_fits_agree():
    problem, data = make_instance(d=30, t=150, r=3, k=2, n=25, noise=0.05, seed=5)
    # The CG U step is solved inexactly (to 1% of the last change of U): the two fits
    # reach the same fixed point.
    cg = ls.amht_lrs(data.X, data.y, 3, 2, solver="cg", tol=1e-12)
    direct = ls.amht_lrs(data.X, data.y, 3, 2, solver="direct", tol=1e-12)
    assert cg.converged and direct.converged
    np.testing.assert_allclose(cg.theta, direct.theta, atol=1e-9)


def test_chunked_and_unchunked_fits_agree():
    # Chunks of users bound the memory of the batched numpy backend.
    problem, data = make_instance(d=30, t=150, r=3, k=2, n=25, noise=0.05, seed=6)
    whole = ls.amht_lrs(data.X, data.y, 3, 2, n_iter=20, tol=0, backend="numpy")
    chunked = ls.amht_lrs(data.X, data.y, 3, 2, n_iter=20, tol=0, chunk_size=17,
                          backend="numpy")
    np.testing.assert_allclose(chunked.U, whole.U, atol=1e-10)
    np.testing.assert_allclose(chunked.theta, whole.theta, atol=1e-10)


def test_compiled_fit_does_not_depend_on_the_number_of_threads(monkeypatch):
    # Sums over users are taken in blocks fixed by t, so the bits are the same.
    import numba

    from lowrank_sparse import _linalg

    monkeypatch.setattr(_linalg, "PARALLEL_MIN_ENTRIES", 0)  # threads even for this size
    problem, data = make_instance(d=30, t=700, r=3, k=2, n=25, noise=0.05, seed=6)
    fits = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            fits.append(ls.amht_lrs(data.X, data.y, 3, 2, n_iter=10, tol=0))
        finally:
            numba.set_num_threads(previous)
    assert np.array_equal(fits[0].U, fits[1].U) and np.array_equal(fits[0].theta, fits[1].theta)


def test_same_seed_same_bits():
    problem, data = make_instance(d=20, t=80, r=2, k=2, n=12, noise=0.1, seed=8)
    a = ls.AMHTLRS(2, 2, init="random", rng=3).fit(data.X, data.y)
    b = ls.AMHTLRS(2, 2, init="random", rng=3).fit(data.X, data.y)
    assert np.array_equal(a.theta_, b.theta_) and np.array_equal(a.U_, b.U_)
    p2, d2 = make_instance(d=20, t=80, r=2, k=2, n=12, noise=0.1, seed=8)
    assert np.array_equal(d2.X, data.X) and np.array_equal(p2.theta, problem.theta)


def test_fresh_samples_recovers_with_enough_samples():
    problem, data = make_instance(d=20, t=300, r=2, k=1, n=400, seed=9)
    # (20 fresh samples per iteration: "auto" takes Huber; Adaptive() contracts slower
    # here, distance 7e-6 after the 20 iterations)
    fit = ls.AMHTLRS(2, 1, n_iter=20, fresh_samples=True).fit(data.X, data.y)
    assert metrics.subspace_distance(problem.U, fit.U_) <= 1e-8
    with pytest.raises(ValueError, match="fresh_samples needs n // n_iter >= rank \\+ sparsity = 3"):
        ls.AMHTLRS(2, 1, n_iter=200, fresh_samples=True).fit(data.X, data.y)


@pytest.mark.parametrize("d,k,n", [(20, 1, 400), (50, 2, 400), (20, 2, 32)])
def test_default_converges_where_every_user_is_well_fitted(d, k, n):
    # n = 400: the moment initialization is within the U step's first CG tolerance of U*
    # (6e-4); CG must still move U, or the zero change reads as convergence (it stalled
    # there, "converged"). d=20, k=2, n=32: Adaptive's tail alone needs > 100 iterations.
    problem, data = make_instance(d=d, t=300, r=2, k=k, n=n, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ls.ConvergenceWarning)
        fit = ls.amht_lrs(data.X, data.y, 2, k, n_iter=40)
    assert metrics.subspace_distance(problem.U, fit.U) <= 1e-9


def test_auto_rule_is_adaptive_where_users_can_be_misfitted():
    from lowrank_sparse.robust import default_rule
    assert isinstance(default_rule(8, 50, 2, 2), ls.Adaptive)    # d=50, n=8: 37% fitted
    assert isinstance(default_rule(20, 100, 5, 5), ls.Adaptive)  # the million-user setting
    assert isinstance(default_rule(400, 50, 2, 2), ls.Huber)
    assert isinstance(default_rule(8, 50, 2, 0), ls.Huber)       # no sparse part


def test_personalize_new_users_with_frozen_subspace():
    problem = ls.make_problem(30, 250, 2, 2, rng=10)
    data = ls.sample_data(problem, 20, n_test=0, rng=11)
    fit = ls.AMHTLRS(2, 2).fit(data.X[:200], data.y[:200])
    new = fit.personalize(data.X[200:], data.y[200:])
    theta_new = new.W @ fit.U_.T + new.sparse(30)
    errors = metrics.per_user_relative_error(problem.theta[200:], theta_new)
    assert np.mean(errors <= 1e-6) >= 0.95
    pred = fit.predict(data.X[:200])
    np.testing.assert_allclose(pred, data.y[:200], atol=1e-6 * np.abs(data.y).max())


def test_known_subspace_local_step_recovers_supports():
    problem, data = make_instance(d=50, t=300, r=2, k=3, n=30, seed=12)
    fit = ls.KnownSubspace(problem.U, 3).fit(data.X, data.y)
    precision, recall = metrics.support_precision_recall(problem.B, fit.B_)
    assert precision >= 0.98 and recall >= 0.98
    assert np.all((fit.B_ != 0).sum(axis=1) <= 3)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_local_fit_carries_its_residuals_and_correlations(backend):
    # The U step reuses them instead of passes over X; restarts and chunks must keep
    # them consistent with (W, B) user by user.
    problem, data = make_instance(d=30, t=200, r=2, k=3, n=12, noise=0.1, seed=15)
    U = np.linalg.qr(problem.U + 0.05 * np.random.default_rng(0).standard_normal((30, 2)))[0]
    warm = ls.local_step(data.X, data.y, U, 3, backend=backend)
    fit = ls.local_step(data.X, data.y, U, 3, support_init=warm.support, chunk_size=37,
                        backend=backend)
    # Without a warm start every user starts from greedy supports; with one, only the
    # outliers (residual norm above twice the median) are restarted.
    assert warm.n_restarted == 200 and 0 < fit.n_restarted < 100
    lowrank = np.einsum("tnd,td->tn", data.X, fit.W @ U.T)
    sparse = np.einsum("tnd,td->tn", data.X, fit.sparse(30))
    np.testing.assert_allclose(fit.lowrank_predictions, lowrank, atol=1e-12)
    np.testing.assert_allclose(fit.residual_vectors, data.y - lowrank - sparse, atol=1e-12)
    np.testing.assert_allclose(np.sum(fit.residual_vectors ** 2, axis=1), fit.residual,
                               rtol=1e-10)
    np.testing.assert_allclose(fit.residual_correlations,
                               np.einsum("tnd,tn->td", data.X, data.y - lowrank - sparse),
                               atol=1e-12)


def test_moment_init_finds_the_subspace_with_many_samples():
    problem = ls.make_problem(20, 2000, 2, 1, rng=13)
    data = ls.sample_data(problem, 50, n_test=0, rng=14)
    U0 = ls.moment_init(data.X, data.y, 2)
    np.testing.assert_allclose(U0.T @ U0, np.eye(2), atol=1e-12)
    assert metrics.subspace_distance(problem.U, U0) <= 0.2


def test_second_moment_is_the_closed_form_whatever_its_blocks(monkeypatch):
    # One read of X in small blocks summed into partial sums on numba's threads: the
    # formula's matrix to rounding for every block size, number of partial sums and
    # storage of X, and bit for bit the same on one thread as on several.
    import numba

    from lowrank_sparse import _linalg, amht

    rng = np.random.default_rng(5)
    t, n, d = 301, 7, 6
    X, y = rng.standard_normal((t, n, d)), rng.standard_normal((t, n))
    for X_ in (X, X.astype(np.float32)):
        expected = np.einsum("tn,tnd,tne->de", y ** 2, X_.astype(np.float64),
                             X_.astype(np.float64)) / (t * n)
        for chunk_size, parts in ((None, None), (1, 3), (13, 5), (1000, 1)):
            if parts is not None:  # MOMENT_PARTIAL_FLOATS // d^2 partial sums
                monkeypatch.setattr(amht, "MOMENT_PARTIAL_FLOATS", parts * d * d)
            M = amht.second_moment(X_, y, chunk_size=chunk_size)
            np.testing.assert_allclose(M, expected, rtol=1e-13, atol=1e-14,
                                       err_msg=f"{X_.dtype}, {chunk_size}, {parts}")
    monkeypatch.setattr(_linalg, "PARALLEL_MIN_ENTRIES", 0)  # threads even for this X
    monkeypatch.setattr(amht, "MOMENT_PARTIAL_FLOATS", 7 * d * d)
    several = amht.second_moment(X, y, chunk_size=10)
    default_threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one = amht.second_moment(X, y, chunk_size=10)
    finally:
        numba.set_num_threads(default_threads)
    np.testing.assert_array_equal(one, several)


def test_progress_is_logged_at_info(caplog):
    # Per phase and per outer iteration, on the "lowrank_sparse" logger at INFO: silent
    # unless an application enables INFO (the package adds only a NullHandler).
    import logging

    problem, data = make_instance(seed=2)
    with caplog.at_level(logging.INFO, logger="lowrank_sparse"):
        fit = ls.amht_lrs(data.X, data.y, 2, 2)
    assert all(record.levelno == logging.INFO for record in caplog.records)
    lines = [record.getMessage() for record in caplog.records]
    iterations = [line for line in lines if line.startswith("AMHT-LRS iteration")]
    warmup = [line for line in lines if line.startswith("AMHT-LRS low-rank warm-up")]
    assert len(iterations) == fit.n_iter and len(warmup) == 3
    assert "100.0% of users restarted" in iterations[0]  # no warm start yet
    assert any(line.startswith("AMHT-LRS: initial subspace (moments)") for line in lines)
    assert any(line.startswith("AMHT-LRS final local step") for line in lines)
    assert lines[-1].startswith(f"AMHT-LRS: converged after {fit.n_iter} iterations")
    assert any(isinstance(h, logging.NullHandler)
               for h in logging.getLogger("lowrank_sparse").handlers)


def test_float32_storage_is_kept_and_fits_as_float64():
    # X given in float32 stays float32 through the fit (no float64 copy of it: the
    # memory a million users need), and the arithmetic is float64: the fit equals the
    # fit of the same values stored in float64, to rounding.
    import tracemalloc

    problem, data = make_instance(d=30, t=2000, r=2, k=2, n=25, noise=0.0, seed=3)
    X32 = data.X.astype(np.float32)
    ls.local.precompile(("float32",))  # loading the kernels allocates too: not the fit's
    tracemalloc.start()
    try:
        fit32 = ls.amht_lrs(X32, data.y, 2, 2, tol=1e-12, chunk_size=100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.6 * X32.nbytes * 2  # well below a float64 copy of X
    fit64 = ls.amht_lrs(X32.astype(np.float64), data.y, 2, 2, tol=1e-12, chunk_size=100)
    assert fit32.converged and fit64.converged
    assert metrics.subspace_distance(fit32.U, fit64.U) <= 1e-10
    np.testing.assert_allclose(fit32.theta, fit64.theta, atol=1e-9)
