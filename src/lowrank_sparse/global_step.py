"""The global step: the shared subspace U given every user's (w_i, b_i).

    minimize_U  sum_i omega_i ||z_i - X_i U w_i||^2,    z_i = y_i - X_i b_i,

a linear least-squares problem in vec(U) with d r unknowns. Its normal equations are

    sum_i omega_i X_i^T X_i U w_i w_i^T = sum_i omega_i X_i^T z_i w_i^T.

Two solvers, both summing over chunks of users so memory stays bounded:

- ``"cg"``: preconditioned conjugate gradients, matrix-free. One operator application
  is two passes over X (X_i V w_i, then X_i^T of that). Because E[X_i^T X_i] = n I, the
  operator is close to V -> V K with K = sum_i omega_i c_i w_i w_i^T, c_i =
  ||X_i||_F^2 / d; preconditioning by K^{-1} leaves only the fluctuation of the
  Gaussian design, of relative size about sqrt(d r / (t n)), so a handful of iterations
  reach machine precision, warm-started from the previous U.
- ``"direct"``: forms the (d r) x (d r) normal matrix from per-user Gram matrices
  X_i^T X_i and solves it by Cholesky. Exact, but costs t n d^2 + t r^2 d^2 flops and
  (d r)^2 memory: the reference the CG solver is tested against.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ._linalg import correlations, matvec, user_chunks, users_per_block


def _rhs(X, Z, W, omega, chunk_size):
    """(d, r) sum_i omega_i X_i^T z_i w_i^T."""
    d = X.shape[2]
    R = np.zeros((d, W.shape[1]))
    for sl in user_chunks(X.shape[0], chunk_size):
        R += correlations(X[sl], Z[sl]).T @ (omega[sl, None] * W[sl])
    return R


def _rhs_and_residual(X, Z, E, W, omega, chunk_size):
    """The right-hand side R and the residual R - sum_i omega_i X_i^T X_i U0 w_i w_i^T of
    the normal equations at U0 from e_i = z_i - X_i U0 w_i: two passes over X instead of
    three. (Two einsums; one einsum on the stacked (t, n, 2) is several times slower.)"""
    d, r = X.shape[2], W.shape[1]
    R, res = np.zeros((d, r)), np.zeros((d, r))
    for sl in user_chunks(X.shape[0], chunk_size):
        weighted = omega[sl, None] * W[sl]
        R += correlations(X[sl], Z[sl]).T @ weighted
        res += correlations(X[sl], E[sl]).T @ weighted
    return R, res


def _apply(X, V, W, omega, chunk_size):
    """(d, r) sum_i omega_i X_i^T X_i V w_i w_i^T."""
    out = np.zeros_like(V)
    for sl in user_chunks(X.shape[0], chunk_size):
        q = matvec(X[sl], W[sl] @ V.T) * omega[sl, None]  # (tc, n)
        out += correlations(X[sl], q).T @ W[sl]
    return out


def solve_cg(X, Z, W, omega, U0, *, chunk_size, col_sq=None, residual0=None, tol=1e-12,
             max_iter=100):
    """Preconditioned CG for the U normal equations, warm-started at U0 (d, r).

    col_sq: optional (t,) ||X_i||_F^2, reused across outer iterations.
    residual0: optional (t, n) z_i - X_i U0 w_i (the local step's residuals when U0 is
    the U it used), which saves a pass over X.
    Returns (U, iterations).
    """
    d = X.shape[2]
    if col_sq is None:
        col_sq = np.einsum("tnd,tnd->t", X, X)
    K = W.T @ ((omega * col_sq / d)[:, None] * W)  # (r, r) preconditioner
    K_cho = scipy.linalg.cho_factor(K + 1e-300 * np.eye(K.shape[0]))
    precond = lambda M: scipy.linalg.cho_solve(K_cho, M.T).T  # M K^{-1}
    if residual0 is None:
        R = _rhs(X, Z, W, omega, chunk_size)
        res = R - _apply(X, U0, W, omega, chunk_size)
    else:
        R, res = _rhs_and_residual(X, Z, residual0, W, omega, chunk_size)
    rhs_norm = np.linalg.norm(R)
    if rhs_norm == 0:
        return np.zeros_like(U0), 0
    U = U0.copy()
    z = precond(res)
    p = z.copy()
    rz = np.vdot(res, z)
    it = 0
    while np.linalg.norm(res) > tol * rhs_norm and it < max_iter:
        Ap = _apply(X, p, W, omega, chunk_size)
        pAp = np.vdot(p, Ap)
        if pAp <= 0:
            break
        alpha = rz / pAp
        U += alpha * p
        res -= alpha * Ap
        z = precond(res)
        rz_new = np.vdot(res, z)
        p = z + (rz_new / rz) * p
        rz = rz_new
        it += 1
    return U, it


def solve_direct(X, Z, W, omega, *, chunk_size):
    """Exact solve of the U normal equations by Cholesky on the (d r)^2 matrix."""
    t, n, d = X.shape
    r = W.shape[1]
    # G[a, j, b, l] = sum_i omega_i W_ia W_ib (X_i^T X_i)_jl  (vec(U) in column order)
    G = np.zeros((r * r, d * d))
    # Per-user Gram matrices are d x d each: bound their block to ~256 MB on its own.
    for sl in user_chunks(t, users_per_block(d * d, chunk_size)):
        Xc = X[sl]
        gram = (Xc.transpose(0, 2, 1) @ Xc).reshape(Xc.shape[0], d * d)
        coeff = (omega[sl, None, None] * W[sl, :, None] * W[sl, None, :]).reshape(-1, r * r)
        G += coeff.T @ gram
    G = G.reshape(r, r, d, d).transpose(0, 2, 1, 3).reshape(r * d, r * d)
    R = _rhs(X, Z, W, omega, chunk_size)
    vecU = scipy.linalg.solve(G, R.T.reshape(-1), assume_a="pos")
    return vecU.reshape(r, d).T
