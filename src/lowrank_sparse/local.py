"""The local step: every user's (w_i, b_i) given a shared subspace U, for all users at once.

For user i with data X_i (n, d), y_i (n) and A_i = X_i U (n, r), the local step solves

    minimize_{w, b}  ||y_i - A_i w - X_i b||^2   subject to  ||b||_0 <= k

by hard thresholding pursuit (HTP, Foucart 2011) on b with w eliminated by least
squares: a gradient step on b along X_i^T P_i (y_i - X_i b), where P_i projects onto the
orthogonal complement of range(A_i); keep the k largest entries; refit (w, b) by least
squares on the chosen support. The step size is an exact line search along the k
largest entries of the gradient (as in normalized IHT, Blumensath and Davies 2010; after
the refit the gradient vanishes on the current support, so the search direction is the
best k-sparse one off it), so it needs no tuning and does not depend on the data scale;
it is capped at a bound that it never exceeds in exact arithmetic (:func:`_step_cap`), so
the compiled backend can certify most fixed points without the search.
HTP is started from greedy (orthogonal matching pursuit) supports and from the previous
outer iteration's supports; each user keeps the start with the smallest residual.

Two backends with the same arithmetic: "numba" (the default) fits each user in one
compiled loop over users (:mod:`lowrank_sparse._kernels`); "numpy" (:func:`_solve_block`,
the reference) gives every operation a leading user axis and processes users in chunks
only to bound the memory of temporaries.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass, field, fields

import numpy as np

from ._linalg import (SINGULAR_PIVOT, batched_solve, correlations, default_chunk_size,
                      gather_columns, project_features, storage, user_chunks)


@dataclass(frozen=True)
class LocalFit:
    """Per-user fit. W: (t, r); support, values: (t, k); residual: (t,) squared norm;
    and what the U step needs, so it need not recompute it with passes over X:
    residual_vectors (t, n) e_i = y_i - X_i U w_i - X_i b_i, lowrank_predictions (t, n)
    X_i U w_i and residual_correlations (t, d) X_i^T e_i."""

    W: np.ndarray
    support: np.ndarray
    values: np.ndarray
    residual: np.ndarray
    residual_vectors: np.ndarray
    lowrank_predictions: np.ndarray
    residual_correlations: np.ndarray
    n_restarted: int = 0
    # The arrays behind the fields (coef, residual, vectors, A w, X^T e), for reuse by
    # the next local step (local_step's ``out``).
    _buffers: tuple = field(default=(), repr=False, compare=False)

    def users(self, index) -> "LocalFit":
        """The fit of the users ``index`` (a slice or index array)."""
        return LocalFit(**{f.name: getattr(self, f.name)[index] for f in fields(self)
                           if isinstance(getattr(self, f.name), np.ndarray)})

    def rescaled(self, x_scale: float, y_scale: float) -> "LocalFit":
        """The fit of (X x_scale, y y_scale) given this fit of (X, y): coefficients times
        y_scale / x_scale, residuals times y_scale (squared: y_scale^2), correlations
        X^T e times x_scale y_scale."""
        if x_scale == 1.0 and y_scale == 1.0:
            return self
        unit = y_scale / x_scale
        return LocalFit(W=self.W * unit, support=self.support, values=self.values * unit,
                        residual=self.residual * y_scale ** 2,
                        residual_vectors=self.residual_vectors * y_scale,
                        lowrank_predictions=self.lowrank_predictions * y_scale,
                        residual_correlations=self.residual_correlations * (x_scale * y_scale),
                        n_restarted=self.n_restarted)

    def sparse(self, d: int) -> np.ndarray:
        """(t, d) dense B with the fitted values on the fitted supports."""
        B = np.zeros((self.W.shape[0], d))
        if self.support.shape[1]:
            np.put_along_axis(B, self.support, self.values, axis=1)
        return B


def refit(X: np.ndarray, y: np.ndarray, A: np.ndarray, S: np.ndarray):
    """Least squares of y_i on [A_i, X_i[:, S_i]] for every user.

    X: (t, n, d), y: (t, n), A: (t, n, r), S: (t, k) int.
    Returns coef (t, r + k) and residual (t, n).
    """
    M = np.concatenate([A, gather_columns(X, S)], axis=2)  # (t, n, r + k)
    Mt = M.transpose(0, 2, 1)
    # singular as the kernels decide it, so both backends give collinear columns the
    # minimum-norm fit (an LU solve of such a system returns huge, cancelling values)
    coef = batched_solve(Mt @ M, (Mt @ y[..., None])[..., 0], SINGULAR_PIVOT)
    residual = y - (M @ coef[..., None])[..., 0]
    return coef, residual


def _project_out(Q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """P v = v - Q Q^T v for every user. Q: (t, n, r) orthonormal, v: (t, n)."""
    return v - (Q @ (Q.transpose(0, 2, 1) @ v[..., None]))[..., 0]


#: HTP's step is capped at (1 + STEP_CAP_SLACK) times a bound that exact arithmetic never
#: exceeds (:func:`_step_cap`); the slack is far above the rounding of the step of a
#: residual not at rounding level (~1e-13 relative).
STEP_CAP_SLACK = 1e-6
#: ... and only where ||e||^2, the bound's denominator and the bound are all above this
#: (far from subnormal numbers, whose rounding the slack does not cover).
CAP_FLOOR = 1e-290


def _step_cap(g: np.ndarray, k: int, res_sq: np.ndarray,
              full_rank: np.ndarray) -> np.ndarray:
    """(t,) an upper bound on HTP's step from the refit's residual e (res_sq = ||e||^2)
    and g = X_i^T e alone: ||e||^2 / lower times 1 + STEP_CAP_SLACK, lower the sum of the
    squares of the largest |g| in k disjoint blocks of the d entries. The residual is
    orthogonal to range(A_i), so by Cauchy-Schwarz the step ||g_T||^2 / ||P X_T g_T||^2
    is at most ||e||^2 / ||g_T||^2 <= ||e||^2 / lower (in exact arithmetic, for A_i of
    full rank and a refit solved exactly): capped there, it changes where rounding lifted
    it above that. (A refit whose Gram matrix is singular by the kernels' pivot rule
    gets the minimum-norm solution in both backends, whose residual is orthogonal to
    range(A_i) too.) inf (no cap) where A_i has
    not full numerical rank (``full_rank``, (t,) bool: P then projects off directions e
    need not be orthogonal to) or a number is below CAP_FLOOR. (Why, and what the
    compiled backend does with the cap: ``lowrank_sparse._kernels._step_cap``.)"""
    starts = np.arange(k) * g.shape[1] // k
    lower = np.sum(np.maximum.reduceat(np.abs(g), starts, axis=1) ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        cap = (1.0 + STEP_CAP_SLACK) * res_sq / lower
        valid = full_rank & (res_sq >= CAP_FLOOR) & (lower >= CAP_FLOOR) & (cap >= CAP_FLOOR)
    return np.where(valid, cap, np.inf)


def _full_rank(A: np.ndarray, R: np.ndarray) -> np.ndarray:
    """(t,) whether A_i has full numerical rank, as the compiled backend decides it
    (``_kernels._range_basis``): the Cholesky pivots of A^T A, R_cc^2 for A = Q R, above
    SINGULAR_PIVOT of its diagonal."""
    return np.all(np.diagonal(R, axis1=1, axis2=2) ** 2
                  > SINGULAR_PIVOT * np.einsum("tnr,tnr->tr", A, A), axis=1)


def _top_k(v: np.ndarray, k: int) -> np.ndarray:
    """(t, k) indices of the k largest |v| per row, sorted so supports compare equal."""
    idx = np.argpartition(-np.abs(v), k - 1, axis=1)[:, :k]
    return np.sort(idx, axis=1)


def _htp(X, y, A, Q, full_rank, k, S0, max_iter):
    """Hard thresholding pursuit from the supports S0 (t, k).

    Returns the best (lowest residual) support, coefficients (t, r + k), squared
    residual (t,) and residual vectors (t, n) seen per user, so a user whose iterates
    cycle keeps its best point.
    Only users whose support still changes are iterated on (an active set), so a few
    slow users do not make every user pay for their iterations.
    """
    r = A.shape[2]
    S = np.sort(S0, axis=1)
    coef, res = refit(X, y, A, S)
    best_S, best_coef, best_vec = S.copy(), coef.copy(), res.copy()
    best_res = np.einsum("tn,tn->t", res, res)
    res_sq = best_res.copy()
    active = None  # None: all users, as views; else the indices still moving
    Xa, ya, Aa, Qa, full_rank_a = X, y, A, Q, full_rank
    for _ in range(max_iter):
        t, n, d = Xa.shape
        b = np.zeros((t, d))
        np.put_along_axis(b, S, coef[:, r:], axis=1)
        g = correlations(Xa, res)  # (t, d) = X_i^T P_i residual
        # Line search along the k largest gradient entries. (The gradient vanishes on the
        # current support after the least-squares refit, so the step size of normalized
        # IHT, computed on that support, would be 0 / 0.)
        T = _top_k(g, k)
        gT = np.take_along_axis(g, T, axis=1)
        PXg = _project_out(Qa, np.einsum("tnk,tk->tn", gather_columns(Xa, T), gT))
        denom = np.einsum("tn,tn->t", PXg, PXg)
        eta = np.einsum("tk,tk->t", gT, gT) / np.where(denom > 0, denom, 1.0)
        cap = _step_cap(g, k, res_sq, full_rank_a)
        eta = np.where(eta > cap, cap, eta)
        S_new = _top_k(b + eta[:, None] * g, k)
        moving = np.any(S_new != S, axis=1)
        if not moving.any():
            break  # a fixed point of HTP for every user
        keep = np.nonzero(moving)[0]
        active = keep if active is None else active[keep]
        Xa, ya, Aa, Qa = X[active], y[active], A[active], Q[active]
        full_rank_a = full_rank[active]
        S = S_new[keep]
        coef, res = refit(Xa, ya, Aa, S)
        res_sq = np.einsum("tn,tn->t", res, res)
        better = res_sq < best_res[active]
        best_S[active[better]], best_coef[active[better]] = S[better], coef[better]
        best_res[active[better]], best_vec[active[better]] = res_sq[better], res[better]
    return best_S, best_coef, best_res, best_vec


def _projected_column_norms(X, Q):
    """(t, d) ||P_i x_ij|| for every column j of X_i: correlations are normalized by
    them, so a column that happens to lie near range(A_i) is not favoured."""
    QtX = Q.transpose(0, 2, 1) @ X  # (t, r, d)
    sq = np.einsum("tnd,tnd->td", X, X) - np.einsum("trd,trd->td", QtX, QtX)
    return np.sqrt(np.maximum(sq, 1e-300))


def _greedy(X, y, A, Q, k, first, colnorm):
    """Orthogonal matching pursuit started from the forced coordinates ``first`` (t,):
    add, one at a time, the column most correlated with the current residual
    (normalized by its projected norm), refitting (w, b) by least squares each time."""
    S = first[:, None]
    while True:
        coef, res = refit(X, y, A, S)
        if S.shape[1] == k:
            return np.sort(S, axis=1)
        score = np.abs(correlations(X, res)) / colnorm
        np.put_along_axis(score, S, -np.inf, axis=1)
        S = np.concatenate([S, np.argmax(score, axis=1)[:, None]], axis=1)


def _keep_better(best, candidate):
    """Per user, the fit (a tuple of per-user arrays whose third is the squared
    residual) with the smaller residual."""
    better = candidate[2] < best[2]
    for mine, theirs in zip(best, candidate):
        mine[better] = theirs[better]
    return best


def _solve_block(X, y, U, k, S0, n_starts, max_iter):
    """Best local fit of a block of users: HTP from the warm supports S0 (if given) and
    from ``n_starts`` greedy supports (if n_starts > 0). A = X U and its orthonormal
    basis are computed once for the block. Returns (support, coef, squared residual,
    residual vectors, low-rank predictions A w)."""
    X = X.astype(np.float64, copy=False)  # float32 storage: a float64 copy of the block
    t, n, d = X.shape
    A = project_features(X, U)  # (t, n, r)
    if k == 0:
        coef, res = refit(X, y, A, np.empty((t, 0), dtype=np.intp))
        best = np.empty((t, 0), dtype=np.intp), coef, np.einsum("tn,tn->t", res, res), res
        return *best, np.einsum("tnr,tr->tn", A, coef)
    Q, R = np.linalg.qr(A)  # (t, n, r) basis of range(A_i)
    full_rank = _full_rank(A, R)
    best = None if S0 is None else _htp(X, y, A, Q, full_rank, k, S0, max_iter)
    if n_starts:
        colnorm = _projected_column_norms(X, Q)
        score = np.abs(correlations(X, _project_out(Q, y))) / colnorm
        seeds = np.argsort(-score, axis=1, kind="stable")[:, :n_starts]
        for s in range(seeds.shape[1]):
            found = _htp(X, y, A, Q, full_rank, k, _greedy(X, y, A, Q, k, seeds[:, s], colnorm),
                         max_iter)
            best = found if best is None else _keep_better(best, found)
    return *best, np.einsum("tnr,tr->tn", A, best[1][:, :A.shape[2]])


def local_step(X, y, U, sparsity, *, support_init=None, n_starts=1, restart_above=2.0,
               max_iter=20, chunk_size=None, backend="numba", out=None) -> LocalFit:
    """Fit (w_i, b_i) for every user with U fixed.

    Parameters
    ----------
    X : (t, n, d) array
    y : (t, n) array
    U : (d, r) array, the shared subspace (orthonormal columns are not required).
    sparsity : int
        Non-zeros k allowed in each b_i; 0 gives plain least squares on X_i U.
    support_init : (t, k) int array, optional
        Warm start (the supports of the previous outer iteration).
    n_starts : int, default 1
        Greedy starts: HTP is started from the orthogonal-matching-pursuit supports
        seeded with each of the ``n_starts`` coordinates most correlated with the
        projected response (1 is plain OMP); each user keeps the start with the smallest
        residual. HTP from b = 0 fails often when n is near r + k; OMP seeds make the
        local step succeed with far fewer samples (noiseless, d=50, r=k=2 with U known:
        50% of users at n ~ 9 with one start, ~ 7 with four, against ~ 15 for HTP from
        b = 0).
    restart_above : float or None, default 2.0
        With a warm start, only users whose warm-started residual norm exceeds
        ``restart_above`` times the median residual norm are restarted from the greedy
        supports (the others are already at a good fixed point; this keeps an outer
        iteration close to the cost of a few passes over the data). None restarts all.
    max_iter : int, default 20
        Maximum HTP iterations per start; HTP stops earlier when no support changes.
    chunk_size : int, optional
        Users per block (memory bound) of the numpy backend; default from
        :func:`default_chunk_size`. The result does not depend on it beyond rounding.
    backend : "numba" or "numpy", default "numba"
        "numba" runs each user's whole fit in one compiled loop over users while X_i is
        in cache (:mod:`lowrank_sparse._kernels`; its memory is the outputs only);
        "numpy" is the batched reference it is tested against. Same arithmetic, results
        equal to rounding.
    out : LocalFit, optional
        A fit of the same shape that is no longer needed: its arrays receive this fit
        (saves allocating, and the OS zeroing, (r + k + 2 n + d) floats per user every
        outer iteration; the supports are always new arrays).

    Returns
    -------
    LocalFit
    """
    t, n, d = X.shape
    r, k = U.shape[1], sparsity
    check_backend(backend)
    # support, coef, residual, vectors e, A w, X^T e
    shapes = ((t, r + k), (t,), (t, n), (t, n), (t, d))
    reuse = out is not None and [b.shape for b in out._buffers] == list(shapes)
    fit = (np.empty((t, k), dtype=np.intp),
           *(out._buffers if reuse else (np.empty(shape) for shape in shapes)))
    # Restart only outliers: needs the warm fits of all users first (a global median).
    outliers_only = support_init is not None and restart_above is not None and k > 0
    if backend == "numba":
        restarted = _fit_compiled(X, y, U, k, support_init, n_starts, max_iter,
                                  restart_above if outliers_only else None, fit)
    else:
        restarted = _fit_batched(X, y, U, k, support_init, n_starts, max_iter,
                                 restart_above if outliers_only else None,
                                 chunk_size or default_chunk_size(n, d), fit)
    support, coef, residual, vectors, lowrank, corr_residual = fit
    return LocalFit(W=coef[:, :r], support=support, values=coef[:, r:], residual=residual,
                    residual_vectors=vectors, lowrank_predictions=lowrank,
                    residual_correlations=corr_residual,
                    n_restarted=restarted if k > 0 and n_starts > 0 else 0, _buffers=fit[1:])


def _restarts(residual, restart_above):
    """Users whose warm-started residual norm exceeds restart_above x the median."""
    rho = np.sqrt(residual)
    return np.nonzero(rho > restart_above * np.median(rho))[0]


def _fit_compiled(X, y, U, k, support_init, n_starts, max_iter, restart_above, fit):
    """The local step by the compiled kernels into ``fit``; returns how many users
    were (re)started from greedy supports."""
    from ._kernels import LocalOutputs, LocalSettings, fit_users

    X, y = storage(X), np.ascontiguousarray(y, dtype=np.float64)
    Ut = np.ascontiguousarray(U.T, dtype=np.float64)
    out = LocalOutputs(*fit)
    warm = support_init is not None
    # Without a warm start the kernel does not read it: out.support has its type.
    S0 = np.ascontiguousarray(support_init, dtype=np.intp) if warm else out.support
    settings = LocalSettings(sparsity=int(k), n_starts=int(n_starts), max_iter=int(max_iter),
                             use_warm=warm, keep_existing=False)
    if restart_above is None:
        fit_users(X, y, Ut, np.arange(X.shape[0]), S0, settings, out)
        return X.shape[0]
    fit_users(X, y, Ut, np.arange(X.shape[0]), S0, settings._replace(n_starts=0), out)
    restart = _restarts(out.residual, restart_above)
    fit_users(X, y, Ut, restart, S0, settings._replace(use_warm=False, keep_existing=True),
              out)
    return restart.size


def precompile(dtypes=("float64",)) -> None:
    """Compile the kernels for X stored in each of ``dtypes`` ("float64", "float32") into
    numba's on-disk cache (``NUMBA_CACHE_DIR``, by default next to the library), or load
    them from it, e.g. before starting processes that would otherwise each compile them
    at once (a pipeline's parallel fit jobs). Compiling takes ~20 s of CPU per dtype; a
    later process loads them in a fraction of a second."""
    from ._kernels import normal_operator, read_pass

    rng = np.random.default_rng(0)
    t, n, d, r, k = 8, 4, 3, 1, 1
    for dtype in dtypes:
        X = rng.standard_normal((t, n, d)).astype(dtype)
        y = rng.standard_normal((t, n))
        U = np.eye(d, r)
        fit = local_step(X, y, U, k)
        local_step(X, y, U, k, support_init=fit.support, out=fit)  # warm, restarts
        normal_operator(storage(X), np.ascontiguousarray(U.T), np.ones((t, r)), np.ones(t))
        read_pass(storage(X))  # timing.one_pass_seconds


def _fit_batched(X, y, U, k, support_init, n_starts, max_iter, restart_above, chunk_size,
                 fit):
    """As :func:`_fit_compiled`, by the batched numpy reference."""
    t = X.shape[0]
    outliers_only = restart_above is not None
    fits = fit[:5]
    for sl in user_chunks(t, chunk_size):
        block = _solve_block(X[sl], y[sl], U, k,
                             None if support_init is None else support_init[sl],
                             0 if outliers_only else n_starts, max_iter)
        for whole, part in zip(fits, block):
            whole[sl] = part
    if outliers_only:
        restart = _restarts(fit[2], restart_above)
        for sl in user_chunks(restart.size, chunk_size):
            idx = restart[sl]  # a copy of these users only
            kept = _keep_better(tuple(a[idx] for a in fits),
                                _solve_block(X[idx], y[idx], U, k, None, n_starts, max_iter))
            for whole, part in zip(fits, kept):
                whole[idx] = part
    vectors, corr_residual = fit[3], fit[5]
    for sl in user_chunks(t, chunk_size):
        corr_residual[sl] = correlations(X[sl], vectors[sl])
    return restart.size if outliers_only else t


BACKENDS = ("numba", "numpy")


def single_threaded_blas(active):
    """Context for a loop of outer iterations that runs numba kernels between small BLAS
    calls (products with r columns): if ``active``, one BLAS thread. OpenBLAS's workers
    spin for a while after each call and would fight numba's threads for the cores
    (measured: +25 ms per iteration at t=1e4, half of it)."""
    if not active:
        return nullcontext()
    return _blas_controller().limit(limits=1, user_api="blas")


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, found once per process
    (``threadpool_limits`` searches them on every call: ~1 ms, a fixed cost per fit)."""
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


def check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    return backend
