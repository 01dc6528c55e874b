"""DP-AMHT-LRS: AMHT-LRS with user-level differential privacy in the billboard model.

Guarantee: (epsilon, delta) differential privacy of everything released, under the
neighbouring relation "add or remove one user (all of that user's samples)".

What is released (the billboard), to everyone: the initial subspace U0 and every iterate
of U, each computed by the server from noisy sums only. Each user's w_i and b_i --
including the final ``W``, ``B`` of the result -- are computed by that user from the
released U and its own data, and are shown to that user only (joint DP: user i's output
may depend on its own data).

**The per-user invariant.** Every user's contribution to a release is a function of that
user's own data and of released quantities only. No statistic over users (median, mean,
count, maximum) steers a user's computation, the server's update, a step size or a
stopping rule unless it was itself released through the accountant. Clipping bounds a
user's own contribution; only this invariant makes the clip bound the sensitivity of the
sum (one added user cannot change the others' contributions). It holds by construction:

- ``_user_*`` functions are what a user computes from the public U and its own data: its
  moment matrix, its gradient and Gram contributions (as
  :class:`lowrank_sparse.privacy.Contributions`, whose rows need not be formed: the
  mechanism asks for each user's norm and for the sum weighted by each user's clip
  factor); the local step
  (:func:`lowrank_sparse.alternating.alternate` with ``cross_user_restarts=False``)
  restarts every user and each keeps its best start by its own residual;
- ``_server_*`` functions see only noisy sums and public quantities (d, r, n, the clip
  bounds, the noise multiplier);
- every sum over users is made by :class:`lowrank_sparse.privacy.GaussianSumMechanism`,
  which clips, noises and enters the release into the ledger in one step.

:func:`lowrank_sparse.privacy.sensitivity_audit` checks the invariant on any pair of
neighbouring datasets: it replays a fit on both with the same released history and
measures how far each pre-noise sum moved.

**What is not private.** The result's ``extra["not_private"]``
(:class:`NotPrivateDiagnostics`: the exact mean training loss, how many users each
release clipped, wall times) is computed from every user's data without noise, for
debugging and evaluation only; it must not be released. Evaluation metrics computed
against a ground truth are not private either.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np

from ._linalg import default_chunk_size, user_chunks, users_per_block
from ._validation import check_int, check_positive, check_rank_sparsity, check_xy
from .alternating import FitResult, alternate
from .amht import MOMENT_BLOCK_FLOATS, scatter_matrix, top_eigenvectors
from .local import check_backend
from .privacy import (NEIGHBOURING_RELATION, GaussianSumMechanism, OuterProducts,
                      PrivacyReport, calibrate_noise_multiplier, check_clip, check_delta,
                      epsilon_spent, flush_subnormals, row_norms)

logger = logging.getLogger(__name__)

#: noise_dominated when, in the last iteration, the predicted rotation of U by the
#: gradient noise alone (released quantities only) is above this sine ...
NOISE_SINE_DOMINATED = 0.5


@dataclass(frozen=True)
class PrivateHistory:
    """Per outer iteration, from released quantities only (so it is private too):
    ``subspace_change``, the sine of the largest angle between consecutive released U;
    ``gram_min_eigenvalue``, the smallest eigenvalue of the released (noisy) Gram sum
    sum_i w_i w_i^T, and ``gram_floor``, its noise level, below which the step is
    damped; ``noise_sine``, the predicted sine by which the release noise alone rotates
    U in the step, s C_grad (sqrt(d) + sqrt(r)) / (n max(gram_min_eigenvalue,
    gram_floor))."""

    subspace_change: np.ndarray
    gram_min_eigenvalue: np.ndarray
    gram_floor: float
    noise_sine: np.ndarray


@dataclass(frozen=True)
class NotPrivateDiagnostics:
    """NOT differentially private: exact statistics of every user's data, computed
    without noise while fitting. For debugging and evaluation only; never release them.
    Per outer iteration: ``train_loss`` (mean squared residual over users) and
    ``seconds`` (wall time so far, which depends on the data); per release:
    ``n_clipped`` (users whose contribution the clip changed)."""

    train_loss: np.ndarray
    seconds: np.ndarray
    n_clipped: np.ndarray


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

@dataclass(frozen=True)
class _UserMoments:
    """Each user's M_i = (1/n) sum_j y_ij^2 x_ij x_ij^T (d x d, flattened) as
    :class:`lowrank_sparse.privacy.Contributions`, without forming the t d^2 floats.

    With Z_i = diag(|y_i|) X_i / sqrt(n), M_i = Z_i^T Z_i, whose Frobenius norm is that
    of the n x n Z_i Z_i^T (both are sqrt(tr (Z_i^T Z_i)^2)): n^2 d flops per user
    instead of n d^2 (for n > d, Z_i^T Z_i itself). The weighted sum sum_i w_i M_i is
    one scatter matrix of the rows sqrt(w_i / n) |y_ij| x_ij
    (:func:`lowrank_sparse.amht.scatter_matrix`): one read of X, and a user with weight
    0 has rows of exact zeros.
    """

    X: np.ndarray
    y: np.ndarray
    chunk_size: int | None = None

    @property
    def n_users(self) -> int:
        return self.X.shape[0]

    def _factors(self, sl):
        """Z_i of the users ``sl`` in float64: (users, n, d)."""
        return self.X[sl] * (np.abs(self.y[sl]) / np.sqrt(self.X.shape[1]))[:, :, None]

    def norms(self) -> np.ndarray:
        t, n, d = self.X.shape
        norms = np.empty(t)
        # Blocks of ~1 MB of Z, which the product reads back from cache.
        for sl in user_chunks(t, users_per_block(n * d, self.chunk_size,
                                                 MOMENT_BLOCK_FLOATS)):
            with np.errstate(over="ignore", invalid="ignore"):  # overflow: norm inf
                Z = self._factors(sl)
                small = Z @ Z.transpose(0, 2, 1) if n <= d else Z.transpose(0, 2, 1) @ Z
            norms[sl] = row_norms(small.reshape(small.shape[0], -1))
        return norms

    def weighted_sum(self, weights) -> np.ndarray:
        # sqrt(w) / sqrt(n), not sqrt(w / n): w / n may be subnormal where w is tiny.
        c = np.abs(self.y) * (np.sqrt(weights) / np.sqrt(self.X.shape[1]))[:, None]
        # A subnormal c_ij (tiny y_ij, huge x_ij) has fewer significant bits; flushed, its
        # term c_ij^2 x_ij x_ij^T (positive semidefinite) is dropped: ||M_i|| can only
        # shrink.
        return scatter_matrix(self.X, flush_subnormals(c), chunk_size=self.chunk_size
                              ).ravel()

    def rows(self) -> np.ndarray:
        Z = self._factors(slice(None))
        return (Z.transpose(0, 2, 1) @ Z).reshape(self.n_users, -1)


def _user_moments(X, y, chunk_size=None) -> _UserMoments:
    """Each user's (1/n) sum_j y_j^2 x_j x_j^T: (t, d*d) contributions."""
    return _UserMoments(X, y, chunk_size)


