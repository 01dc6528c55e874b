"""The compiled backend (lowrank_sparse._kernels) against the batched numpy reference:
same supports user by user and the same numbers to rounding, in every path of the
local step (warm start, greedy starts, restarts, k = 0, no shared subspace) and in
whole fits."""

import dataclasses
import functools

import numpy as np
import pytest

import lowrank_sparse as ls
from lowrank_sparse.global_step import _apply, _apply_compiled

from conftest import make_instance


def assert_same_fit(a, b, atol=1e-10):
    np.testing.assert_array_equal(a.support, b.support)
    assert a.n_restarted == b.n_restarted
    for name in ("W", "values", "residual", "residual_vectors", "lowrank_predictions",
                 "residual_correlations"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=atol,
                                   err_msg=name)


@pytest.fixture(scope="module")
def instance():
    # n near r + k so that starts, HTP iterations and restarts all matter.
    problem, data = make_instance(d=40, t=300, r=3, k=3, n=14, noise=0.01, seed=21)
    rng = np.random.default_rng(0)
    U = np.linalg.qr(problem.U + 0.05 * rng.standard_normal(problem.U.shape))[0]
    return problem, data, U


@pytest.mark.parametrize("n_starts", [1, 3])
def test_cold_local_step_matches_numpy(instance, n_starts):
    _, data, U = instance
    fits = [ls.local_step(data.X, data.y, U, 3, n_starts=n_starts, backend=b)
            for b in ("numba", "numpy")]
    assert_same_fit(*fits)


def test_warm_local_step_with_restarts_matches_numpy(instance):
    problem, data, U = instance
    # Warm supports: half right, half random, so HTP moves and outliers are restarted.
    rng = np.random.default_rng(1)
    true = np.argsort(-np.abs(problem.B), axis=1)[:, :3]
    S0 = np.where(rng.random((problem.t, 1)) < 0.5, true,
                  np.argsort(rng.random((problem.t, 40)), axis=1)[:, :3])
    for restart_above in (2.0, None):
        fits = [ls.local_step(data.X, data.y, U, 3, support_init=S0, n_starts=2,
                              restart_above=restart_above, backend=b)
                for b in ("numba", "numpy")]
        assert_same_fit(*fits)


def test_local_step_without_sparse_part_or_subspace_matches_numpy(instance):
    problem, data, U = instance
    for U_, k in ((U, 0), (np.zeros((40, 0)), 3)):  # AltMin heads; per-user sparse
        fits = [ls.local_step(data.X, data.y, U_, k, backend=b) for b in ("numba", "numpy")]
        assert_same_fit(*fits)


