"""DP-AMHT-LRS: AMHT-LRS with user-level differential privacy in the billboard model.

What touches private data, and where:

- ``_user_*`` functions are what a user computes from the public U and its own data:
  its moment matrix, its local fit (w_i, b_i) and its gradient contribution. Nothing a
  user computes leaves it except through :func:`lowrank_sparse.privacy.gaussian_sum`.
- ``_server_*`` functions see only clipped, noised sums and public quantities (d, r, n,
  the clip bounds, the noise multiplier).
- What is released (the billboard): the initial subspace U0 and every iterate of U.
  Each user's w_i and b_i are computed by that user from the public U and are never
  released; the final personalization is such a local computation.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from ._linalg import default_chunk_size, user_chunks, users_per_block
from ._validation import check_int, check_positive, check_rank_sparsity, check_xy
from .amht import RESTART_ALL_ABOVE_CHANGE, FitResult, History, top_eigenvectors
from .local import check_backend, local_step, single_threaded_blas
from .metrics import principal_sine
from .privacy import (NEIGHBOURING_RELATION, PrivacyReport, Release, calibrate_noise_multiplier,
                      epsilon_spent, gaussian_sum)


def default_clip_bounds(d, n, y_scale) -> dict:
    """Clip bounds from public quantities only: d, n and a stated bound ``y_scale`` on the
    root-mean-square response (the synthetic model's default has about 2 for r = k = 2).

    - ``init``: a user's (1/n) sum_j y_j^2 x_j x_j^T has Frobenius norm about
      y_scale^2 d / sqrt(n) for Gaussian x with n < d (n nearly orthogonal rank-one
      terms of norm y^2 ||x||^2 ~ y^2 d each, divided by n).
    - ``gram``: ||w_i w_i^T||_F = ||w_i||^2 <= ||theta_i||^2 ~ y_scale^2.
    - ``grad``: ||X_i^T res_i w_i^T|| where res_i is the user's unexplained part; we
      budget for residuals of 5% of y_scale per sample, so ||X_i^T res_i|| ~
      0.05 y_scale sqrt(n d) and the bound is 0.05 y_scale^2 sqrt(n d). Larger
      gradients (early iterations, users whose local step failed) are clipped, which
      also bounds their influence on U as the robust step of AMHT-LRS does.
    """
    return {"init": y_scale ** 2 * d / np.sqrt(n),
            "gram": y_scale ** 2,
            "grad": 0.05 * y_scale ** 2 * np.sqrt(n * d)}


# ---------------------------------------------------------------- user side (private)

def _user_moments(X, y):
    """(t, d*d) each user's (1/n) sum_j y_j^2 x_j x_j^T, flattened."""
    t, n, d = X.shape
    Xy = X * np.abs(y)[..., None]
    return (Xy.transpose(0, 2, 1) @ Xy).reshape(t, d * d) / n


def _user_gradients(fit):
    """(t, d*r) G_i = X_i^T res_i w_i^T with res_i = y_i - X_i (U w_i + b_i) the local
    step's residual at the current U (its correlations X_i^T res_i come with the local
    fit): minus the gradient of the user's squared loss in U (the negative
    half-gradient)."""
    return (fit.residual_correlations[:, :, None] * fit.W[:, None, :]).reshape(
        fit.W.shape[0], -1)


def _user_grams(fit):
    """(t, r*r) w_i w_i^T, flattened."""
    return (fit.W[:, :, None] * fit.W[:, None, :]).reshape(fit.W.shape[0], -1)


# ---------------------------------------------------------------- server side (public)

def _server_init(noisy_moment, d, rank):
    M = noisy_moment.reshape(d, d)
    return top_eigenvectors((M + M.T) / 2, rank)


def _server_update(U, noisy_grad, noisy_gram, n, floor):
    """One preconditioned gradient step on sum_i ||y_i - X_i (U w_i + b_i)||^2 / 2:
    U + G K^{-1}, with K = n sum_i w_i w_i^T (E[X_i^T X_i] = n I) and its eigenvalues
    floored at the noise level so that noise cannot blow the step up."""
    d, r = U.shape
    G = noisy_grad.reshape(d, r)
    K = noisy_gram.reshape(r, r)
    vals, vecs = np.linalg.eigh((K + K.T) / 2)
    K_inv = (vecs / (n * np.maximum(vals, floor))) @ vecs.T
    U_new = U + G @ K_inv
    Q, R = np.linalg.qr(U_new)
    return Q * np.where(np.diag(R) < 0, -1.0, 1.0)


# ---------------------------------------------------------------- the algorithm

def dp_amht_lrs(X, y, rank, sparsity, epsilon, delta, *, n_iter=10, y_scale=2.0,
                clip_init=None, clip_grad=None, clip_gram=None, chunk_size=None,
                backend="numba", rng=None) -> FitResult:
    """Fit theta_i = U w_i + b_i with (epsilon, delta) user-level DP for the released Us.

    Parameters
    ----------
    X : (t, n, d) array;  y : (t, n) array
    rank, sparsity : int
        r and k as in :func:`lowrank_sparse.amht.amht_lrs`; k = 0 is private low-rank-only
        alternating minimization (Jain et al. 2021) through the same code path.
    epsilon : float > 0 (inf: no noise);  delta : float in (0, 1)
        Target budget for the whole fit, under add/remove-one-user.
    n_iter : int, default 10
        Outer iterations; each makes two releases, the initialization one more.
    y_scale : float, default 2.0
        Public bound on the RMS of responses, from which default clip bounds follow
        (:func:`default_clip_bounds`).
    clip_init, clip_grad, clip_gram : float, optional
        L2 clip bounds of the per-user contributions (override the defaults).
    chunk_size : int, optional;  backend : "numba" or "numpy", default "numba"
        As in :func:`lowrank_sparse.amht.amht_lrs` (the users' local steps).
    rng : None, int or Generator
        The privacy-noise stream (independent of the data).

    Returns
    -------
    FitResult whose ``extra["privacy"]`` is a :class:`PrivacyReport`.

    Notes
    -----
    Releases: (1) M = sum_i clip((1/n) sum_j y_ij^2 x_ij x_ij^T) + noise, U0 = its top-r
    eigenvectors; then per iteration, after every user's local step with the public U:
    (2) G = sum_i clip(X_i^T res_i w_i^T) + noise and (3) K = sum_i clip(w_i w_i^T) +
    noise; the server sets U <- qr(U + G (n K)^{-1}).

    **Why noisy gradients and not noisy sufficient statistics.** The exact U step needs
    sum_i w_i w_i^T (x) X_i^T X_i, a (d r) x (d r) matrix whose per-user Frobenius norm
    is about ||w||^2 sqrt(n^2 d + n d^2) (~700 for d=50, n=32, r=2); the spectral norm
    of its noise, ~2 sqrt(d r) s C ~ 14,000 s, is comparable to the signal t n ~ 64,000
    at t=2000 for every noise multiplier s >= 1, i.e. for every budget we care about.
    The preconditioned gradient needs only a d x r sum whose per-user norm shrinks with
    the residuals, so its clip bound can be small (default ~6), plus an r x r Gram:
    noise of ~s C (sqrt(d) + sqrt(r)) / (t n) ~ 3e-4 s C in U. Because E[X_i^T X_i] =
    n I, preconditioning by n sum w w^T makes one step contract the error of U by about
    sqrt(d r / (t n)), so a few iterations suffice and each release gets more budget.
    """
    X, y = check_xy(X, y)
    t, n, d = X.shape
    rank, sparsity = check_rank_sparsity(rank, sparsity, d, n)
    epsilon = check_positive("epsilon", epsilon, allow_inf=True)
    if not (isinstance(delta, (int, float, np.floating)) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1); got {delta!r}")
    n_iter = check_int("n_iter", n_iter, low=1)
    backend = check_backend(backend)
    y_scale = check_positive("y_scale", y_scale)
    clip = default_clip_bounds(d, n, y_scale)
    for key, value in (("init", clip_init), ("grad", clip_grad), ("gram", clip_gram)):
        if value is not None:
            clip[key] = check_positive(f"clip_{key}", value)
    chunk_size = chunk_size or default_chunk_size(n, d)
    noise_rng = np.random.default_rng(rng)

    n_releases = 1 + 2 * n_iter
    s = calibrate_noise_multiplier(epsilon, float(delta), n_releases)
    releases = []

    def release(name, user_fn, bound, floats_per_user):
        # Blocks sized by the per-user rows (d^2 for the moments), so the clipping
        # temporaries stay ~256 MB each (a d^2 row per user of a whole chunk of X was
        # 1.3 GB per copy at d=100 and took the t=1e6 fit to 22 GiB).
        blocks = user_chunks(t, users_per_block(floats_per_user, chunk_size))
        total, n_clipped = gaussian_sum((user_fn(sl) for sl in blocks), bound, s, noise_rng)
        releases.append(Release(name, bound, s, n_clipped))
        return total

    U = _server_init(release("init", lambda sl: _user_moments(X[sl], y[sl]), clip["init"],
                             d * d), d, rank)
    changes, losses, seconds, signal_ratio = [], [], [], []
    start = time.perf_counter()
    support = spare = None
    gram_floor = max(s * clip["gram"] * 2 * np.sqrt(rank), 1e-12)
    with single_threaded_blas(backend == "numba"):
        for it in range(n_iter):
            settled = bool(changes) and changes[-1] <= RESTART_ALL_ABOVE_CHANGE
            fit = local_step(X, y, U, sparsity, support_init=support,
                             restart_above=2.0 if settled else None, chunk_size=chunk_size,
                             backend=backend, out=spare)
            support = fit.support
            grad = release(f"gradient {it}",
                           lambda sl: _user_gradients(fit.users(sl)),
                           clip["grad"], d * rank)
            gram = release(f"gram {it}", lambda sl: _user_grams(fit.users(sl)), clip["gram"],
                           rank * rank)
            noise_norm = s * clip["grad"] * np.sqrt(grad.size)
            signal_ratio.append(noise_norm / max(np.linalg.norm(grad), 1e-300))
            U_new = _server_update(U, grad, gram, n, gram_floor)
            changes.append(principal_sine(U, U_new))
            losses.append(float(fit.residual.sum() / (t * n)))
            seconds.append(time.perf_counter() - start)
            U = U_new
            spare, fit = fit, None  # the next local step writes into its arrays
        final = local_step(X, y, U, sparsity, support_init=support, chunk_size=chunk_size,
                           backend=backend, out=spare)

    spent = epsilon_spent([r.noise_multiplier for r in releases], float(delta))
    noise_dominated = bool(np.median(signal_ratio) > 1.0) if s > 0 else False
    notes = []
    if noise_dominated:
        notes.append(f"the privacy noise dominates the released gradients (median noise/sum "
                     f"norm ratio {np.median(signal_ratio):.1f}); the fit is mostly noise: "
                     "use a larger epsilon, more users, or smaller clip bounds")
        warnings.warn(notes[-1], RuntimeWarning, stacklevel=2)
    report = PrivacyReport(
        epsilon_target=epsilon, epsilon_spent=spent, delta=float(delta), noise_multiplier=s,
        clip=dict(clip), neighbouring_relation=NEIGHBOURING_RELATION,
        releases=tuple(releases), noise_dominated=noise_dominated, warnings=tuple(notes))
    history = History(subspace_change=np.array(changes), train_loss=np.array(losses),
                      n_downweighted=np.array([r.n_clipped for r in releases[1::2]]),
                      cg_iterations=np.zeros(len(changes), dtype=int),
                      seconds=np.array(seconds))
    return FitResult(U=U, W=final.W, B=final.sparse(d), history=history, n_iter=n_iter,
                     converged=False, extra={"privacy": report})
