"""Baselines with the fit interface of AMHT-LRS: what a researcher compares it with.

- :class:`LowRankOnly`: alternating minimization for a shared subspace only (k = 0), as
  in FedRep / AltMin; the error floor of ignoring the sparse part.
- :class:`PerUserLeastSquares`: no sharing, least squares per user (minimum-norm when
  n < d); exact, noiseless, iff n >= d.
- :class:`PerUserSparse`: no sharing, k-sparse regression per user (the local step of
  AMHT-LRS with an empty subspace).
- :class:`ConvexLowRankSparse`: nuclear norm + l1 penalties on Theta = L + S by
  accelerated proximal gradient.
- :class:`PrivateLowRankOnly`: DP-AMHT-LRS with k = 0 (noisy alternating minimization in
  the style of Jain et al. 2021), through the same privacy accounting.
"""

from __future__ import annotations

import numpy as np

from ._linalg import batched_solve, matvec
from ._validation import check_int, check_positive, check_xy, in_unit_scale
from .estimators import LowRankOnly, PersonalizedModel, PrivateLowRankOnly
from .local import local_step

__all__ = ["ConvexLowRankSparse", "LowRankOnly", "PerUserLeastSquares", "PerUserSparse",
           "PrivateLowRankOnly", "convex_low_rank_sparse"]


def _store_dense(model, theta, sparsity=0):
    """Baselines without a shared subspace: U_ is (d, 0), W_ is (t, 0), B_ = theta."""
    t, d = theta.shape
    return model._store(np.zeros((d, 0)), np.zeros((t, 0)), theta, sparsity=sparsity)


class PerUserLeastSquares(PersonalizedModel):
    """Least squares for every user separately (minimum-norm solution when n < d)."""

    def __init__(self):
        pass

    def fit(self, X, y):
        X, y = check_xy(X, y)
        t, n, d = X.shape
        X, y, x_scale, y_scale = in_unit_scale(X, y)
        if n >= d:
            Xt = X.transpose(0, 2, 1)
            theta = batched_solve(Xt @ X, (Xt @ y[..., None])[..., 0])
        else:  # theta_i = X_i^T (X_i X_i^T)^{-1} y_i
            alpha = batched_solve(X @ X.transpose(0, 2, 1), y)
            theta = np.einsum("tnd,tn->td", X, alpha)
        return _store_dense(self, theta * (y_scale / x_scale))


class PerUserSparse(PersonalizedModel):
    """k-sparse least squares for every user separately, by the OMP-seeded hard
    thresholding pursuit of the AMHT-LRS local step with no shared subspace."""

    def __init__(self, sparsity, *, n_starts=1, htp_iter=20, backend="numba"):
        self.sparsity = sparsity
        self.n_starts = n_starts
        self.htp_iter = htp_iter
        self.backend = backend

    def fit(self, X, y):
        X, y = check_xy(X, y)
        t, n, d = X.shape
        k = check_int("sparsity", self.sparsity, low=1, high=min(n, d))
        X, y, x_scale, y_scale = in_unit_scale(X, y)
        fit = local_step(X, y, np.zeros((d, 0)), k,
                         n_starts=check_int("n_starts", self.n_starts, low=1),
                         max_iter=check_int("htp_iter", self.htp_iter, low=1),
                         backend=self.backend).rescaled(x_scale, y_scale)
        return _store_dense(self, fit.sparse(d), sparsity=k)


def convex_low_rank_sparse(X, y, lam_nuclear, lam_l1, *, n_iter=500, tol=1e-9, init=None):
    """Accelerated proximal gradient (FISTA) for

        minimize_{L, S}  (1 / (2 n)) sum_i ||y_i - X_i (l_i + s_i)||^2
                         + lam_nuclear ||L||_* + lam_l1 ||S||_1,

    L, S: (t, d), rows l_i, s_i. Returns (L, S, iterations).
    """
    n_iter = check_int("n_iter", n_iter, low=1)
    t, n, d = X.shape
    # The smooth part in (L, S) jointly has Lipschitz constant 2 max_i ||X_i||_2^2 / n.
    lip = 2 * np.max(np.linalg.norm(X, 2, axis=(1, 2))) ** 2 / n
    step = 1.0 / lip
    L, S = (np.zeros((t, d)), np.zeros((t, d))) if init is None else init
    L_prev, S_prev, momentum = L, S, 1.0
    for it in range(1, n_iter + 1):
        grad = np.einsum("tnd,tn->td", X, matvec(X, L + S) - y) / n
        u, sv, vt = np.linalg.svd(L - step * grad, full_matrices=False)
        L_new = (u * np.maximum(sv - step * lam_nuclear, 0)) @ vt
        Z = S - step * grad
        S_new = np.sign(Z) * np.maximum(np.abs(Z) - step * lam_l1, 0)
        change = np.linalg.norm(L_new - L_prev) + np.linalg.norm(S_new - S_prev)
        scale = np.linalg.norm(L_new) + np.linalg.norm(S_new) + 1e-300
        momentum_new = (1 + np.sqrt(1 + 4 * momentum ** 2)) / 2
        beta = (momentum - 1) / momentum_new
        L, S = L_new + beta * (L_new - L_prev), S_new + beta * (S_new - S_prev)
        L_prev, S_prev, momentum = L_new, S_new, momentum_new
        if change <= tol * scale:
            break
    return L_prev, S_prev, it


