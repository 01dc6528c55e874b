"""Compiled (numba) per-user kernels for the hot paths of an outer iteration.

The numpy implementations in :mod:`lowrank_sparse.local` and
:mod:`lowrank_sparse.global_step` batch every operation over the user axis, so each
operation is its own pass over X: an outer iteration at t=1e5 costs ~20 passes. Here one
loop over users does all of a user's work while X_i (n x d, 16 KB at n=20, d=100) is in
cache: A_i = X_i U, its orthonormal basis, the OMP starts, hard thresholding pursuit
with its refits, and the user's contributions to the U step's normal equations.

The arithmetic is the numpy reference's (:func:`lowrank_sparse.local._solve_block`),
step for step; they differ by rounding (a Cholesky instead of an LU solve, modified
Gram-Schmidt instead of Householder QR), which ``tests/test_kernels.py`` bounds.

Determinism: users are independent, and sums over users are taken in blocks of
``BLOCK`` users fixed by t alone, then added in block order, so results do not depend on
the number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Users per block of the parallel loops (and of the partial sums over users).
BLOCK = 256

# Reassociation lets reductions vectorize; no "nnan"/"ninf": -inf marks chosen columns.
_FAST = {"reassoc", "contract"}


def _jit(parallel=False):
    return njit(cache=True, fastmath=_FAST, parallel=parallel, nogil=True)


@_jit()
def _dot(u, v):
    """u . v without a temporary (array expressions allocate inside a kernel)."""
    s = 0.0
    for a in range(u.shape[0]):
        s += u[a] * v[a]
    return s


@_jit()
def _lowrank_features(Xi, Ut, At):
    """A_i^T = (X_i U)^T (r, n) from U^T (r, d): dot products along the contiguous d."""
    n, d = Xi.shape
    for a in range(n):
        for c in range(Ut.shape[0]):
            s = 0.0
            for j in range(d):
                s += Xi[a, j] * Ut[c, j]
            At[c, a] = s


@_jit()
def _orthonormal_basis(At, Qt):
    """Rows of Qt (r, n): an orthonormal basis of range(A_i) by modified Gram-Schmidt,
    twice (so Q is orthonormal to rounding); a vanishing column gives a zero row (the
    projection then simply ignores it)."""
    r, n = At.shape
    for c in range(r):
        Qt[c] = At[c]
        for _ in range(2):
            for p in range(c):
                s = 0.0
                for a in range(n):
                    s += Qt[p, a] * Qt[c, a]
                for a in range(n):
                    Qt[c, a] -= s * Qt[p, a]
        norm = np.sqrt(_dot(Qt[c], Qt[c]))
        scale = 1.0 / norm if norm > 1e-300 else 0.0
        for a in range(n):
            Qt[c, a] *= scale


@_jit()
def _project_out(Qt, v, out):
    """out = v - Q Q^T v."""
    out[:] = v
    for c in range(Qt.shape[0]):
        s = 0.0
        for a in range(v.shape[0]):
            s += Qt[c, a] * v[a]
        for a in range(v.shape[0]):
            out[a] -= s * Qt[c, a]


@_jit()
def _correlate(Xi, v, g):
    """g = X_i^T v."""
    n, d = Xi.shape
    g[:] = 0.0
    for a in range(n):
        va = v[a]
        for j in range(d):
            g[j] += Xi[a, j] * va


@_jit()
def _top_k(score, k, S, best):
    """S = sorted indices of the k largest score (first index on ties), in one pass:
    an insertion list of the k best so far (best: their scores, descending)."""
    for m in range(k):
        best[m] = -np.inf
        S[m] = -1
    for j in range(score.shape[0]):
        s = score[j]
        if s > best[k - 1] or S[k - 1] < 0:
            m = k - 1
            while m > 0 and (s > best[m - 1] or S[m - 1] < 0):
                best[m] = best[m - 1]
                S[m] = S[m - 1]
                m -= 1
            best[m] = s
            S[m] = j
    S[:k].sort()


@_jit()
def _solve_spd(G, h, x, L):
    """x = G^{-1} h for symmetric PSD G (m x m) by Cholesky; falls back to the
    pseudo-inverse (as numpy's hermitian pinv) when G is singular."""
    m = G.shape[0]
    ok = True
    for c in range(m):
        s = G[c, c]
        for p in range(c):
            s -= L[c, p] * L[c, p]
        if not s > 0.0:
            ok = False
            break
        L[c, c] = np.sqrt(s)
        for a in range(c + 1, m):
            s = G[a, c]
            for p in range(c):
                s -= L[a, p] * L[c, p]
            L[a, c] = s / L[c, c]
    if ok:
        for a in range(m):  # L z = h
            s = h[a]
            for p in range(a):
                s -= L[a, p] * x[p]
            x[a] = s / L[a, a]
        for a in range(m - 1, -1, -1):  # L^T x = z
            s = x[a]
            for p in range(a + 1, m):
                s -= L[p, a] * x[p]
            x[a] = s / L[a, a]
        return
    vals, vecs = np.linalg.eigh(G)
    cutoff = 1e-15 * np.max(np.abs(vals))
    x[:] = 0.0
    for c in range(m):
        if abs(vals[c]) > cutoff:
            s = 0.0
            for a in range(m):
                s += vecs[a, c] * h[a]
            s /= vals[c]
            for a in range(m):
                x[a] += s * vecs[a, c]


@_jit()
def _work(n, d, r, k):
    """Work arrays of one thread: M^T rows (m, n) [A_i^T; X_i[:, S]^T], Gram G, h,
    Cholesky factor L, coef, residual, gradient g, b, score, top-k buffer, T, S_new,
    two n-vectors."""
    m = r + k
    kk = max(k, 1)
    return (np.empty((m, n)), np.empty((m, m)), np.empty(m), np.zeros((m, m)), np.empty(m),
            np.empty(n), np.empty(d), np.empty(d), np.empty(d), np.empty(kk),
            np.empty(kk, dtype=np.int64), np.empty(kk, dtype=np.int64), np.empty(n),
            np.empty(n))


@_jit()
def _prepare(At, yi, w):
    """Store A_i^T in the first r rows of M^T and the parts of the refit's normal
    equations that do not depend on the support: A^T A and A^T y."""
    Mt, G, h = w[0], w[1], w[2]
    r = At.shape[0]
    for p in range(r):
        Mt[p] = At[p]
        for q in range(p + 1):
            s = _dot(At[p], At[q])
            G[p, q] = s
            G[q, p] = s
        h[p] = _dot(At[p], yi)


@_jit()
def _refit(Xi, yi, r, S, m_cols, w, coef, res):
    """Least squares of y_i on [A_i, X_i[:, S[:m_cols]]] (A_i from :func:`_prepare`):
    coef (r + m_cols), residual vector res (n); returns the squared residual."""
    Mt, G, h, L = w[0], w[1], w[2], w[3]
    n = Xi.shape[0]
    m = r + m_cols
    for c in range(m_cols):
        col = Mt[r + c]
        for a in range(n):
            col[a] = Xi[a, S[c]]
    for p in range(r, m):
        for q in range(p + 1):
            s = _dot(Mt[p], Mt[q])
            G[p, q] = s
            G[q, p] = s
        h[p] = _dot(Mt[p], yi)
    _solve_spd(G[:m, :m], h[:m], coef[:m], L[:m, :m])
    res[:] = yi
    for c in range(m):
        cc = coef[c]
        row = Mt[c]
        for a in range(n):
            res[a] -= cc * row[a]
    return _dot(res, res)


@_jit()
def _htp(Xi, yi, Qt, k, S, max_iter, best_S, best_coef, best_res, w):
    """Hard thresholding pursuit from the sorted support S (k): leaves the lowest-residual
    point seen in best_S, best_coef, best_res (vector); returns its squared residual.
    The arithmetic of :func:`lowrank_sparse.local._htp` for one user."""
    coef, res, g, b, score, buf, T, S_new, v, Pv = w[4:]
    n, d = Xi.shape
    r = Qt.shape[0]
    best = _refit(Xi, yi, r, S, k, w, coef, res)
    best_S[:] = S
    best_coef[:] = coef
    best_res[:] = res
    for _ in range(max_iter):
        b[:] = 0.0
        for c in range(k):
            b[S[c]] = coef[r + c]
        _correlate(Xi, res, g)
        for j in range(d):
            score[j] = abs(g[j])
        _top_k(score, k, T, buf)
        # Line search along the k largest gradient entries (the gradient vanishes on S).
        for a in range(n):
            s = 0.0
            for c in range(k):
                s += Xi[a, T[c]] * g[T[c]]
            v[a] = s
        _project_out(Qt, v, Pv)
        denom = _dot(Pv, Pv)
        num = 0.0
        for c in range(k):
            num += g[T[c]] * g[T[c]]
        eta = num / (denom if denom > 0 else 1.0)
        for j in range(d):
            score[j] = abs(b[j] + eta * g[j])
        _top_k(score, k, S_new, buf)
        same = True
        for c in range(k):
            same = same and S_new[c] == S[c]
        if same:
            break  # a fixed point of HTP
        S[:] = S_new[:k]
        res_sq = _refit(Xi, yi, r, S, k, w, coef, res)
        if res_sq < best:
            best = res_sq
            best_S[:] = S
            best_coef[:] = coef
            best_res[:] = res
    return best


@_jit()
def _greedy(Xi, yi, r, k, first, colnorm, S, w):
    """Orthogonal matching pursuit from the forced column ``first``: S (k, sorted)."""
    coef, res, g, score = w[4], w[5], w[6], w[8]
    d = Xi.shape[1]
    S[0] = first
    m = 1
    while True:
        _refit(Xi, yi, r, S, m, w, coef, res)
        if m == k:
            S[:k].sort()
            return
        _correlate(Xi, res, g)
        for j in range(d):
            score[j] = abs(g[j]) / colnorm[j]
        for c in range(m):
            score[S[c]] = -np.inf
        S[m] = np.argmax(score)
        m += 1


@_jit()
def _greedy_seeds(Xi, yi, Qt, n_seeds, colnorm, seeds, w):
    """Projected column norms ||P x_ij|| (into colnorm) and the ``n_seeds`` columns most
    correlated with the projected response, normalized by them (descending, first
    index on ties, as a stable argsort)."""
    g, score, Py = w[6], w[8], w[12]
    n, d = Xi.shape
    for j in range(d):
        s = 0.0
        for a in range(n):
            s += Xi[a, j] * Xi[a, j]
        for c in range(Qt.shape[0]):
            q = 0.0
            for a in range(n):
                q += Qt[c, a] * Xi[a, j]
            s -= q * q
        colnorm[j] = np.sqrt(max(s, 1e-300))
    _project_out(Qt, yi, Py)
    _correlate(Xi, Py, g)
    for j in range(d):
        score[j] = abs(g[j]) / colnorm[j]
    for s_ in range(n_seeds):
        seeds[s_] = np.argmax(score)
        score[seeds[s_]] = -np.inf


@_jit(parallel=True)
def fit_users(X, y, Ut, k, users, S0, use_warm, n_starts, max_iter, keep_existing,
              support, coef, residual, vectors, lowrank, corr_residual):
    """Local step for the users ``users``: HTP from S0[i] (if use_warm) and from
    ``n_starts`` greedy starts; with keep_existing the fit already in the outputs
    competes too (a restart). The best fit (lowest residual, earliest on ties) wins, as
    in :func:`lowrank_sparse.local._solve_block`; written at each user's row: support
    (t, k), coef (t, r + k), residual (t,), vectors (t, n) e_i, lowrank (t, n) A_i w_i,
    and, while X_i is in cache, corr_residual (t, d) X_i^T e_i, the user's part of the
    residual of the U step's normal equations."""
    t, n, d = X.shape
    r = Ut.shape[0]
    m = r + k
    n_blocks = (users.shape[0] + BLOCK - 1) // BLOCK
    for blk in prange(n_blocks):
        At = np.empty((r, n))
        Qt = np.empty((r, n))
        colnorm = np.empty(d)
        seeds = np.empty(max(n_starts, 1), dtype=np.int64)
        S = np.empty(max(k, 1), dtype=np.int64)
        cand_S = np.empty(max(k, 1), dtype=np.int64)
        cand_coef = np.empty(m)
        cand_res = np.empty(n)
        w = _work(n, d, r, k)
        for u in range(blk * BLOCK, min((blk + 1) * BLOCK, users.shape[0])):
            i = users[u]
            Xi, yi = X[i], y[i]
            _lowrank_features(Xi, Ut, At)
            _prepare(At, yi, w)
            if k == 0:
                residual[i] = _refit(Xi, yi, r, S, 0, w, coef[i], vectors[i])
            else:
                _orthonormal_basis(At, Qt)
                have = keep_existing
                for start in range(-1 if use_warm else 0, min(n_starts, d)):
                    if start == -1:
                        S[:k] = S0[i]
                        S[:k].sort()
                    else:
                        if start == 0:
                            _greedy_seeds(Xi, yi, Qt, min(n_starts, d), colnorm, seeds, w)
                        _greedy(Xi, yi, r, k, seeds[start], colnorm, S, w)
                    res_sq = _htp(Xi, yi, Qt, k, S[:k], max_iter, cand_S[:k], cand_coef,
                                  cand_res, w)
                    if not have or res_sq < residual[i]:
                        support[i] = cand_S[:k]
                        coef[i] = cand_coef
                        vectors[i] = cand_res
                        residual[i] = res_sq
                        have = True
            for a in range(n):
                s = 0.0
                for c in range(r):
                    s += At[c, a] * coef[i, c]
                lowrank[i, a] = s
            _correlate(Xi, vectors[i], corr_residual[i])


@_jit(parallel=True)
def normal_operator(X, Vt, W, omega):
    """Per block of users, sum_i omega_i w_i (X_i^T X_i V w_i)^T: (blocks, r, d), from
    V^T (r, d); X_i is read from memory once per user (X_i V w_i, then X_i^T of it
    while X_i is in cache). The caller sums the blocks in order."""
    t, n, d = X.shape
    r = W.shape[1]
    n_blocks = (t + BLOCK - 1) // BLOCK
    out = np.zeros((n_blocks, r, d))
    for blk in prange(n_blocks):
        v = np.empty(d)
        q = np.empty(n)
        g = np.empty(d)
        acc = out[blk]
        for i in range(blk * BLOCK, min((blk + 1) * BLOCK, t)):
            for j in range(d):
                s = 0.0
                for c in range(r):
                    s += Vt[c, j] * W[i, c]
                v[j] = s
            for a in range(n):
                s = 0.0
                for j in range(d):
                    s += X[i, a, j] * v[j]
                q[a] = omega[i] * s
            _correlate(X[i], q, g)
            for c in range(r):
                wc = W[i, c]
                for j in range(d):
                    acc[c, j] += g[j] * wc
    return out