def _user_gradients(fit) -> OuterProducts:
    """(t, d*r) G_i = X_i^T res_i w_i^T with res_i = y_i - X_i (U w_i + b_i) the local
    step's residual at the current U (its correlations X_i^T res_i come with the local
    fit): minus the gradient of the user's squared loss in U (the negative
    half-gradient)."""
    return OuterProducts(fit.residual_correlations, fit.W)


def _user_grams(fit) -> OuterProducts:
    """(t, r*r) w_i w_i^T, flattened."""
    return OuterProducts(fit.W, fit.W)


# ---------------------------------------------------------------- server side (public)

def _server_init(noisy_moment, d, rank):
    M = noisy_moment.reshape(d, d)
    return top_eigenvectors((M + M.T) / 2, rank)


def _server_step(U, noisy_grad, noisy_gram, n, floor):
    """One preconditioned gradient step on sum_i ||y_i - X_i (U w_i + b_i)||^2 / 2:
    U + G K^{-1}, with K = n sum_i w_i w_i^T (E[X_i^T X_i] = n I) and its eigenvalues
    floored at the noise level so that noise cannot blow the step up. Returns the new
    U (before orthonormalization) and the smallest eigenvalue of the noisy Gram sum."""
    d, r = U.shape
    G = noisy_grad.reshape(d, r)
    K = noisy_gram.reshape(r, r)
    vals, vecs = np.linalg.eigh((K + K.T) / 2)
    K_inv = (vecs / (n * np.maximum(vals, floor))) @ vecs.T
    return U + G @ K_inv, float(vals[0])


