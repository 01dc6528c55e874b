"""AMHT-LRS: alternating minimization with hard thresholding for low-rank plus sparse users."""

from __future__ import annotations

import functools
import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np

from ._linalg import default_chunk_size, users_per_block, worth_threads
from ._validation import (check_int, check_positive, check_rank_sparsity, check_subspace,
                          check_xy, in_unit_scale)
from .alternating import ConvergenceWarning, FitResult, alternate
from .global_step import solve_cg, solve_direct
from .local import check_backend, single_threaded_blas
from .robust import check_robust, default_rule

logger = logging.getLogger(__name__)

#: Iterations of plain alternating minimization (sparsity 0) that refine a computed
#: initial subspace before the sparse parts are fitted. With random supports the b_i act
#: as isotropic noise on the low-rank fit, whose fixed point is therefore near U*, while
#: the first sparse fits are biased (wrong supports absorb the error of U). Measured,
#: noiseless r=k=2, default robust step: d=25, n=8, t=375; d=50, n=9, t=667; d=50, n=8,
#: t=4000 (the true U fits 49%, 53%, 37% of users) stall at distance 0.33, 0.47, 0.13
#: from the moment initialization alone and are exact after it (72, 57, 44 iterations).
#: Three iterations reach the low-rank fit's own floor (0.1-0.2 there).
LOWRANK_WARMUP_ITERATIONS = 3


@dataclass(frozen=True)
class History:
    """Per outer iteration of AMHT-LRS: the sine of the largest angle between
    consecutive U (``subspace_change``), the mean squared training residual after the
    local step (``train_loss``, in the units of y squared), the number of users the
    robust U step down-weighted (``n_downweighted``), the CG iterations of the U step and
    whether CG reached its tolerance (``cg_converged``; always True for the direct
    solver), and the wall time so far."""

    subspace_change: np.ndarray
    train_loss: np.ndarray
    n_downweighted: np.ndarray
    cg_iterations: np.ndarray
    cg_converged: np.ndarray
    seconds: np.ndarray


def moment_init(X, y, rank, *, chunk_size=None) -> np.ndarray:
    """Method-of-moments initialization: top-``rank`` eigenvectors of
    M = (1 / (t n)) sum_ij y_ij^2 x_ij x_ij^T.

    For Gaussian x, E[y^2 x x^T] = ||theta||^2 I + 2 theta theta^T, so the top
    eigenvectors of M estimate the span of the users' parameters; with random sparse
    supports the sparse parts add a nearly isotropic term that does not move them.

    X: (t, n, d), y: (t, n). Returns U0 (d, rank) with orthonormal columns.
    """
    X, y = check_xy(X, y, keep_float32=True)
    t, n, d = X.shape
    rank = check_int("rank", rank, low=1, high=d, high_inclusive=False)
    M = second_moment(X, y, chunk_size=chunk_size)
    return top_eigenvectors(M, rank)


#: Users per block of :func:`scatter_matrix` (and of the private fit's per-user moment
#: norms) are set so that the block's float64 rows |y_ij| x_ij take about this many
#: floats (1 MB): they stay in cache for the product that reads them back.
MOMENT_BLOCK_FLOATS = 1 << 17
#: The blocks of :func:`scatter_matrix` are summed into at most this many floats of
#: partial (d, d) sums (32 MB), one per task.
MOMENT_PARTIAL_FLOATS = 1 << 22


def second_moment(X, y, *, chunk_size=None) -> np.ndarray:
    """(d, d) (1 / (t n)) sum_ij y_ij^2 x_ij x_ij^T, in one read of X
    (:func:`scatter_matrix`). X: (t, n, d) float32 or float64, y: (t, n)."""
    t, n, _ = X.shape
    return scatter_matrix(X, y, chunk_size=chunk_size) / (t * n)


