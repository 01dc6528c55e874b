"""The outer loop shared by AMHT-LRS and DP-AMHT-LRS.

Both alternate a local step (every user's (w_i, b_i) from the current U, by
:func:`lowrank_sparse.local.local_step`) with a global step that moves U. They differ in
the global step only -- a robust least-squares solve (:mod:`lowrank_sparse.amht`) or a
noisy gradient step from clipped per-user releases (:mod:`lowrank_sparse.dp_amht`) --
and in which users the local step restarts, which is decided here, in one place:

- ``cross_user_restarts=True`` (AMHT-LRS): while U still moves (its last change is above
  :data:`RESTART_ALL_ABOVE_CHANGE`) every user is restarted from greedy supports; once U
  has settled only users whose residual is an outlier among all users' (above twice the
  median) are, which keeps an iteration near a few passes over the data.
- ``cross_user_restarts=False`` (DP-AMHT-LRS): every local step, the final one included,
  restarts every user and each keeps the best of its warm start and its greedy starts by
  its own residual. A user's fit is then a function of its own data and the released U
  alone -- the per-user invariant that makes the clip bound the sensitivity. A median
  over users would make each user's fit depend on everybody's data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from ._linalg import storage
from .local import local_step, single_threaded_blas
from .metrics import principal_sine

logger = logging.getLogger(__name__)

#: Subspace change (sine) above which the local step restarts every user; measured on
#: d=50, t=400, r=k=2: 1e-2 keeps the n_50 of always restarting at a third of the cost.
RESTART_ALL_ABOVE_CHANGE = 1e-2
#: Once U has settled (cross-user restarts only): restart users whose residual norm is
#: above this multiple of the median residual norm.
RESTART_OUTLIERS_ABOVE = 2.0


class ConvergenceWarning(UserWarning):
    """A fit or its U step stopped at an iteration cap before its tolerance."""


@dataclass(frozen=True)
class FitResult:
    """Fitted model. U: (d, r) orthonormal; W: (t, r); B: (t, d); theta = W U^T + B.
    ``history`` is per outer iteration (a :class:`lowrank_sparse.amht.History` or a
    :class:`lowrank_sparse.dp_amht.PrivateHistory`)."""

    U: np.ndarray
    W: np.ndarray
    B: np.ndarray
    history: object
    n_iter: int
    converged: bool
    extra: dict = field(default_factory=dict)

    @property
    def theta(self) -> np.ndarray:
        return self.W @ self.U.T + self.B


@dataclass(frozen=True)
class Run:
    """What :func:`alternate` returns. ``U``: the last iterate; ``final``: the local fit
    of all users with it (a :class:`lowrank_sparse.local.LocalFit`); per outer
    iteration: ``changes`` (sine between consecutive U), ``steps`` (what the global step
    reported), ``train_loss`` (mean squared residual after the local step: an exact
    statistic of every user's data), ``seconds`` (wall time so far)."""

    U: np.ndarray
    final: object
    changes: np.ndarray
    steps: list
    train_loss: np.ndarray
    seconds: np.ndarray
    converged: bool


def alternate(X, y, U, sparsity, global_step, *, n_iter, tol, cross_user_restarts,
              n_starts=1, htp_iter=20, batches=None, chunk_size=None, backend="numba",
              blas_single_threaded=True, callback=None, final_step=True, name="fit") -> Run:
    """Alternate local steps and ``global_step`` from the subspace U (d, r).

    ``global_step(U, X_batch, fit, changes) -> (U_new, info)``: the new U (any basis; it
    is orthonormalized here) from the local fit ``fit`` of the users' samples
    ``X_batch`` and the changes of U so far; ``info`` (a dict) is kept in ``steps``.
    ``batches``: optional list of per-iteration sample slices (fresh samples); the final
    local step always uses every sample. Stops after ``n_iter`` iterations or, unless
    ``tol`` is None, when the change of U is <= ``tol``. ``callback(iteration, U)`` after each global step.
    ``final_step=False`` skips the final local step (``final`` is None): for a run that
    only refines U for another.
    Logs each iteration at INFO (logger ``lowrank_sparse.alternating``, prefixed with
    ``name``): its wall time, the share of users restarted from greedy supports, the
    change of U and ``info``; nothing computed from a ground truth, nothing else from
    the users' data.
    """
    t, n, d = X.shape
    if backend == "numba":
        X = storage(X)  # the kernels' one layout, once per fit (a copy only if X is not)
    restart_above = RESTART_OUTLIERS_ABOVE if cross_user_restarts else None
    changes, steps, losses, seconds = [], [], [], []
    start = time.perf_counter()
    support = spare = None
    converged = False
    with single_threaded_blas(blas_single_threaded):
        for it in range(n_iter):
            Xb, yb = (X, y) if batches is None else _batch(X, y, batches[it], backend)
            settled = bool(changes) and changes[-1] <= RESTART_ALL_ABOVE_CHANGE
            fit = local_step(Xb, yb, U, sparsity, support_init=support, max_iter=htp_iter,
                             n_starts=n_starts, restart_above=restart_above if settled else None,
                             chunk_size=chunk_size, backend=backend, out=spare)
            support = fit.support
            U_new, info = global_step(U, Xb, fit, changes)
            U_new = orthonormalize(U_new, U)
            changes.append(principal_sine(U, U_new))
            losses.append(float(fit.residual.sum() / (t * Xb.shape[1])))
            steps.append(info)
            seconds.append(time.perf_counter() - start)
            _log_iteration(name, it, seconds, fit.n_restarted / t, changes[-1], info)
            spare, fit = fit, None  # the next local step writes into its arrays
            U = U_new
            if callback is not None:
                callback(it, U)
            if tol is not None and changes[-1] <= tol:
                converged = True
                break
        final = None if not final_step else local_step(
            X, y, U, sparsity, support_init=support, max_iter=htp_iter, n_starts=n_starts,
            restart_above=restart_above, chunk_size=chunk_size, backend=backend, out=spare)
    if final is not None:
        elapsed = time.perf_counter() - start
        logger.info("%s final local step: %.1f s (%.1f s in all), %.1f%% of users restarted",
                    name, elapsed - (seconds[-1] if seconds else 0.0), elapsed,
                    100 * final.n_restarted / t)
    return Run(U=U, final=final, changes=np.array(changes), steps=steps,
               train_loss=np.array(losses), seconds=np.array(seconds), converged=converged)


def _log_iteration(name, it, seconds, restarted, change, info):
    """One INFO line per outer iteration (the argument list is only formatted if INFO is
    enabled)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    step = seconds[-1] - (seconds[-2] if len(seconds) > 1 else 0.0)
    details = "".join(f", {key} {value:.3g}" if isinstance(value, float) else
                      f", {key} {value}" for key, value in info.items())
    logger.info("%s iteration %d: %.1f s (%.1f s in all), %.1f%% of users restarted, "
                "change of U %.2e%s", name, it + 1, step, seconds[-1], 100 * restarted,
                change, details)


def _batch(X, y, batch, backend):
    """The samples ``batch`` of every user; for the compiled kernels in their layout,
    copied once here rather than in each kernel call of the iteration."""
    if backend == "numba":
        return storage(X[:, batch]), np.ascontiguousarray(y[:, batch])
    return X[:, batch], y[:, batch]


def orthonormalize(U_new, U_old):
    """QR of U_new with signs fixed so columns stay aligned with U_old (cosmetic, but it
    keeps W comparable across iterations). A degenerate U_new (e.g. every w_i = 0) keeps
    U_old rather than producing NaN."""
    Q, R = np.linalg.qr(U_new)
    if not np.all(np.isfinite(Q)) or np.min(np.abs(np.diag(R))) <= 1e-300:
        return U_old
    return Q * np.where(np.diag(R) < 0, -1.0, 1.0)