# ---------------------------------------------------------------- the algorithm

def dp_amht_lrs(X, y, rank, sparsity, epsilon, delta, *, n_iter=10, y_scale=2.0,
                clip_init=None, clip_grad=None, clip_gram=None, n_starts=1, htp_iter=20,
                chunk_size=None, backend="numba", rng=None) -> FitResult:
    """Fit theta_i = U w_i + b_i with (epsilon, delta) user-level DP for the released Us.

    Parameters
    ----------
    X : (t, n, d) array;  y : (t, n) array
        float32 X is kept as given, as in :func:`lowrank_sparse.amht.amht_lrs` (every sum
        and product is float64: the releases are those of the same values in float64,
        to rounding); anything else becomes float64.
    rank, sparsity : int
        r and k as in :func:`lowrank_sparse.amht.amht_lrs`; k = 0 is private low-rank-only
        alternating minimization (Jain et al. 2021) through the same code path.
    epsilon : float > 0 (inf: no noise);  delta : float in (0, 1)
        Target budget for the whole fit, under add/remove-one-user. A warning if
        delta >= 1 / t: a mechanism that publishes one random user's data outright meets
        such a delta; use delta << 1 / t.
    n_iter : int, default 10
        Outer iterations; each makes two releases, the initialization one more.
    y_scale : float, default 2.0
        Public bound on the RMS of responses, from which default clip bounds follow
        (:func:`default_clip_bounds`).
    clip_init, clip_grad, clip_gram : float, optional
        L2 clip bounds of the per-user contributions (override the defaults).
    n_starts, htp_iter : int, default 1 and 20
        The users' local steps, as in :func:`lowrank_sparse.amht.amht_lrs`.
    chunk_size : int, optional;  backend : "numba" or "numpy", default "numba"
        As in :func:`lowrank_sparse.amht.amht_lrs` (the users' local steps).
    rng : None, int or Generator
        The privacy-noise stream (independent of the data).

    Returns
    -------
    FitResult with ``history`` a :class:`PrivateHistory`, ``extra["privacy"]`` a
    :class:`lowrank_sparse.privacy.PrivacyReport` and ``extra["not_private"]`` the
    :class:`NotPrivateDiagnostics` (not private: do not release).
    Progress is logged at INFO on the ``lowrank_sparse`` logger (silent unless enabled):
    per outer iteration, released quantities and wall times; wall times depend on the
    data (as ``NotPrivateDiagnostics.seconds``) and are not private.

    Notes
    -----
    Releases: (1) M = sum_i clip((1/n) sum_j y_ij^2 x_ij x_ij^T) + noise, U0 = its top-r
    eigenvectors; then per iteration, after every user's local step with the public U:
    (2) G = sum_i clip(X_i^T res_i w_i^T) + noise and (3) K = sum_i clip(w_i w_i^T) +
    noise; the server sets U <- qr(U + G (n K)^{-1}). The noise multiplier is calibrated
    so that the 1 + 2 n_iter releases together spend (epsilon, delta).

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

    **Noise-dominated fits.** ``PrivacyReport.noise_dominated`` (with a RuntimeWarning)
    says the released U is mostly noise, judged from released quantities only (see
    :func:`_noise_dominated`).
    """
    X, y = check_xy(X, y, keep_float32=True)  # float32 storage, float64 arithmetic
    settings = _settings(X, rank, sparsity, epsilon, delta, n_iter=n_iter, y_scale=y_scale,
                         clip_init=clip_init, clip_grad=clip_grad, clip_gram=clip_gram,
                         n_starts=n_starts, htp_iter=htp_iter, chunk_size=chunk_size,
                         backend=backend)
    t, d = X.shape[0], X.shape[2]
    if settings.delta >= 1.0 / t:
        warnings.warn(
            f"delta = {settings.delta:.3g} >= 1/t = {1.0 / t:.3g}: a mechanism that publishes "
            "one random user's data outright meets this delta; use delta << 1/t",
            RuntimeWarning, stacklevel=2)
    s = settings.noise_multiplier
    mechanism = GaussianSumMechanism(s, rng=np.random.default_rng(rng))
    run, history = _private_fit(X, y, settings, mechanism)

    noise_dominated, reason = _noise_dominated(history, s)
    notes = []
    if noise_dominated:
        notes.append(f"the privacy noise dominates the released subspace ({reason}); the "
                     "fit is mostly noise: use a larger epsilon, more users, or smaller "
                     "clip bounds")
        warnings.warn(notes[-1], RuntimeWarning, stacklevel=2)
    report = PrivacyReport(
        epsilon_target=settings.epsilon,
        epsilon_spent=epsilon_spent([r.noise_multiplier for r in mechanism.releases],
                                    settings.delta),
        delta=settings.delta, noise_multiplier=s, clip=dict(settings.clip),
        neighbouring_relation=NEIGHBOURING_RELATION, releases=tuple(mechanism.releases),
        noise_dominated=noise_dominated, warnings=tuple(notes))
    not_private = NotPrivateDiagnostics(train_loss=run.train_loss, seconds=run.seconds,
                                        n_clipped=np.array(mechanism.n_clipped))
    return FitResult(U=run.U, W=run.final.W, B=run.final.sparse(d), history=history,
                     n_iter=len(run.changes), converged=False,
                     extra={"privacy": report, "not_private": not_private})