def test_normal_operator_matches_numpy(instance):
    problem, data, U = instance
    omega = np.random.default_rng(2).uniform(0, 1, problem.t)
    np.testing.assert_allclose(_apply_compiled(data.X, U, problem.W, omega),
                               _apply(data.X, U, problem.W, omega, chunk_size=50),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fresh_samples", [False, True])
def test_fits_match_numpy(fresh_samples):
    # fresh_samples hands the kernels strided views of X (no copies): 6 batches of 20.
    problem, data = make_instance(d=30, t=300, r=2, k=2, n=120 if fresh_samples else 40,
                                  seed=22)
    fits = [ls.amht_lrs(data.X, data.y, 2, 2, n_iter=6 if fresh_samples else 100,
                        fresh_samples=fresh_samples, backend=b) for b in ("numba", "numpy")]
    np.testing.assert_allclose(fits[0].theta, fits[1].theta, atol=1e-9)
    np.testing.assert_array_equal(fits[0].history.cg_iterations, fits[1].history.cg_iterations)


def test_dp_fit_matches_numpy():
    problem, data = make_instance(d=20, t=400, r=2, k=1, n=30, seed=23)
    fits = [ls.dp_amht_lrs(data.X, data.y, 2, 1, epsilon=8.0, delta=1e-5, n_iter=4, rng=0,
                           backend=b) for b in ("numba", "numpy")]
    np.testing.assert_allclose(fits[0].theta, fits[1].theta, atol=1e-9)


def test_unknown_backend_is_refused(instance):
    _, data, U = instance
    with pytest.raises(ValueError, match="backend must be one of"):
        ls.local_step(data.X, data.y, U, 3, backend="cuda")


def test_degenerate_user_does_not_disturb_the_others(instance):
    # User 0's features are rank one: its refits are singular (pseudo-inverse); every
    # other user's fit is as the numpy reference's.
    problem, data, U = instance
    X = data.X.copy()
    X[0] = np.outer(np.arange(1.0, 15.0), np.ones(40))
    fits = [ls.local_step(X, data.y, U, 3, backend=b) for b in ("numba", "numpy")]
    assert all(np.all(np.isfinite(f.W)) and np.all(np.isfinite(f.values)) for f in fits)
    np.testing.assert_allclose(fits[0].residual[0], fits[1].residual[0], rtol=1e-8)
    assert_same_fit(fits[0].users(slice(1, None)), fits[1].users(slice(1, None)), atol=1e-8)


def test_every_layout_compiles_once_and_gives_the_same_fit(instance):
    # Fortran order and strided views (as fresh_samples' batches) are brought to the one
    # layout the kernels are compiled for: the same fit bit for bit, and no kernel has a
    # signature with an array that is not C-contiguous.
    from numba import types
    from lowrank_sparse import _kernels

    _, data, U = instance
    X, y = data.X, data.y
    reference = ls.local_step(X, y, U, 3)
    spaced = np.zeros(X.shape[:2] + (2 * X.shape[2],))
    spaced[:, :, ::2] = X
    doubled = np.concatenate([X, X], axis=1)
    for X_ in (np.asfortranarray(X), spaced[:, :, ::2], doubled[:, :X.shape[1]]):
        y_ = np.asfortranarray(y)
        fit = ls.local_step(X_, y_, U, 3)
        assert_same_fit(fit, reference, atol=0)
    for kernel in (_kernels._fit_tasks, _kernels._normal_operator_blocks):
        for signature in kernel.signatures:
            arrays = [a for a in signature if isinstance(a, types.Array)]
            assert arrays and all(a.layout == "C" for a in arrays), signature


def test_float32_storage_changes_only_storage(instance):
    # The same values stored in float32 and in float64: the arithmetic is float64 either
    # way, so the fits agree to rounding, and float32 storage against the numpy
    # reference gives the same supports.
    _, data, U = instance
    X32 = data.X.astype(np.float32)
    fit32 = ls.local_step(X32, data.y, U, 3, n_starts=2)
    fit64 = ls.local_step(X32.astype(np.float64), data.y, U, 3, n_starts=2)
    assert_same_fit(fit32, fit64, atol=1e-12)
    assert all(getattr(fit32, f).dtype == np.float64
               for f in ("W", "values", "residual_correlations"))
    assert_same_fit(fit32, ls.local_step(X32, data.y, U, 3, n_starts=2, backend="numpy"))
    omega = np.random.default_rng(3).uniform(0, 1, X32.shape[0])
    np.testing.assert_allclose(_apply_compiled(X32, U, fit32.W, omega),
                               _apply(X32.astype(np.float64), U, fit32.W, omega, 100),
                               rtol=1e-12, atol=1e-12)


def test_sample_data_draws_float32_directly():
    problem = ls.make_problem(20, 50, 2, 2, rng=0)
    data = ls.sample_data(problem, 8, n_test=3, rng=1, dtype="float32")
    assert data.X.dtype == data.X_test.dtype == np.float32
    assert data.y.dtype == np.float64
    # noiseless: y is theta applied to the stored float32 X, summed in float64
    np.testing.assert_allclose(
        data.y, np.einsum("tnd,td->tn", data.X.astype(np.float64), problem.theta),
        rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="dtype must be float64 or float32"):
        ls.sample_data(problem, 8, dtype="float16")


def test_singular_refit_gets_the_minimum_norm_solution():
    # The kernels' fallback for a singular refit (collinear regressors): numpy's
    # hermitian pinv, with Jacobi eigenpairs (no LAPACK), on PSD matrices of every rank
    # (non-zero eigenvalues in [0.5, 2]); zero for non-finite input.
    from numba import njit

    from lowrank_sparse._kernels import _cholesky, _solve_factored

    # as _refit solves: its Cholesky test, then the factor or the pseudo-inverse
    solve = njit(lambda G, h, x, L, m: _solve_factored(G, h, x, L, m,
                                                       _cholesky(G, L, m, 1e-12)))
    rng = np.random.default_rng(4)
    for m in (1, 2, 5, 10):
        for rank in range(m + 1):
            basis = np.linalg.qr(rng.standard_normal((m, m)))[0][:, :rank]
            G = basis @ np.diag(rng.uniform(0.5, 2.0, rank)) @ basis.T
            h = rng.standard_normal(m)
            padded_G, padded_h = np.zeros((m + 1, m + 1)), np.zeros(m + 1)
            padded_G[:m, :m], padded_h[:m] = G, h
            x = np.full(m + 1, np.nan)
            solve(padded_G, padded_h, x, np.zeros((m + 1, m + 1)), m)
            np.testing.assert_allclose(x[:m], np.linalg.pinv(G, 1e-12, hermitian=True) @ h,
                                       rtol=1e-12, atol=1e-12)
    for bad in (np.inf, np.nan):
        x = np.ones(2)
        solve(np.array([[1.0, 1.0], [1.0, bad]]), np.ones(2), x, np.zeros((2, 2)), 2)
        np.testing.assert_array_equal(x, 0.0)


@pytest.mark.parametrize("gap", [1e-7, 1e-9, 1e-12])
def test_nearly_collinear_columns_get_the_same_fit_in_both_backends(gap, instance):
    # A feature that nearly duplicates another (to ``gap``): a refit on both is singular
    # by the kernels' pivot rule, which the numpy backend now follows (regular_pivots),
    # so both give the minimum-norm fit, dropping eigenvalues below the same 1e-12.
    # (With numpy's LU solve alone: coefficients of ~1 / gap, larger residuals, and
    # supports that differ for ~1 user in 7; with the pseudo-inverse's cutoff at 1e-15
    # instead of 1e-12, at gap 1e-7: coefficients of ~1e7.)
    from numba import njit

    from lowrank_sparse._kernels import _cholesky
    from lowrank_sparse._linalg import SINGULAR_PIVOT, regular_pivots

    problem, data, U = instance
    rng = np.random.default_rng(1)
    X = data.X.copy()
    X[:, :, 5] = X[:, :, 4] + gap * rng.standard_normal(X[:, :, 4].shape)
    S0 = np.sort(np.argsort(rng.random((problem.t, problem.d)), axis=1)[:, :3], axis=1)
    S0[:100, :2] = 4, 5  # a third of the users start on both columns
    S0[:100, 2] = np.where(S0[:100, 2] < 6, 6, S0[:100, 2])
    fits = [ls.local_step(X, data.y, U, 3, support_init=S0, n_starts=0, restart_above=None,
                          backend=b) for b in ("numba", "numpy")]
    assert_same_fit(*fits)
    assert np.abs(fits[0].values).max() < 100.0

    # the pivot test itself, against the kernel's, on Gram matrices of [A_i, x_4, x_5 + s]
    # with s straddling the threshold
    cholesky = njit(lambda G, L, m: _cholesky(G, L, m, 1e-12))
    M = np.concatenate([X[:40] @ U, X[:40, :, 4:6]], axis=2)
    M[:, :, -1] = M[:, :, -2] + (np.geomspace(1e-7, 1e-5, 40)[:, None]
                                 * rng.standard_normal((40, M.shape[1])))
    G = M.transpose(0, 2, 1) @ M
    expected = [cholesky(g, np.zeros_like(g), g.shape[0]) for g in G]
    np.testing.assert_array_equal(regular_pivots(G, SINGULAR_PIVOT), expected)
    assert 5 < np.sum(expected) < 35
    # one user not positive definite changes no other user's verdict
    G[0, -1, :] = G[0, :, -1] = 0.0
    expected[0] = False
    np.testing.assert_array_equal(regular_pivots(G, SINGULAR_PIVOT), expected)


def test_refit_grown_by_one_column_is_bit_for_bit_the_refit_from_scratch():
    # The greedy start's refits: _refit(..., grown=True) extends the last refit's
    # normal equations and Cholesky factor by one column; coefficients, residual and whether G had a
    # factor must be those of _refit from scratch, bit for bit, also once a column
    # makes G singular (the pseudo-inverse from then on) and after a vanishing column.
    from numba import njit

    from lowrank_sparse import _kernels as K

    @njit
    def refits(Xi, yi, Ut, S, grown):
        n, d, r, k = Xi.shape[0], Xi.shape[1], Ut.shape[0], S.shape[0]
        w = K._work(n, d, r, k, 1)
        w.L[:, :] = 0.5  # stale numbers, as a previous user leaves them
        K._lowrank_features(Xi, Ut, w)
        K._prepare(w, yi)
        for c in range(k):
            w.S[c] = S[c]
        out = np.full((k, r + k + n + 2), np.nan)
        for m in range(1, k + 1):
            res_sq = K._refit(Xi, yi, w, m, grown and m > 1)
            out[m - 1, :r + m] = w.coef[:r + m]
            out[m - 1, r + k:r + k + n] = w.res
            out[m - 1, -2], out[m - 1, -1] = res_sq, w.factored
        return out

    rng = np.random.default_rng(8)
    n, d, r, k = 16, 12, 3, 6
    S = np.array([4, 0, 9, 2, 7, 11])
    cases = {"regular": (rng.standard_normal((n, d)), S, [True] * 6)}
    duplicated = cases["regular"][0].copy()
    duplicated[:, 9] = duplicated[:, 4]  # G singular from the third column on
    cases["duplicated"] = (duplicated, S, [True, True] + [False] * 4)
    vanishing = cases["regular"][0].copy()
    vanishing[:, 2] = 0.0  # from the fourth
    cases["vanishing"] = (vanishing, S, [True] * 3 + [False] * 3)
    # long enough for LLVM to vectorize the reductions (r + k = 50)
    cases["large"] = (rng.standard_normal((80, 120)), rng.permutation(120)[:40], [True] * 40)
    for name, (Xi, S, factored) in cases.items():
        r = 10 if name == "large" else 3
        U = np.linalg.qr(rng.standard_normal((Xi.shape[1], r)))[0]
        yi = Xi @ (U @ rng.standard_normal(r)) + rng.standard_normal(Xi.shape[0])
        scratch = refits(Xi, yi, U.T.copy(), S, False)
        grown = refits(Xi, yi, U.T.copy(), S, True)
        np.testing.assert_array_equal(grown, scratch, err_msg=name)
        np.testing.assert_array_equal(scratch[:, -1].astype(bool), factored, err_msg=name)


def test_fixed_point_test_agrees_with_the_top_k():
    # HTP's fixed-point test _is_top_k(score, S) must say whether S is the k largest
    # scores, first index on ties (a stable argsort), on scores full of ties and
    # infinities; half the supports are the top k, half random.
    from numba import njit

    from lowrank_sparse._kernels import _is_top_k

    is_top_k = njit(lambda score, S, k: _is_top_k(score, S, k))
    rng = np.random.default_rng(5)
    answers = []
    for _ in range(3000):
        d = int(rng.integers(1, 25))
        k = int(rng.integers(1, d + 1))
        score = rng.choice([0.0, 1.0, 2.0, 3.0, np.inf], size=d)
        top = np.sort(np.argsort(-score, kind="stable")[:k])
        S = top if rng.random() < 0.5 else np.sort(rng.choice(d, k, replace=False))
        expected = bool(np.array_equal(S, top))
        assert is_top_k(score, S.astype(np.intp), k) == expected, (score, S)
        answers.append(expected)
    assert 0.2 < np.mean(answers) < 0.9


def _refits_at(problem, data, U, supports):
    """Per user, for each support in ``supports``: the refit on [A_i, X_i[:, S]] (coef,
    residual e, ||e||^2), g = X_i^T e, and HTP's exact step from there (line search along
    the k largest |g|, off range(A_i))."""
    from lowrank_sparse.local import refit

    A = data.X @ U
    Q = np.linalg.qr(A)[0]
    for S in supports:
        S = np.sort(S, axis=1)
        coef, e = refit(data.X, data.y, A, S)
        g = np.einsum("tnd,tn->td", data.X, e)
        k = S.shape[1]
        T = np.argsort(-np.abs(g), axis=1, kind="stable")[:, :k]
        gT = np.take_along_axis(g, T, axis=1)
        v = np.einsum("tnk,tk->tn", np.take_along_axis(data.X, T[:, None, :], axis=2), gT)
        Pv = v - np.einsum("tnr,tr->tn", Q, np.einsum("tnr,tn->tr", Q, v))
        eta = np.sum(gT ** 2, axis=1) / np.sum(Pv ** 2, axis=1)
        yield S, coef, np.sum(e ** 2, axis=1), g, eta


@pytest.mark.parametrize("x_scale", [0.1, 1.0, 10.0])
def test_step_cap_bounds_htp_step_and_certifies_fixed_points(x_scale):
    # _step_cap's cap on HTP's step never binds where the residual is not at rounding
    # level (eta <= cap, the kernel's cap equal to the numpy reference's), and a support
    # that _surely_fixed_point certifies is the top k of |b + eta g| for every step
    # eta up to the cap (so for the one HTP computes), on supports that are true, one
    # entry off, or random, at a perturbed U; it certifies most steady-state supports.
    # At three scales of X (the step scales as 1 / scale^2, g as scale).
    from numba import njit

    from lowrank_sparse._kernels import _step_cap, _surely_fixed_point
    from lowrank_sparse.local import _step_cap as reference_cap

    cap_of = njit(lambda g, k, res_sq: _step_cap(g, k, res_sq, 1e-6, 1e-290))
    certified = njit(lambda g, coef, S, k, r, cap, g_max:
                     _surely_fixed_point(g, coef, S, k, r, cap, g_max, 1e-290))
    r, k, d = 3, 3, 40
    problem, data = make_instance(d=d, t=400, r=r, k=k, n=20, noise=0.01, seed=23)
    data = dataclasses.replace(data, X=data.X * x_scale)
    rng = np.random.default_rng(2)
    true = np.argsort(-np.abs(problem.B), axis=1)[:, :k]
    one_off = true.copy()
    for row in one_off:
        row[0] = rng.choice(np.setdiff1d(np.arange(d), row))
    random = np.argsort(rng.random((problem.t, d)), axis=1)[:, :k]
    U_near = np.linalg.qr(problem.U + 0.02 * rng.standard_normal(problem.U.shape))[0]
    fired = {}
    for label, U in (("true U", problem.U), ("perturbed U", U_near)):
        refits = _refits_at(problem, data, U, (true, one_off, random))
        for name, (S, coef, res_sq, g, eta) in zip(("true", "one off", "random"), refits):
            caps = reference_cap(g, k, res_sq, np.ones(problem.t, dtype=bool))
            hits = []
            for i in range(problem.t):
                cap, g_max = cap_of(g[i], k, res_sq[i])
                np.testing.assert_allclose(cap, caps[i], rtol=1e-12)
                assert eta[i] <= cap, (label, name, i, eta[i], cap)
                hit = certified(g[i], coef[i], S[i], k, r, cap, g_max)
                if hit:
                    b = np.zeros(d)
                    b[S[i]] = coef[i, r:]
                    for step in np.append(np.linspace(0.0, cap, 33), eta[i]):
                        top = np.sort(np.argsort(-np.abs(b + step * g[i]), kind="stable")[:k])
                        np.testing.assert_array_equal(top, S[i],
                                                      err_msg=f"{label}, {name}, user {i}")
                hits.append(hit)
            fired[label, name] = np.mean(hits)
    assert fired["true U", "true"] > 0.9, fired
    assert fired["perturbed U", "random"] < 0.1, fired


def test_step_cap_only_where_its_numbers_have_full_precision_and_A_full_rank():
    # No cap (inf) from under- or overflowing numbers, in both backends; the numpy
    # backend's test of A_i's rank (R_cc^2 > 1e-12 ||a_c||^2) is the kernel's Cholesky
    # pivot test, on A_i of full rank and with a duplicated or a vanishing column.
    from numba import njit

    from lowrank_sparse._kernels import _cholesky, _step_cap
    from lowrank_sparse.local import _full_rank
    from lowrank_sparse.local import _step_cap as reference_cap

    cap_of = njit(lambda g, k, res_sq: _step_cap(g, k, res_sq, 1e-6, 1e-290)[0])
    g = np.array([3.0, -1.0, 0.5, 2.0, 0.0, 1.0])
    for res_sq, g_scale, capped in ((2.0, 1.0, True), (1e-300, 1.0, False),
                                    (1.0, 1e-150, False), (1e-200, 1e100, False),
                                    (np.inf, 1.0, False), (np.nan, 1.0, False)):
        cap = cap_of(g * g_scale, 2, res_sq)
        reference = reference_cap((g * g_scale)[None], 2, np.array([res_sq]), np.array([True]))
        assert np.isfinite(cap) == capped and np.isfinite(reference[0]) == capped
        if capped:
            # the largest |g| of the blocks [0, 3) and [3, 6): 3 and 2
            np.testing.assert_allclose(cap, (1 + 1e-6) * res_sq / (3.0 ** 2 + 2.0 ** 2))
            np.testing.assert_allclose(reference[0], cap, rtol=1e-15)
    assert reference_cap(g[None], 2, np.array([2.0]), np.array([False]))[0] == np.inf

    cholesky = njit(lambda G, L, m: _cholesky(G, L, m, 1e-12))
    rng = np.random.default_rng(3)
    A = rng.standard_normal((3, 12, 3))
    A[1, :, 2] = A[1, :, 0]  # a duplicated column
    A[2, :, 1] = 0.0  # a vanishing one
    numpy_full_rank = _full_rank(A, np.linalg.qr(A)[1])
    kernel_full_rank = [cholesky(a.T @ a, np.zeros((3, 3)), 3) for a in A]
    np.testing.assert_array_equal(numpy_full_rank, [True, False, False])
    np.testing.assert_array_equal(kernel_full_rank, numpy_full_rank)


@pytest.mark.parametrize("slack", [-0.6, -0.9])
def test_htp_steps_clamped_at_any_cap_agree_between_backends(instance, monkeypatch, slack):
    # With the cap pulled below HTP's step (slack < 0: (1 + slack) times the bound), the
    # step both backends take is min(eta, cap): HTP from random supports then ends at the
    # same supports user by user. The kernel's certificate is sound only for steps up to
    # the cap, so this also checks that it never declares a fixed point that the full
    # test at the clamped step would not.
    from lowrank_sparse import _kernels, local

    problem, data, U = instance
    k = problem.k
    random = np.sort(np.argsort(np.random.default_rng(5).random((problem.t, problem.d)),
                                axis=1)[:, :k], axis=1)
    _, _, res_sq, g, eta = next(_refits_at(problem, data, U, [random]))
    binding = eta > local._step_cap(g, k, res_sq, np.ones(problem.t, dtype=bool)) * (1 + slack)
    assert binding.mean() > 0.5, binding.mean()  # the clamp decides most first steps

    default = ls.local_step(data.X, data.y, U, k, support_init=random, n_starts=0,
                            restart_above=None, backend="numpy")
    monkeypatch.setattr(local, "STEP_CAP_SLACK", slack)
    monkeypatch.setattr(_kernels, "LocalSettings",
                        functools.partial(_kernels.LocalSettings, step_cap_slack=slack))
    fits = [ls.local_step(data.X, data.y, U, k, support_init=random, n_starts=0,
                          restart_above=None, backend=b) for b in ("numba", "numpy")]
    assert_same_fit(*fits)
    # the cap changed the path of many users
    assert np.mean(np.any(default.support != fits[1].support, axis=1)) > 0.2


def test_top_k_is_a_stable_argsort():
    # _top_k: the k largest scores, first index on ties (a stable argsort), with their
    # scores descending in best, on scores full of ties and infinities; the scores are
    # left as they were.
    from numba import njit

    from lowrank_sparse._kernels import _top_k

    top_k = njit(lambda score, k, S, best: _top_k(score, k, S, best))
    rng = np.random.default_rng(6)
    for trial in range(3000):
        d = int(rng.integers(1, 25))
        k = int(rng.integers(1, d + 1))
        values = [0.0, 1.0, 2.0, 3.0, np.inf] + ([-np.inf] if trial % 3 == 0 else [])
        score = rng.choice(values, size=d)
        before = score.copy()
        S, best = np.full(k, -1, dtype=np.intp), np.empty(k)
        top_k(score, k, S, best)
        order = np.argsort(-score, kind="stable")[:k]
        np.testing.assert_array_equal(S, np.sort(order), err_msg=str(score))
        np.testing.assert_array_equal(best, score[order])
        np.testing.assert_array_equal(score, before)


def test_small_work_runs_on_the_calling_thread_only(monkeypatch):
    # Below PARALLEL_MIN_ENTRIES entries of X no other thread is woken; at or above it
    # the tasks are shared by numba's threads (results are the same either way).
    import threading

    import numba

    from lowrank_sparse import _kernels, _linalg

    if numba.get_num_threads() < 2:
        pytest.skip("needs NUMBA_NUM_THREADS >= 2")
    seen = set()
    record = lambda first, stride: seen.add(threading.get_ident())
    _kernels._on_threads(record, 8, _linalg.PARALLEL_MIN_ENTRIES - 1)
    assert seen == {threading.get_ident()}
    seen.clear()
    _kernels._on_threads(record, 8, _linalg.PARALLEL_MIN_ENTRIES)
    assert len(seen) == min(numba.get_num_threads(), 8)


def test_prefetch_sends_the_next_users_lines_once_in_parts():
    # The local step prefetches user users[u + 1]'s X_i while it fits users[u]: every
    # cache line of it (X_i may start mid-line), each once, in PREFETCH_PARTS calls; and
    # nothing after the last user of a task.
    from numba import njit

    from lowrank_sparse import _kernels

    @njit
    def plan(X, users, u, stop, calls):
        w = _kernels._work(X.shape[1], X.shape[2], 2, 2, 0)
        _kernels._aim_ahead(w, X, users, u, stop)
        sent = np.empty(calls + 1, dtype=np.intp)
        sent[0] = w.ahead_sent
        for c in range(calls):
            _kernels._prefetch_ahead(w)
            sent[c + 1] = w.ahead_sent
        return w.ahead, w.ahead_lines, sent

    t, n, d = 4, 20, 100
    X = np.zeros(t * n * d + 1)[1:].reshape(t, n, d)  # starts 8 bytes into a line
    users = np.array([2, 0, 3, 1])
    parts = _kernels.PREFETCH_PARTS
    first, lines, sent = plan(X, users, 2, 4, parts + 1)
    start = X[3].ctypes.data
    end = start + X[3].nbytes
    assert first % 64 == 0 and first <= start < first + 64
    assert first + 64 * (lines - 1) < end <= first + 64 * lines
    assert sent[0] == 0 and sent[parts] == lines == sent[parts + 1]
    assert np.all(np.diff(sent[:parts]) > 0)  # every call sends a part
    _, none, sent = plan(X, users, 4, 4, 2)
    assert none == 0 and not sent.any()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_one_pass_reads_every_user_once(dtype):
    # timing.one_pass_seconds times read_pass: every entry of X, each once (a last,
    # partial block of users included).
    from lowrank_sparse import _kernels, timing

    t = 2 * _kernels.BLOCK + 3
    X = np.random.default_rng(0).standard_normal((t, 4, 5)).astype(dtype)
    X[-1] += 1000.0  # the last user's entries stand out in the sum
    assert _kernels.read_pass(X) == pytest.approx(X.sum(dtype=np.float64), rel=1e-12)
    assert timing.one_pass_seconds(X, repeats=2) > 0.0


def test_one_pass_on_threads_reads_every_block_once():
    # Each thread takes its own blocks of users: none left out, none read twice.
    import numba

    from lowrank_sparse import _kernels, _linalg

    if numba.get_num_threads() < 2:
        pytest.skip("needs NUMBA_NUM_THREADS >= 2")
    rng = np.random.default_rng(1)
    X = rng.random((_linalg.PARALLEL_MIN_ENTRIES // 20 + 7, 4, 5))  # enough for threads
    assert _kernels.read_pass(X) == pytest.approx(X.sum(), rel=1e-12)

