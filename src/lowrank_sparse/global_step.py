"""The global step: the shared subspace U given every user's (w_i, b_i).

    minimize_U  sum_i omega_i ||z_i - X_i U w_i||^2,    z_i = y_i - X_i b_i,

a linear least-squares problem in vec(U) with d r unknowns. Its normal equations are

    sum_i omega_i X_i^T X_i U w_i w_i^T = sum_i omega_i X_i^T z_i w_i^T.

Two solvers, both summing over chunks of users so memory stays bounded:

- ``"cg"``: preconditioned conjugate gradients, matrix-free. One operator application
  is X_i V w_i, then X_i^T of that: one compiled read of each X_i with the numba
  backend, two batched passes with numpy. Because E[X_i^T X_i] = n I, the
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

from ._linalg import (correlations, default_chunk_size, matvec, storage, user_chunks,
                      users_per_block)


def normal_rhs(X, Z, W, omega, chunk_size=None):
    """(d, r) sum_i omega_i X_i^T z_i w_i^T, the right-hand side of the normal equations."""
    d = X.shape[2]
    chunk_size = chunk_size or default_chunk_size(X.shape[1], d)
    R = np.zeros((d, W.shape[1]))
    for sl in user_chunks(X.shape[0], chunk_size):
        R += correlations(X[sl], Z[sl]).T @ (omega[sl, None] * W[sl])
    return R


def _apply_compiled(X, V, W, omega):
    """As :func:`_apply`, reading each X_i from memory once."""
    from ._kernels import normal_operator
    as64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)
    return normal_operator(storage(X), as64(V.T), as64(W), as64(omega)).sum(axis=0).T.copy()


def _apply(X, V, W, omega, chunk_size):
    """(d, r) sum_i omega_i X_i^T X_i V w_i w_i^T."""
    out = np.zeros_like(V)
    for sl in user_chunks(X.shape[0], chunk_size):
        q = matvec(X[sl], W[sl] @ V.T) * omega[sl, None]  # (tc, n)
        out += correlations(X[sl], q).T @ W[sl]
    return out


#: Each CG solve cuts the estimated error of U by at least this factor.
CG_MIN_REDUCTION = 0.1


def solve_cg(X, W, omega, U0, *, rhs=None, residual0=None, chunk_size=None, col_sq=None,
             tol=1e-12, max_iter=100, backend="numba"):
    """Preconditioned CG for the U normal equations, warm-started at U0 (d, r).

    Give either rhs, the (d, r) right-hand side sum_i omega_i X_i^T z_i w_i^T
    (:func:`normal_rhs`), or residual0, the residual of the normal equations at U0,
    sum_i omega_i X_i^T (z_i - X_i U0 w_i) w_i^T (from a local fit's residual
    correlations when U0 is the U it used), which saves a pass over X.
    Stops when the preconditioned residual, the estimated error of U, is below
    tol * ||U0||_F (tol alone if U0 = 0) and below CG_MIN_REDUCTION times its value at U0.
    col_sq: optional (t,) ||X_i||_F^2, reused across outer iterations.
    chunk_size: users per block of the numpy backend.
    backend: "numba" (one compiled read of X per operator application) or "numpy" (the
    batched reference, two passes).
    Returns (U, iterations, converged): converged is False if CG stopped at ``max_iter``
    or broke down (p^T A p <= 0, a singular normal operator) above the tolerance.
    """
    if (rhs is None) == (residual0 is None):
        raise ValueError("solve_cg needs exactly one of rhs and residual0")
    d = X.shape[2]
    if backend == "numba":
        apply = lambda V: _apply_compiled(X, V, W, omega)
    else:
        chunk_size = chunk_size or default_chunk_size(*X.shape[1:])
        apply = lambda V: _apply(X, V, W, omega, chunk_size)
    if col_sq is None:
        col_sq = np.einsum("tnd,tnd->t", X, X, dtype=np.float64)
    K = W.T @ ((omega * col_sq / d)[:, None] * W)  # (r, r) preconditioner
    r = K.shape[0]
    # K^{-1} once (r x r, by Cholesky: LinAlgError unless K is positive definite), then
    # preconditioning is one small product. numpy's calls: scipy's wrappers cost ~30 us
    # each, a fixed cost of every U step.
    L_inv = np.linalg.inv(np.linalg.cholesky(K + 1e-300 * np.eye(r)))
    K_inv = L_inv.T @ L_inv
    precond = lambda M: M @ K_inv
    res = rhs - apply(U0) if residual0 is None else residual0.copy()
    U = U0.copy()
    z = precond(res)
    # At least a tenfold cut of the estimated error as well: a warm start already within
    # tol would leave U unchanged, and the caller would read the zero change as convergence
    # (seen: a moment initialization 6e-4 from U* "converged" at once).
    threshold = min(tol * (np.linalg.norm(U0) or 1.0), CG_MIN_REDUCTION * np.linalg.norm(z))
    p = z.copy()
    rz = np.vdot(res, z)
    it = 0
    while np.linalg.norm(z) > threshold and it < max_iter:
        Ap = apply(p)
        pAp = np.vdot(p, Ap)
        if pAp <= 0:
            return U, it, False
        alpha = rz / pAp
        U += alpha * p
        res -= alpha * Ap
        z = precond(res)
        rz_new = np.vdot(res, z)
        p = z + (rz_new / rz) * p
        rz = rz_new
        it += 1
    return U, it, bool(np.linalg.norm(z) <= threshold)


def solve_direct(X, Z, W, omega, *, chunk_size=None):
    """Exact solve of the U normal equations by Cholesky on the (d r)^2 matrix."""
    t, n, d = X.shape
    r = W.shape[1]
    chunk_size = chunk_size or default_chunk_size(n, d)
    # G[a, j, b, l] = sum_i omega_i W_ia W_ib (X_i^T X_i)_jl  (vec(U) in column order)
    G = np.zeros((r * r, d * d))
    # Per-user Gram matrices are d x d each: bound their block to ~256 MB on its own.
    for sl in user_chunks(t, users_per_block(d * d, chunk_size)):
        Xc = X[sl].astype(np.float64, copy=False)
        gram = (Xc.transpose(0, 2, 1) @ Xc).reshape(Xc.shape[0], d * d)
        coeff = (omega[sl, None, None] * W[sl, :, None] * W[sl, None, :]).reshape(-1, r * r)
        G += coeff.T @ gram
    G = G.reshape(r, r, d, d).transpose(0, 2, 1, 3).reshape(r * d, r * d)
    R = normal_rhs(X, Z, W, omega, chunk_size)
    import scipy.linalg  # here: importing it costs ~0.3 s, a tenth of a short pipeline job

    vecU = scipy.linalg.solve(G, R.T.reshape(-1), assume_a="pos")
    return vecU.reshape(r, d).T