@dataclass(frozen=True)
class _Settings:
    """The validated options of a private fit; public (no user data)."""

    rank: int
    sparsity: int
    epsilon: float
    delta: float
    noise_multiplier: float
    clip: dict
    n_iter: int
    n_starts: int
    htp_iter: int
    chunk_size: int | None
    backend: str


def _settings(X, rank, sparsity, epsilon, delta, *, n_iter=10, y_scale=2.0, clip_init=None,
              clip_grad=None, clip_gram=None, n_starts=1, htp_iter=20, chunk_size=None,
              backend="numba") -> _Settings:
    """Check the options of :func:`dp_amht_lrs` (same keywords) against the data's
    shape and calibrate the noise multiplier for its 1 + 2 n_iter releases."""
    t, n, d = X.shape
    rank, sparsity = check_rank_sparsity(rank, sparsity, d, n)
    epsilon = check_positive("epsilon", epsilon, allow_inf=True)
    delta = check_delta(delta)
    n_iter = check_int("n_iter", n_iter, low=1)
    y_scale = check_positive("y_scale", y_scale)
    with np.errstate(over="ignore", under="ignore"):
        defaults = default_clip_bounds(d, n, np.float64(y_scale))
    clip = {}
    for key, value in (("init", clip_init), ("grad", clip_grad), ("gram", clip_gram)):
        clip[key] = (check_clip(f"clip_{key}", value) if value is not None else
                     check_clip(f"clip_{key} (the default from y_scale={y_scale:g})",
                                float(defaults[key])))
    return _Settings(
        rank=rank, sparsity=sparsity, epsilon=epsilon, delta=delta,
        noise_multiplier=calibrate_noise_multiplier(epsilon, delta, 1 + 2 * n_iter),
        clip=clip, n_iter=n_iter, n_starts=check_int("n_starts", n_starts, low=1),
        htp_iter=check_int("htp_iter", htp_iter, low=1),
        chunk_size=None if chunk_size is None else check_int("chunk_size", chunk_size, low=1),
        backend=check_backend(backend))