def scatter_matrix(X, c, *, chunk_size=None) -> np.ndarray:
    """(d, d) sum_ij c_ij^2 x_ij x_ij^T, in one read of X.

    Per block of users, Z^T Z with Z the rows |c_ij| x_ij in float64 (whatever X's
    storage): a symmetric rank-k update (numpy's matmul calls BLAS syrk for Z^T Z, half
    the flops of a product) while Z is in cache. The blocks are summed into a number of
    partial sums set by (t, n, d) alone, which run as tasks on numba's threads
    (``numba.get_num_threads()``), each calling BLAS on one thread, and are added in
    order: the result does not depend on the number of threads. (One product over
    256 MB chunks on OpenBLAS's own threads, whose workers spin between calls, took
    83-121 s = 125-182 passes over X at t=1e5, n=40, d=100, float32 X on the 2-core
    machine at load 4-5; this takes 3.4-4.5 s = 5-7 passes there.) ``chunk_size``
    bounds the users per block.
    X: (t, n, d) float32 or float64, c: (t, n).
    """
    from ._kernels import _on_threads

    t, n, d = X.shape
    block = users_per_block(n * d, chunk_size, MOMENT_BLOCK_FLOATS)
    n_blocks = -(-t // block)
    n_parts = max(1, min(n_blocks, MOMENT_PARTIAL_FLOATS // (d * d)))
    # Part p sums the blocks [p n_blocks / n_parts, (p + 1) n_blocks / n_parts).
    bounds = [(p * n_blocks // n_parts) * block for p in range(n_parts)] + [t]
    partial = np.zeros((n_parts, d, d))
    abs_c = np.abs(c)

    def sum_parts(first, stride):
        rows = np.empty((block, n, d))
        for p in range(first, n_parts, stride):
            for lo in range(bounds[p], bounds[p + 1], block):
                hi = min(lo + block, bounds[p + 1])
                Z = np.multiply(X[lo:hi], abs_c[lo:hi, :, None],
                                out=rows[:hi - lo]).reshape(-1, d)
                partial[p] += Z.T @ Z

    with single_threaded_blas(True):
        _on_threads(sum_parts, n_parts, X.size)
    return partial.sum(axis=0)


def top_eigenvectors(M, rank) -> np.ndarray:
    """(d, rank) eigenvectors of the symmetric M for its ``rank`` largest eigenvalues."""
    d = M.shape[0]
    _, vecs = np.linalg.eigh((M + M.T) / 2)
    return vecs[:, d - rank:][:, ::-1].copy()


def amht_lrs(X, y, rank, sparsity, *, n_iter=100, tol=1e-10, init="moments",
             fresh_samples=False, robust="auto", n_starts=1, htp_iter=20,
             solver="cg", chunk_size=None, backend="numba", callback=None,
             rng=None) -> FitResult:
    """Fit theta_i = U w_i + b_i by alternating minimization and hard thresholding.

    Parameters
    ----------
    X : (t, n, d) array
        Features of t users, n samples each; float32 is kept as given (half the memory,
        every product and sum still float64; when that is accurate enough: the
        ``dtype`` option of :func:`lowrank_sparse.sample_data`), anything else becomes
        float64.
    y : (t, n) array
        Responses.
    rank : int
        r, the dimension of the shared subspace, 1 <= r < d.
    sparsity : int
        k, the non-zeros allowed in each b_i, 0 <= k <= d; 0 is plain alternating
        minimization for a shared subspace (AltMin / FedRep with linear heads).
    n_iter : int, default 100
        Maximum outer iterations (local step + global step).
    tol : float, default 1e-10
        Stop when the sine of the largest angle between consecutive U is below tol.
    init : "moments", "random" or (d, r) array, default "moments"
        Initial subspace: method of moments (:func:`moment_init`), a random orthonormal
        U (from ``rng``), or a given U. The first two are refined by
        ``LOWRANK_WARMUP_ITERATIONS`` (3) iterations with sparsity 0 when sparsity > 0
        (not with ``fresh_samples``); a given U is used as is.
    fresh_samples : bool, default False
        Split each user's samples into ``n_iter`` disjoint batches, one per iteration
        (the sample splitting the theory assumes); the final local step uses all
        samples. Needs n // n_iter >= rank + sparsity. The default ``robust`` rule
        contracts slower per iteration here than ``Huber()`` when every user is well
        fitted (d=20, t=300, r=2, k=1, 20 samples per iteration: distance 7e-6 after 20
        iterations, Huber 1e-11 in 16).
    robust : "auto", Adaptive, Huber, Trimmed or None, default "auto"
        Weighting of users in the U step (:mod:`lowrank_sparse.robust`, see Notes);
        None gives the plain least-squares U step. "auto": ``Adaptive()`` below about
        3 (r + k ln(d/k)) samples per user (per iteration with ``fresh_samples``),
        ``Huber()`` above (:func:`lowrank_sparse.robust.default_rule`).
    n_starts : int, default 1
        Greedy starts of the local step besides the warm start (see :func:`local_step`).
    htp_iter : int, default 20
        Maximum HTP iterations per local step.
    solver : "cg" or "direct", default "cg"
        U-step solver (see :mod:`lowrank_sparse.global_step`).
    chunk_size : int, optional
        Users per block in every pass over X of the numpy backend; bounds memory,
        results are the same to rounding.
    backend : "numba" or "numpy", default "numba"
        "numba": the local step and the CG U step run as compiled loops over users that
        read each X_i once per pass (:mod:`lowrank_sparse._kernels`); "numpy": the
        batched reference. Results agree to rounding.
    callback : callable(iteration, U), optional
        Called after each global step, e.g. to trace the distance to a known U*.
        Progress (per phase and per outer iteration: wall time, share of users
        restarted, change of U, CG iterations) is logged at INFO on the ``lowrank_sparse``
        logger, silent unless enabled, e.g. ``logging.basicConfig(level=logging.INFO)``.
    rng : None, int or Generator
        Only used by ``init="random"``.

    Returns
    -------
    FitResult

    Notes
    -----
    Each outer iteration solves

    1. local step, every user independently, U fixed:
       (w_i, b_i) = argmin ||y_i - X_i U w - X_i b||^2 s.t. ||b||_0 <= k, by hard
       thresholding pursuit (:func:`lowrank_sparse.local.local_step`);
    2. global step, (w_i, b_i) fixed:
       U = argmin_U sum_i omega_i ||y_i - X_i b_i - X_i U w_i||^2,
       then U = QR and the triangular factor is folded into W.

    **Robust U step.** Near the sample-complexity threshold some users land on a wrong
    support; a least-squares U step spreads their O(1) error over every user and,
    noiseless, stalls at a distance that grows with their fraction (d=50, t=400, r=k=2,
    n=14: distance 2e-2 with 0.5% of users recovered). Users are therefore weighted by
    their residual after the local step (:mod:`lowrank_sparse.robust`). The default
    ``Adaptive()`` keeps the cluster of well-fitted users whatever its share and drops
    the rest, so U is exact and the users recovered follow the local step's own floor
    (the local step with the true U) from 100% down to about 10% of users well fitted,
    given about 22 d r samples of well-fitted users: d=50, r=k=2, n=8, t=4000 (35-38%
    fitted with the true U; 3 seeds): distance 1e-10, 36-41% recovered, where
    ``Huber()`` (bounding each user's influence at 3x the median residual, the former
    default) stalls at 0.05-0.07 with nobody recovered, its median user being
    mis-fitted; the n_50 of the dimension sweep is within 0.95-1.00x the per-user floor's
    at d = 25..200.
    See the class docstrings for the measurements and the benchmark
    ``benchmarks/bench_robust.py`` for the sweep over d and n.

    References
    ----------
    Pal et al., "Sample-Efficient Personalization: Modeling User Parameters as Low Rank
    Plus Sparse Components", AISTATS 2024. Foucart, "Hard thresholding pursuit", SIAM J.
    Numer. Anal. 2011. Huber, "Robust Statistics", 1981.
    """
    start = time.perf_counter()
    X, y = check_xy(X, y, keep_float32=True)
    t, n, d = X.shape
    rank, sparsity = check_rank_sparsity(rank, sparsity, d, n, t)
    n_iter = check_int("n_iter", n_iter, low=1)
    htp_iter = check_int("htp_iter", htp_iter, low=1)
    n_starts = check_int("n_starts", n_starts, low=1)
    tol = check_positive("tol", tol, allow_zero=True)
    robust = check_robust(robust)
    backend = check_backend(backend)
    if solver not in ("cg", "direct"):
        raise ValueError(f"solver must be 'cg' or 'direct'; got {solver!r}")
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, low=1)
    chunk_size = chunk_size or default_chunk_size(n, d)
    small = not worth_threads(X.size)  # one BLAS thread (PARALLEL_MIN_ENTRIES)
    # The set-up's passes over X run on numba's threads or are memory-bound: OpenBLAS's
    # own threads would only spin against them.
    with single_threaded_blas(True):
        # Fit in units where X and y are O(1): dividing by powers of two is exact, and the
        # algorithm is scale-equivariant, so fit(a X, b y) gives theta b / a.
        X, y, x_scale, y_scale = in_unit_scale(X, y)
        batches = _sample_batches(n, n_iter, rank + sparsity) if fresh_samples else None
        if isinstance(robust, str):  # "auto"
            n_batch = n if batches is None else batches[0].stop - batches[0].start
            robust = default_rule(n_batch, d, rank, sparsity)
        logger.info("AMHT-LRS: t=%d users, n=%d, d=%d, X %s (%.2f GiB), r=%d, k=%d, U step "
                    "%s; data checked and scaled in %.1f s", t, n, d, X.dtype, X.nbytes / 2**30,
                    rank, sparsity, "least squares" if robust is None else type(robust).__name__,
                    time.perf_counter() - start)
        phase = time.perf_counter()
        U = _initial_subspace(init, X, y, rank, chunk_size, rng)
        col_sq = np.einsum("tnd,tnd->t", X, X, dtype=np.float64) if batches is None else None
        logger.info("AMHT-LRS: initial subspace (%s) in %.1f s",
                    init if isinstance(init, str) else "given", time.perf_counter() - phase)
    unit = y_scale / x_scale

    def least_squares_step(U, Xb, fit, changes, rule=robust, k=sparsity):
        """The U step, users weighted by ``rule`` (None: plain least squares) after a
        local step with sparsity k (module docstring of :mod:`.global_step`)."""
        omega = (np.ones(t) if rule is None
                 else rule.weights(fit.residual, Xb.shape[1] - rank - k, k / d))
        if solver == "cg":
            # The residual of the normal equations at the current U comes from the local
            # fit's per-user correlations X_i^T e_i (computed while X_i was in cache).
            residual0 = _weighted_correlations(fit, omega)
            # Inexact alternating minimization: solve the U step only as accurately as
            # the last change of U warrants; the error is contracted by the next steps,
            # and near the fixed point the warm start makes the solve nearly free.
            cg_tol = min(1e-3, max(1e-14, 1e-1 * (changes[-1] if changes else 1.0)))
            U_new, n_cg, cg_converged = solve_cg(
                Xb, fit.W, omega, U, residual0=residual0, chunk_size=chunk_size,
                col_sq=col_sq, tol=cg_tol, backend=backend)
        else:
            Z = fit.residual_vectors + fit.lowrank_predictions  # y_i - X_i b_i
            U_new = solve_direct(Xb, Z, fit.W, omega, chunk_size=chunk_size)
            n_cg, cg_converged = 0, True
        return U_new, {"n_downweighted": int(np.sum(omega < 1)), "cg_iterations": n_cg,
                       "cg_converged": cg_converged}

    # (The dense U solve is BLAS work: it keeps BLAS threads unless the fit is small.)
    loop = dict(cross_user_restarts=True, n_starts=n_starts, htp_iter=htp_iter,
                chunk_size=chunk_size, backend=backend,
                blas_single_threaded=small or (backend == "numba" and solver == "cg"))
    if (isinstance(init, str) and sparsity > 0 and not fresh_samples
            and LOWRANK_WARMUP_ITERATIONS):
        warmup = functools.partial(least_squares_step, rule=None, k=0)
        U = alternate(X, y, U, 0, warmup, n_iter=LOWRANK_WARMUP_ITERATIONS, tol=tol,
                      final_step=False, name="AMHT-LRS low-rank warm-up", **loop).U
    run = alternate(X, y, U, sparsity, least_squares_step, n_iter=n_iter, tol=tol,
                    batches=batches, callback=callback, name="AMHT-LRS", **loop)
    logger.info("AMHT-LRS: %s after %d iterations, %.1f s in all",
                "converged" if run.converged else "not converged", len(run.changes),
                time.perf_counter() - start)
    history = History(subspace_change=run.changes, train_loss=run.train_loss * y_scale ** 2,
                      n_downweighted=np.array([s["n_downweighted"] for s in run.steps]),
                      cg_iterations=np.array([s["cg_iterations"] for s in run.steps]),
                      cg_converged=np.array([s["cg_converged"] for s in run.steps]),
                      seconds=run.seconds)
    _warn_if_not_converged(history, run.converged, n_iter, tol)
    return FitResult(U=run.U, W=run.final.W * unit, B=run.final.sparse(d) * unit,
                     history=history, n_iter=len(run.changes), converged=run.converged)


def _weighted_correlations(fit, omega):
    """(d, r) sum_i omega_i (X_i^T e_i) w_i^T from a local fit's per-user correlations,
    summed over the users with omega_i != 0 only when the rule drops some: below the
    sample-complexity threshold Trimmed and Adaptive keep few users, and the product over
    all of them read the (t, d) correlations (0.15 passes over X of a steady-state
    iteration at t=1e5, d=100, n=20, r=k=5, where ~10% are kept; 0.03 this way)."""
    kept = np.flatnonzero(omega)
    if kept.size == omega.size:
        return fit.residual_correlations.T @ (omega[:, None] * fit.W)
    weighted_W = omega[kept, None] * np.take(fit.W, kept, axis=0)
    return (weighted_W.T @ np.take(fit.residual_correlations, kept, axis=0)).T


def _warn_if_not_converged(history, converged, n_iter, tol):
    """A ConvergenceWarning when the outer loop ran out of iterations, or when the U
    step's conjugate gradients stopped short of their tolerance."""
    if not converged:
        warnings.warn(
            f"AMHT-LRS did not converge in n_iter={n_iter} iterations: the last change of U "
            f"was {history.subspace_change[-1]:.3g} > tol={tol:.3g}; increase n_iter, or, "
            "below the sample-complexity threshold, expect no convergence",
            ConvergenceWarning, stacklevel=3)
    if not history.cg_converged.all():
        bad = np.flatnonzero(~history.cg_converged) + 1
        warnings.warn(
            f"the U step's conjugate gradients stopped before their tolerance in "
            f"iteration(s) {bad.tolist()} (iteration cap or a singular normal operator, "
            "e.g. users whose features are all zero)", ConvergenceWarning, stacklevel=3)


def _sample_batches(n, n_iter, need):
    size = n // n_iter
    if size < max(need, 1):
        raise ValueError(
            f"fresh_samples needs n // n_iter >= rank + sparsity = {need} samples per batch; "
            f"got n = {n}, n_iter = {n_iter} (batch of {size})")
    return [slice(i * size, (i + 1) * size) for i in range(n_iter)]


def _initial_subspace(init, X, y, rank, chunk_size, rng):
    d = X.shape[2]
    if isinstance(init, str):
        if init == "moments":
            return top_eigenvectors(second_moment(X, y, chunk_size=chunk_size), rank)
        if init == "random":
            return np.linalg.qr(np.random.default_rng(rng).standard_normal((d, rank)))[0]
        raise ValueError(f"init must be 'moments', 'random' or a (d, r) array; got {init!r}")
    U0 = check_subspace("init", init, d, rank)
    return np.linalg.qr(U0)[0]