class ConvexLowRankSparse(PersonalizedModel):
    """Convex relaxation: nuclear norm on L plus l1 on S, Theta = L + S.

    Penalties: unless given, chosen on a coarse grid by held-out error: the last
    ``holdout`` fraction of every user's samples is held out, the penalties are
    ``lam_max * factor`` for factors in ``grid`` (lam_max the smallest penalty that keeps
    the solution at zero: ||grad at 0||_2 for the nuclear norm, its largest entry for
    l1), the pair with the smallest held-out squared error is refitted on all samples.
    Penalties given explicitly are in the units of the data; ``lam_`` reports the ones
    used, in the same units. ``n_iter`` and ``tol`` as in :func:`convex_low_rank_sparse`.
    """

    def __init__(self, lam_nuclear=None, lam_l1=None, *, grid=(0.3, 0.1, 0.03), holdout=0.2,
                 n_iter=500, tol=1e-9):
        self.lam_nuclear = lam_nuclear
        self.lam_l1 = lam_l1
        self.grid = grid
        self.holdout = holdout
        self.n_iter = n_iter
        self.tol = tol

    def fit(self, X, y):
        X, y = check_xy(X, y)
        t, n, d = X.shape
        n_iter = check_int("n_iter", self.n_iter, low=1)
        tol = check_positive("tol", self.tol, allow_zero=True)
        # In units where X and y are O(1); the objective's penalties scale by 1 / (sx sy).
        X, y, x_scale, y_scale = in_unit_scale(X, y)
        if self.lam_nuclear is not None and self.lam_l1 is not None:
            lam = (check_positive("lam_nuclear", self.lam_nuclear) / (x_scale * y_scale),
                   check_positive("lam_l1", self.lam_l1) / (x_scale * y_scale))
        else:
            lam = self._select(X, y, n_iter)
        L, S, it = convex_low_rank_sparse(X, y, *lam, n_iter=n_iter, tol=tol)
        unit = y_scale / x_scale
        self.lam_ = tuple(value * x_scale * y_scale for value in lam)
        self._store(np.zeros((d, 0)), np.zeros((t, 0)), (L + S) * unit, n_iter=it)
        self.L_, self.S_ = L * unit, S * unit
        return self

    def _select(self, X, y, n_iter):
        t, n, d = X.shape
        grid = tuple(self.grid) if np.ndim(self.grid) == 1 else ()
        if not grid or not all(isinstance(g, (int, float)) and g > 0 for g in grid):
            raise ValueError(f"grid must be a non-empty sequence of factors > 0; got {self.grid!r}")
        if not (isinstance(self.holdout, (int, float)) and 0 < self.holdout < 1):
            raise ValueError(f"holdout must be in (0, 1); got {self.holdout!r}")
        n_fit = n - max(1, int(round(self.holdout * n)))
        if n_fit < 1:
            raise ValueError(f"holdout leaves no samples to fit: n = {n}, holdout = {self.holdout}")
        Xf, yf, Xh, yh = X[:, :n_fit], y[:, :n_fit], X[:, n_fit:], y[:, n_fit:]
        grad0 = np.einsum("tnd,tn->td", Xf, yf) / n_fit
        nuc_max, l1_max = np.linalg.norm(grad0, 2), np.max(np.abs(grad0))
        best, best_err = None, np.inf
        for a in grid:
            for b in grid:
                L, S, _ = convex_low_rank_sparse(Xf, yf, a * nuc_max, b * l1_max,
                                                 n_iter=max(1, n_iter // 2))
                err = np.mean((matvec(Xh, L + S) - yh) ** 2)
                if err < best_err:
                    best, best_err = (a * nuc_max, b * l1_max), err
        return best
