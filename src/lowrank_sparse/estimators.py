"""Estimator classes: scikit-learn-shaped wrappers with one fit interface.

Every estimator stores its hyper-parameters in ``__init__``, learns ``U_``, ``W_``,
``B_``, ``theta_`` in ``fit(X, y)`` (X: (t, n, d), y: (t, n)) and returns ``self``.
"""

from __future__ import annotations

import numpy as np

from ._linalg import project_features
from ._validation import check_array, check_rank_sparsity, check_subspace, check_xy
from .amht import FitResult, amht_lrs
from .dp_amht import dp_amht_lrs
from .local import LocalFit, local_step, refit
from .robust import Adaptive


class PersonalizedModel:
    """Shared behaviour: prediction and personalization of new users with U frozen."""

    sparsity: int = 0

    def _store(self, U, W, B, history=None, n_iter=0):
        self.U_, self.W_, self.B_ = U, W, B
        self.theta_ = W @ U.T + B
        self.history_ = history
        self.n_iter_ = n_iter
        return self

    def _check_fitted(self):
        if not hasattr(self, "theta_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first")

    def predict(self, X) -> np.ndarray:
        """(t, m) predictions <x, theta_i> for the fitted users. X: (t, m, d)."""
        self._check_fitted()
        X = check_array("X", X, 3)
        if X.shape[0] != self.theta_.shape[0] or X.shape[2] != self.theta_.shape[1]:
            raise ValueError(
                f"X must have shape (t={self.theta_.shape[0]}, m, d={self.theta_.shape[1]}); "
                f"got {X.shape}")
        return (X @ self.theta_[..., None])[..., 0]

    def personalize(self, X_new, y_new) -> LocalFit:
        """Fit (w, b) for new users with U frozen: one local step.

        X_new: (t_new, m, d), y_new: (t_new, m). Returns a LocalFit (W, support, values).
        """
        self._check_fitted()
        X_new, y_new = check_xy(X_new, y_new)
        d, r = self.U_.shape
        if r == 0:
            raise ValueError(f"{type(self).__name__} shares no subspace between users, so "
                             "there is nothing to personalize with; fit the new users directly")
        if X_new.shape[2] != d:
            raise ValueError(f"X_new must have d = {d} features; got {X_new.shape[2]}")
        check_rank_sparsity(r, self.sparsity, d, X_new.shape[1])
        return local_step(X_new, y_new, self.U_, self.sparsity)


class AMHTLRS(PersonalizedModel):
    """AMHT-LRS estimator; see :func:`lowrank_sparse.amht.amht_lrs` for the parameters.

    Attributes after ``fit``: ``U_`` (d, r), ``W_`` (t, r), ``B_`` (t, d), ``theta_``
    (t, d), ``history_`` (:class:`History`), ``n_iter_``, ``converged_``.
    """

    def __init__(self, rank, sparsity, *, n_iter=100, tol=1e-10, init="moments",
                 fresh_samples=False, robust=Adaptive(), n_starts=1, solver="cg",
                 chunk_size=None, rng=None):
        self.rank = rank
        self.sparsity = sparsity
        self.n_iter = n_iter
        self.tol = tol
        self.init = init
        self.fresh_samples = fresh_samples
        self.robust = robust
        self.n_starts = n_starts
        self.solver = solver
        self.chunk_size = chunk_size
        self.rng = rng

    def fit(self, X, y, callback=None):
        res: FitResult = amht_lrs(
            X, y, self.rank, self.sparsity, n_iter=self.n_iter, tol=self.tol,
            init=self.init, fresh_samples=self.fresh_samples, robust=self.robust,
            n_starts=self.n_starts, solver=self.solver, chunk_size=self.chunk_size,
            callback=callback, rng=self.rng)
        self.converged_ = res.converged
        return self._store(res.U, res.W, res.B, res.history, res.n_iter)


class KnownSubspace(PersonalizedModel):
    """Reference: the AMHT-LRS local step run once with the true subspace U (d, r).

    Isolates the cost of finding supports from the cost of learning U.
    """

    def __init__(self, U, sparsity):
        self.U = U
        self.sparsity = sparsity

    def fit(self, X, y):
        X, y = check_xy(X, y)
        U = check_subspace("U", self.U, X.shape[2])
        check_rank_sparsity(U.shape[1], self.sparsity, X.shape[2], X.shape[1])
        fit = local_step(X, y, U, self.sparsity)
        return self._store(U, fit.W, fit.sparse(X.shape[2]))


class Oracle(PersonalizedModel):
    """Reference: true subspace U (d, r) and true supports, least squares per user.

    ``support`` is a (t, d) boolean mask (or the true B, whose non-zeros are used) with
    the same number k of non-zeros per user. Exact, noiseless, iff n >= r + k.
    """

    def __init__(self, U, support):
        self.U = U
        self.support = support

    def fit(self, X, y):
        X, y = check_xy(X, y)
        t, n, d = X.shape
        U = check_subspace("U", self.U, d)
        mask = np.asarray(self.support) != 0
        if mask.shape != (t, d):
            raise ValueError(f"support must have shape (t, d) = {(t, d)}; got {mask.shape}")
        counts = mask.sum(axis=1)
        if np.any(counts != counts[0]):
            raise ValueError("support must have the same number of non-zeros for every user; "
                             f"got counts from {counts.min()} to {counts.max()}")
        self.sparsity = int(counts[0])
        check_rank_sparsity(U.shape[1], self.sparsity, d, n)
        S = np.sort(np.argsort(~mask, axis=1, kind="stable")[:, :self.sparsity], axis=1)
        coef, _ = refit(X, y, project_features(X, U), S)
        r = U.shape[1]
        B = np.zeros((t, d))
        np.put_along_axis(B, S, coef[:, r:], axis=1)
        return self._store(U, coef[:, :r], B)


class DPAMHTLRS(PersonalizedModel):
    """DP-AMHT-LRS estimator; see :func:`lowrank_sparse.dp_amht.dp_amht_lrs`.

    After ``fit``: ``U_``, ``W_``, ``B_``, ``theta_``, ``history_``, ``n_iter_`` and
    ``privacy_`` (:class:`lowrank_sparse.privacy.PrivacyReport`: ``epsilon_spent``,
    ``epsilon_target``, ``delta``, ``noise_multiplier``, ``clip``, the neighbouring
    relation and the releases). Only U is released; ``W_`` and ``B_`` are what each user
    computes locally from the released U.
    """

    def __init__(self, rank, sparsity, epsilon, delta, *, n_iter=10, y_scale=2.0,
                 clip_init=None, clip_grad=None, clip_gram=None, chunk_size=None, rng=None):
        self.rank = rank
        self.sparsity = sparsity
        self.epsilon = epsilon
        self.delta = delta
        self.n_iter = n_iter
        self.y_scale = y_scale
        self.clip_init = clip_init
        self.clip_grad = clip_grad
        self.clip_gram = clip_gram
        self.chunk_size = chunk_size
        self.rng = rng

    def fit(self, X, y):
        res = dp_amht_lrs(X, y, self.rank, self.sparsity, self.epsilon, self.delta,
                          n_iter=self.n_iter, y_scale=self.y_scale, clip_init=self.clip_init,
                          clip_grad=self.clip_grad, clip_gram=self.clip_gram,
                          chunk_size=self.chunk_size, rng=self.rng)
        self.privacy_ = res.extra["privacy"]
        return self._store(res.U, res.W, res.B, res.history, res.n_iter)
