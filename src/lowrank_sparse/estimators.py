"""Estimator classes: scikit-learn-shaped wrappers with one fit interface.

Every estimator stores its hyper-parameters in ``__init__`` under the names of the
function it wraps, unchanged (nothing is modified in ``fit``); learns ``U_``, ``W_``,
``B_``, ``theta_`` in ``fit(X, y)`` (X: (t, n, d), y: (t, n)) and returns ``self``.
``get_params``/``set_params`` follow scikit-learn's protocol, so ``sklearn.base.clone``
and its search tools work; scikit-learn itself is not a dependency (the protocol is a
few lines, the package is large).
"""

from __future__ import annotations

import inspect

import numpy as np

from ._linalg import project_features
from ._validation import (check_array, check_int, check_rank_sparsity, check_subspace,
                          check_xy, in_unit_scale)
from .amht import amht_lrs
from .dp_amht import dp_amht_lrs
from .local import LocalFit, local_step, refit
from .robust import Huber


class Estimator:
    """Hyper-parameters as in scikit-learn: the keyword arguments of ``__init__``."""

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(name for name, p in signature.parameters.items()
                      if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))

    def get_params(self, deep=True) -> dict:
        """The hyper-parameters, as given to ``__init__`` (``deep`` is accepted for
        scikit-learn's protocol; no parameter is itself an estimator)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set hyper-parameters by name; returns self."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{name!r} is not a parameter of {type(self).__name__}; "
                                 f"valid parameters: {valid}")
            setattr(self, name, value)
        return self

    def __repr__(self):
        args = ", ".join(f"{name}={value!r}" for name, value in self.get_params().items())
        return f"{type(self).__name__}({args})"


class PersonalizedModel(Estimator):
    """Shared behaviour: prediction and personalization of new users with U frozen."""

    #: Fits in units where X and y are O(1) (see :func:`lowrank_sparse._validation.in_unit_scale`).
    _scale_invariant = True

    def _store(self, U, W, B, history=None, n_iter=0, sparsity=0):
        self.U_, self.W_, self.B_ = U, W, B
        self.theta_ = W @ U.T + B
        self.history_ = history
        self.n_iter_ = n_iter
        self.sparsity_ = sparsity
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
        """Fit (w, b) for new users with U frozen: one local step, with this estimator's
        local-step options (``n_starts``, ``htp_iter``, ``backend`` where it has them).

        X_new: (t_new, m, d), y_new: (t_new, m). Returns a LocalFit (W, support, values),
        in the units of X_new and y_new.
        """
        self._check_fitted()
        X_new, y_new = check_xy(X_new, y_new)
        d, r = self.U_.shape
        if r == 0:
            raise ValueError(f"{type(self).__name__} shares no subspace between users, so "
                             "there is nothing to personalize with; fit the new users directly")
        if X_new.shape[2] != d:
            raise ValueError(f"X_new must have d = {d} features; got {X_new.shape[2]}")
        check_rank_sparsity(r, self.sparsity_, d, X_new.shape[1])
        if not self._scale_invariant:
            return local_step(X_new, y_new, self.U_, self.sparsity_, **self._local_options())
        X_unit, y_unit, x_scale, y_scale = in_unit_scale(X_new, y_new)
        fit = local_step(X_unit, y_unit, self.U_, self.sparsity_, **self._local_options())
        return fit.rescaled(x_scale, y_scale)

    def _local_options(self) -> dict:
        options = {"n_starts": getattr(self, "n_starts", 1),
                   "max_iter": getattr(self, "htp_iter", 20),
                   "backend": getattr(self, "backend", "numba")}
        return options


class AMHTLRS(PersonalizedModel):
    """AMHT-LRS estimator; see :func:`lowrank_sparse.amht.amht_lrs` for the parameters
    (every keyword of the function but the per-fit ``callback``, which ``fit`` takes).

    Attributes after ``fit``: ``U_`` (d, r), ``W_`` (t, r), ``B_`` (t, d), ``theta_``
    (t, d), ``history_`` (:class:`History`), ``n_iter_``, ``converged_``.
    """

    def __init__(self, rank, sparsity, *, n_iter=100, tol=1e-10, init="moments",
                 fresh_samples=False, robust="auto", n_starts=1, htp_iter=20, solver="cg",
                 chunk_size=None, backend="numba", rng=None):
        self.rank = rank
        self.sparsity = sparsity
        self.n_iter = n_iter
        self.tol = tol
        self.init = init
        self.fresh_samples = fresh_samples
        self.robust = robust
        self.n_starts = n_starts
        self.htp_iter = htp_iter
        self.solver = solver
        self.chunk_size = chunk_size
        self.backend = backend
        self.rng = rng

    def _sparsity(self):
        return self.sparsity

    def fit(self, X, y, callback=None):
        """Fit; ``callback(iteration, U)`` is called after each global step."""
        res = amht_lrs(X, y, self.rank, self._sparsity(), n_iter=self.n_iter, tol=self.tol,
                       init=self.init, fresh_samples=self.fresh_samples, robust=self.robust,
                       n_starts=self.n_starts, htp_iter=self.htp_iter, solver=self.solver,
                       chunk_size=self.chunk_size, backend=self.backend, callback=callback,
                       rng=self.rng)
        self.converged_ = res.converged
        return self._store(res.U, res.W, res.B, res.history, res.n_iter, self._sparsity())


class LowRankOnly(AMHTLRS):
    """AMHT-LRS with sparsity 0: theta_i = U w_i only (alternating minimization for a
    shared subspace, as in FedRep / AltMin). The keywords of AMHTLRS but ``sparsity``;
    ``robust`` defaults to ``Huber()`` (AMHTLRS's former default), so this baseline's
    results are unchanged by AMHTLRS's ``"auto"`` rule: with sparsity 0 on data with
    sparse parts no user is fitted exactly and there is no cluster to keep."""

    def __init__(self, rank, *, n_iter=100, tol=1e-10, init="moments", fresh_samples=False,
                 robust=Huber(), n_starts=1, htp_iter=20, solver="cg", chunk_size=None,
                 backend="numba", rng=None):
        self.rank = rank
        self.n_iter = n_iter
        self.tol = tol
        self.init = init
        self.fresh_samples = fresh_samples
        self.robust = robust
        self.n_starts = n_starts
        self.htp_iter = htp_iter
        self.solver = solver
        self.chunk_size = chunk_size
        self.backend = backend
        self.rng = rng

    def _sparsity(self):
        return 0


class KnownSubspace(PersonalizedModel):
    """Reference: the AMHT-LRS local step run once with the true subspace ``U`` (d, r,
    orthonormal columns). Isolates the cost of finding supports from the cost of
    learning U. ``n_starts``, ``htp_iter`` and ``backend`` as in
    :func:`lowrank_sparse.amht.amht_lrs`."""

    def __init__(self, U, sparsity, *, n_starts=1, htp_iter=20, backend="numba"):
        self.U = U
        self.sparsity = sparsity
        self.n_starts = n_starts
        self.htp_iter = htp_iter
        self.backend = backend

    def fit(self, X, y):
        X, y = check_xy(X, y)
        t, n, d = X.shape
        U = check_subspace("U", self.U, d, orthonormal=True)
        sparsity = check_rank_sparsity(U.shape[1], self.sparsity, d, n)[1]
        X, y, x_scale, y_scale = in_unit_scale(X, y)
        fit = local_step(X, y, U, sparsity, n_starts=check_int("n_starts", self.n_starts, low=1),
                         max_iter=check_int("htp_iter", self.htp_iter, low=1),
                         backend=self.backend).rescaled(x_scale, y_scale)
        return self._store(U, fit.W, fit.sparse(d), sparsity=sparsity)


class Oracle(PersonalizedModel):
    """Reference: true subspace ``U`` (d, r, orthonormal) and true supports, least
    squares per user.

    ``support`` is a (t, d) boolean mask (or the true B, whose non-zeros are used) with
    the same number k of non-zeros per user (learned as ``sparsity_``). Exact,
    noiseless, iff n >= r + k.
    """

    def __init__(self, U, support):
        self.U = U
        self.support = support

    def fit(self, X, y):
        X, y = check_xy(X, y)
        t, n, d = X.shape
        U = check_subspace("U", self.U, d, orthonormal=True)
        mask = np.asarray(self.support) != 0
        if mask.shape != (t, d):
            raise ValueError(f"support must have shape (t, d) = {(t, d)}; got {mask.shape}")
        counts = mask.sum(axis=1)
        if np.any(counts != counts[0]):
            raise ValueError("support must have the same number of non-zeros for every user; "
                             f"got counts from {counts.min()} to {counts.max()}")
        sparsity = int(counts[0])
        check_rank_sparsity(U.shape[1], sparsity, d, n)
        X, y, x_scale, y_scale = in_unit_scale(X, y)
        unit = y_scale / x_scale
        S = np.sort(np.argsort(~mask, axis=1, kind="stable")[:, :sparsity], axis=1)
        coef, _ = refit(X, y, project_features(X, U), S)
        r = U.shape[1]
        B = np.zeros((t, d))
        np.put_along_axis(B, S, coef[:, r:] * unit, axis=1)
        return self._store(U, coef[:, :r] * unit, B, sparsity=sparsity)


class DPAMHTLRS(PersonalizedModel):
    """DP-AMHT-LRS estimator; see :func:`lowrank_sparse.dp_amht.dp_amht_lrs` for the
    parameters (every keyword of the function).

    After ``fit``: ``U_`` (released), ``W_``, ``B_``, ``theta_`` (each user's own, computed
    locally from the released U: the billboard model), ``history_``
    (:class:`lowrank_sparse.dp_amht.PrivateHistory`, from released values), ``n_iter_``,
    ``privacy_`` (:class:`lowrank_sparse.privacy.PrivacyReport`: ``epsilon_spent``,
    ``epsilon_target``, ``delta``, ``noise_multiplier``, ``clip``, the neighbouring
    relation and the releases) and ``diagnostics_not_private_``
    (:class:`lowrank_sparse.dp_amht.NotPrivateDiagnostics`: exact statistics of the
    training data for debugging; NOT private, never release them).

    Unlike the non-private estimators a private fit is not invariant to the scale of
    the data: its clip bounds are in the data's units (``y_scale``, ``clip_*``), public
    choices that a data-dependent rescaling would turn into a leak. ``personalize``
    likewise fits each new user on its own data in its own units.
    """

    _scale_invariant = False

    def __init__(self, rank, sparsity, epsilon, delta, *, n_iter=10, y_scale=2.0,
                 clip_init=None, clip_grad=None, clip_gram=None, n_starts=1, htp_iter=20,
                 chunk_size=None, backend="numba", rng=None):
        self.rank = rank
        self.sparsity = sparsity
        self.epsilon = epsilon
        self.delta = delta
        self.n_iter = n_iter
        self.y_scale = y_scale
        self.clip_init = clip_init
        self.clip_grad = clip_grad
        self.clip_gram = clip_gram
        self.n_starts = n_starts
        self.htp_iter = htp_iter
        self.chunk_size = chunk_size
        self.backend = backend
        self.rng = rng

    def _sparsity(self):
        return self.sparsity

    def fit(self, X, y):
        res = dp_amht_lrs(X, y, self.rank, self._sparsity(), self.epsilon, self.delta,
                          n_iter=self.n_iter, y_scale=self.y_scale, clip_init=self.clip_init,
                          clip_grad=self.clip_grad, clip_gram=self.clip_gram,
                          n_starts=self.n_starts, htp_iter=self.htp_iter,
                          chunk_size=self.chunk_size, backend=self.backend, rng=self.rng)
        self.privacy_ = res.extra["privacy"]
        self.diagnostics_not_private_ = res.extra["not_private"]
        return self._store(res.U, res.W, res.B, res.history, res.n_iter, self._sparsity())

class PrivateLowRankOnly(DPAMHTLRS):
    """DP-AMHT-LRS with sparsity 0 (private alternating minimization, Jain et al. 2021).
    The keywords of DPAMHTLRS but ``sparsity``."""

    def __init__(self, rank, epsilon, delta, *, n_iter=10, y_scale=2.0, clip_init=None,
                 clip_grad=None, clip_gram=None, n_starts=1, htp_iter=20, chunk_size=None,
                 backend="numba", rng=None):
        self.rank = rank
        self.epsilon = epsilon
        self.delta = delta
        self.n_iter = n_iter
        self.y_scale = y_scale
        self.clip_init = clip_init
        self.clip_grad = clip_grad
        self.clip_gram = clip_gram
        self.n_starts = n_starts
        self.htp_iter = htp_iter
        self.chunk_size = chunk_size
        self.backend = backend
        self.rng = rng

    def _sparsity(self):
        return 0