def _private_fit(X, y, settings: _Settings, mechanism: GaussianSumMechanism):
    """The private fit with every sum over users made by ``mechanism`` (in audits a
    recording or a replaying one). Returns the :class:`lowrank_sparse.alternating.Run`
    and the :class:`PrivateHistory`."""
    t, n, d = X.shape
    rank, clip = settings.rank, settings.clip
    chunk_size = settings.chunk_size or default_chunk_size(n, d)

    s = mechanism.noise_multiplier
    start = time.perf_counter()
    U0 = _server_init(mechanism.release("init", 0, _user_moments(X, y, chunk_size),
                                        clip["init"]), d, rank)
    logger.info("DP-AMHT-LRS: t=%d users, n=%d, d=%d, X %s; initial subspace released in "
                "%.1f s", t, n, d, X.dtype, time.perf_counter() - start)
    gram_floor = max(s * clip["gram"] * 2 * np.sqrt(rank), 1e-12)
    grad_noise = s * clip["grad"] * (np.sqrt(d) + np.sqrt(rank))  # ~ ||noise of G||_2

    def noisy_gradient_step(U, Xb, fit, changes):
        it = len(changes) + 1
        grad = mechanism.release("gradient", it, _user_gradients(fit), clip["grad"])
        gram = mechanism.release("gram", it, _user_grams(fit), clip["gram"])
        U_new, gram_min = _server_step(U, grad, gram, n, gram_floor)
        noise_sine = grad_noise / (n * max(gram_min, gram_floor))
        return U_new, {"gram_min_eigenvalue": gram_min, "noise_sine": noise_sine}

    # Fixed iterations (the budget was calibrated for them); per-user restarts only.
    run = alternate(X, y, U0, settings.sparsity, noisy_gradient_step,
                    n_iter=settings.n_iter, tol=None, cross_user_restarts=False,
                    n_starts=settings.n_starts, htp_iter=settings.htp_iter,
                    chunk_size=chunk_size, backend=settings.backend,
                    blas_single_threaded=settings.backend == "numba", name="DP-AMHT-LRS")
    history = PrivateHistory(
        subspace_change=run.changes,
        gram_min_eigenvalue=np.array([step["gram_min_eigenvalue"] for step in run.steps]),
        gram_floor=float(gram_floor),
        noise_sine=np.array([step["noise_sine"] for step in run.steps]))
    return run, history


def _noise_dominated(history: PrivateHistory, noise_multiplier) -> tuple[bool, str]:
    """Whether the released U is mostly noise, from released quantities only: in the last
    step the noisy Gram sum is below its own noise level (the users' coordinates are
    not resolved, so U barely moves from a noisy start), or the gradient noise alone
    rotates U by a sine above :data:`NOISE_SINE_DOMINATED`. Returns (verdict, reason)."""
    if noise_multiplier == 0:
        return False, ""
    gram_min, sine = history.gram_min_eigenvalue[-1], history.noise_sine[-1]
    if gram_min <= history.gram_floor:
        return True, (f"the released Gram sum's smallest eigenvalue {gram_min:.3g} is below "
                      f"its noise level {history.gram_floor:.3g}")
    if sine > NOISE_SINE_DOMINATED:
        return True, f"the release noise alone rotates U by a sine of ~{sine:.2f} per step"
    return False, ""
