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
from ._validation import check_int, check_positive, check_xy
from .estimators import AMHTLRS, DPAMHTLRS, PersonalizedModel
from .local import local_step


class LowRankOnly(AMHTLRS):
    """AMHT-LRS with sparsity 0: theta_i = U w_i only. Same keywords as AMHTLRS."""

    def __init__(self, rank, **kwargs):
        super().__init__(rank, 0, **kwargs)


class PrivateLowRankOnly(DPAMHTLRS):
    """DP-AMHT-LRS with sparsity 0 (private alternating minimization, Jain et al. 2021)."""

    def __init__(self, rank, epsilon, delta, **kwargs):
        super().__init__(rank, 0, epsilon, delta, **kwargs)


def _store_dense(model, theta):
    """Baselines without a shared subspace: U_ is (d, 0), W_ is (t, 0), B_ = theta."""
    t, d = theta.shape
    return model._store(np.zeros((d, 0)), np.zeros((t, 0)), theta)


class PerUserLeastSquares(PersonalizedModel):
    """Least squares for every user separately (minimum-norm solution when n < d)."""

    def fit(self, X, y):
        X, y = check_xy(X, y)
        t, n, d = X.shape
        if n >= d:
            Xt = X.transpose(0, 2, 1)
            theta = batched_solve(Xt @ X, (Xt @ y[..., None])[..., 0])
        else:  # theta_i = X_i^T (X_i X_i^T)^{-1} y_i
            alpha = batched_solve(X @ X.transpose(0, 2, 1), y)
            theta = np.einsum("tnd,tn->td", X, alpha)
        return _store_dense(self, theta)


class PerUserSparse(PersonalizedModel):
    """k-sparse least squares for every user separately, by the OMP-seeded hard
    thresholding pursuit of the AMHT-LRS local step with no shared subspace."""

    def __init__(self, sparsity):
        self.sparsity = sparsity

    def fit(self, X, y):
        X, y = check_xy(X, y)
        t, n, d = X.shape
        k = check_int("sparsity", self.sparsity, low=1, high=min(n, d))
        fit = local_step(X, y, np.zeros((d, 0)), k)
        return _store_dense(self, fit.sparse(d))


def convex_low_rank_sparse(X, y, lam_nuclear, lam_l1, *, n_iter=500, tol=1e-9, init=None):
    """Accelerated proximal gradient (FISTA) for

        minimize_{L, S}  (1 / (2 n)) sum_i ||y_i - X_i (l_i + s_i)||^2
                         + lam_nuclear ||L||_* + lam_l1 ||S||_1,

    L, S: (t, d), rows l_i, s_i. Returns (L, S, iterations).
    """
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
    """

    def __init__(self, lam_nuclear=None, lam_l1=None, *, grid=(0.3, 0.1, 0.03), holdout=0.2,
                 n_iter=500):
        self.lam_nuclear = lam_nuclear
        self.lam_l1 = lam_l1
        self.grid = grid
        self.holdout = holdout
        self.n_iter = n_iter

    def fit(self, X, y):
        X, y = check_xy(X, y)
        t, n, d = X.shape
        if self.lam_nuclear is not None and self.lam_l1 is not None:
            lam = (check_positive("lam_nuclear", self.lam_nuclear),
                   check_positive("lam_l1", self.lam_l1))
        else:
            lam = self._select(X, y)
        L, S, it = convex_low_rank_sparse(X, y, *lam, n_iter=self.n_iter)
        self.lam_ = lam
        self._store(np.zeros((d, 0)), np.zeros((t, 0)), L + S, n_iter=it)
        self.L_, self.S_ = L, S
        return self

    def _select(self, X, y):
        t, n, d = X.shape
        n_fit = n - max(1, int(round(self.holdout * n)))
        if n_fit < 1:
            raise ValueError(f"holdout leaves no samples to fit: n = {n}, holdout = {self.holdout}")
        Xf, yf, Xh, yh = X[:, :n_fit], y[:, :n_fit], X[:, n_fit:], y[:, n_fit:]
        grad0 = np.einsum("tnd,tn->td", Xf, yf) / n_fit
        nuc_max, l1_max = np.linalg.norm(grad0, 2), np.max(np.abs(grad0))
        best, best_err = None, np.inf
        for a in self.grid:
            for b in self.grid:
                L, S, _ = convex_low_rank_sparse(Xf, yf, a * nuc_max, b * l1_max,
                                                 n_iter=self.n_iter // 2)
                err = np.mean((matvec(Xh, L + S) - yh) ** 2)
                if err < best_err:
                    best, best_err = (a * nuc_max, b * l1_max), err
        return best
