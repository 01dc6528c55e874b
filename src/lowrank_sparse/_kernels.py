"""Compiled (numba) per-user kernels for the hot paths of an outer iteration.

The numpy implementations in :mod:`lowrank_sparse.local` and
:mod:`lowrank_sparse.global_step` batch every operation over the user axis, so each
operation is its own pass over X: an outer iteration at t=1e5 costs ~20 passes. Here one
loop over users does all of a user's work while X_i (n x d, 16 KB at n=20, d=100) is in
cache: A_i = X_i U, a basis of its range, the OMP starts, hard thresholding pursuit
with its refits, and the user's contributions to the U step's normal equations. The
small helpers are inlined into the loop (``inline="always"``): as calls, passing their
array arguments cost 22 % of the local step. Compiling takes about a minute per array
type; numba caches the result next to this file.

The arithmetic is the numpy reference's (:func:`lowrank_sparse.local._solve_block`),
step for step; they differ by rounding (Cholesky instead of LU solves, a basis from the
Cholesky factor of A^T A instead of Householder QR), which ``tests/test_kernels.py``
bounds.

Determinism: users are independent, and sums over users are taken in blocks of
``BLOCK`` users fixed by t alone, then added in block order, so results do not depend on
the number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Users per block of the partial sums over users (fixed, so sums do not depend on the
#: number of threads).
BLOCK = 256
#: Users per parallel task of the local step (small: restarts touch few users).
USERS_PER_TASK = 64

# Reassociation lets reductions vectorize; no "nnan"/"ninf": -inf marks chosen columns.
_FAST = {"reassoc", "contract"}


def _jit(parallel=False, inline="never"):
    return njit(cache=True, fastmath=_FAST, parallel=parallel, nogil=True, inline=inline)


@_jit(inline="always")
def _dot(u, v):
    """u . v without a temporary (array expressions allocate inside a kernel)."""
    s = 0.0
    for a in range(u.shape[0]):
        s += u[a] * v[a]
    return s


@_jit(inline="always")
def _lowrank_features(Xi, Ut, At):
    """A_i^T = (X_i U)^T (r, n) from U^T (r, d): dot products along the contiguous d,
    four rows of X_i by two columns of U at a time (8 accumulators share each load;
    2.4x faster than one dot product at a time at n=20, d=100, r=5)."""
    n, d = Xi.shape
    r = Ut.shape[0]
    a = 0
    while a + 4 <= n:
        c = 0
        while c + 2 <= r:
            s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = 0.0
            for j in range(d):
                u, v = Ut[c, j], Ut[c + 1, j]
                x0, x1, x2, x3 = Xi[a, j], Xi[a + 1, j], Xi[a + 2, j], Xi[a + 3, j]
                s0 += x0 * u
                s1 += x1 * u
                s2 += x2 * u
                s3 += x3 * u
                t0 += x0 * v
                t1 += x1 * v
                t2 += x2 * v
                t3 += x3 * v
            At[c, a], At[c, a + 1], At[c, a + 2], At[c, a + 3] = s0, s1, s2, s3
            At[c + 1, a], At[c + 1, a + 1], At[c + 1, a + 2], At[c + 1, a + 3] = t0, t1, t2, t3
            c += 2
        if c < r:
            s0 = s1 = s2 = s3 = 0.0
            for j in range(d):
                u = Ut[c, j]
                s0 += Xi[a, j] * u
                s1 += Xi[a + 1, j] * u
                s2 += Xi[a + 2, j] * u
                s3 += Xi[a + 3, j] * u
            At[c, a], At[c, a + 1], At[c, a + 2], At[c, a + 3] = s0, s1, s2, s3
        a += 4
    for a in range(a, n):
        for c in range(r):
            s = 0.0
            for j in range(d):
                s += Xi[a, j] * Ut[c, j]
            At[c, a] = s


@_jit(inline="always")
def _range_basis(At, G, L, Qt):
    """A basis (B, L) of range(A_i) with Q = B L^{-T} orthonormal, so Q^T v = L^{-1} B^T v
    (:func:`_range_coords`) without forming Q: B = A_i and L the Cholesky factor of the
    Gram matrix A^T A that :func:`_prepare` left in G. If A^T A is not numerically
    positive definite: B = Q from modified Gram-Schmidt (twice) into Qt and L = I; a
    vanishing column then gives a zero row, which the projection ignores. Returns B^T."""
    r, n = At.shape
    ok = True
    for c in range(r):
        s = G[c, c]
        for p in range(c):
            s -= L[c, p] * L[c, p]
        if not s > 1e-12 * G[c, c]:
            ok = False
            break
        L[c, c] = np.sqrt(s)
        for a in range(c + 1, r):
            s = G[a, c]
            for p in range(c):
                s -= L[a, p] * L[c, p]
            L[a, c] = s / L[c, c]
    if ok:
        return At
    L[:, :] = 0.0
    for c in range(r):
        L[c, c] = 1.0
        Qt[c] = At[c]
        for _ in range(2):
            for p in range(c):
                s = _dot(Qt[p], Qt[c])
                for a in range(n):
                    Qt[c, a] -= s * Qt[p, a]
        norm = np.sqrt(_dot(Qt[c], Qt[c]))
        scale = 1.0 / norm if norm > 1e-300 else 0.0
        for a in range(n):
            Qt[c, a] *= scale
    return Qt


@_jit(inline="always")
def _range_coords(Bt, L, v, u):
    """u = Q^T v = L^{-1} B^T v: ||P v||^2 = ||v||^2 - ||u||^2 for P = I - Q Q^T."""
    for c in range(Bt.shape[0]):
        s = _dot(Bt[c], v)
        for p in range(c):
            s -= L[c, p] * u[p]
        u[c] = s / L[c, c]


@_jit(inline="always")
def _project_out(Bt, L, v, out, u):
    """out = P v = v - Q Q^T v = v - B L^{-T} u with u = Q^T v (overwritten)."""
    r = Bt.shape[0]
    _range_coords(Bt, L, v, u)
    for c in range(r - 1, -1, -1):  # u <- L^{-T} u
        s = u[c]
        for p in range(c + 1, r):
            s -= L[p, c] * u[p]
        u[c] = s / L[c, c]
    out[:] = v
    for c in range(r):
        uc = u[c]
        for a in range(v.shape[0]):
            out[a] -= uc * Bt[c, a]


@_jit(inline="always")
def _correlate(Xi, v, g):
    """g = X_i^T v, four rows of X_i at a time (g is loaded and stored once per four)."""
    n, d = Xi.shape
    g[:] = 0.0
    a = 0
    while a + 4 <= n:
        v0, v1, v2, v3 = v[a], v[a + 1], v[a + 2], v[a + 3]
        for j in range(d):
            g[j] += (Xi[a, j] * v0 + Xi[a + 1, j] * v1) + (Xi[a + 2, j] * v2 + Xi[a + 3, j] * v3)
        a += 4
    for a in range(a, n):
        va = v[a]
        for j in range(d):
            g[j] += Xi[a, j] * va


@_jit(inline="always")
def _sort_small(S, k):
    """Insertion sort of S[:k] in place (k is small: cheaper than a call to sort)."""
    for j in range(1, k):
        v = S[j]
        m = j
        while m > 0 and S[m - 1] > v:
            S[m] = S[m - 1]
            m -= 1
        S[m] = v


@_jit(inline="always")
def _top_k(score, k, S, best):
    """S = sorted indices of the k largest score (first index on ties), in one pass:
    an insertion list of the k best so far (best: their scores, descending)."""
    count = 0
    for j in range(score.shape[0]):
        s = score[j]
        if count < k or s > best[k - 1]:
            m = min(count, k - 1)  # a free slot, or the weakest entry's
            while m > 0 and s > best[m - 1]:
                best[m] = best[m - 1]
                S[m] = S[m - 1]
                m -= 1
            best[m] = s
            S[m] = j
            count = min(count + 1, k)
    _sort_small(S, k)


@_jit(inline="always")
def _is_top_k(score, S, k):
    """Whether the sorted support S (k) is what :func:`_top_k` would choose: its weakest
    entry beats the strongest entry off it (scores descending, first index on ties).
    One pass, no insertion list: HTP's fixed-point test."""
    worst, worst_j = np.inf, -1
    for c in range(k):
        s = score[S[c]]
        if s < worst or (s == worst and S[c] > worst_j):
            worst, worst_j = s, S[c]
    strongest, strongest_j = -np.inf, score.shape[0]
    c = 0
    for j in range(score.shape[0]):
        if c < k and S[c] == j:
            c += 1
        elif score[j] > strongest:
            strongest, strongest_j = score[j], j
    return worst > strongest or (worst == strongest and worst_j < strongest_j)


@_jit(inline="always")
def _solve_spd(G, h, x, L, m):
    """x[:m] = G^{-1} h for the leading m x m block of the symmetric PSD G, by Cholesky;
    the pseudo-inverse (as numpy's hermitian pinv) if G is singular."""
    for c in range(m):
        s = G[c, c]
        for p in range(c):
            s -= L[c, p] * L[c, p]
        if not s > 0.0:
            _solve_pinv(G, h, x, m)
            return
        L[c, c] = np.sqrt(s)
        inv = 1.0 / L[c, c]
        for a in range(c + 1, m):
            s = G[a, c]
            for p in range(c):
                s -= L[a, p] * L[c, p]
            L[a, c] = s * inv
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


@_jit()
def _solve_pinv(G, h, x, m):
    """The minimum-norm least-squares x[:m] for a singular G (zero if G or h is not
    finite: an overflowing user then gets no fit instead of stopping everyone's)."""
    x[:m] = 0.0
    if not (np.all(np.isfinite(G[:m, :m])) and np.all(np.isfinite(h[:m]))):
        return
    vals, vecs = np.linalg.eigh(G[:m, :m])
    cutoff = 1e-15 * np.max(np.abs(vals))
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
    Cholesky factor L, coef, residual, gradient g, b, score, top-k buffer, T, two
    n-vectors."""
    m = r + k
    kk = max(k, 1)
    return (np.empty((m, n)), np.empty((m, m)), np.empty(m), np.zeros((m, m)), np.empty(m),
            np.empty(n), np.empty(d), np.empty(d), np.empty(d), np.empty(kk),
            np.empty(kk, dtype=np.int64), np.empty(n), np.empty(n))


@_jit(inline="always")
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


@_jit(inline="always")
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
    for p in range(r, m):  # new rows of the Gram matrix, four entries at a time
        q = 0
        while q + 4 <= p + 1:
            s0 = s1 = s2 = s3 = 0.0
            for a in range(n):
                x = Mt[p, a]
                s0 += x * Mt[q, a]
                s1 += x * Mt[q + 1, a]
                s2 += x * Mt[q + 2, a]
                s3 += x * Mt[q + 3, a]
            G[p, q], G[p, q + 1], G[p, q + 2], G[p, q + 3] = s0, s1, s2, s3
            q += 4
        for q in range(q, p + 1):
            G[p, q] = _dot(Mt[p], Mt[q])
        for q in range(p):
            G[q, p] = G[p, q]
        h[p] = _dot(Mt[p], yi)
    _solve_spd(G, h, coef, L, m)
    res[:] = yi
    for c in range(m):
        cc = coef[c]
        row = Mt[c]
        for a in range(n):
            res[a] -= cc * row[a]
    return _dot(res, res)


@_jit(inline="always")
def _htp(Xi, yi, Bt, L, u, k, S, max_iter, best_S, best_coef, best_res, best_g, w):
    """Hard thresholding pursuit from the sorted support S (k): leaves the lowest-residual
    point seen in best_S, best_coef, best_res (vector); returns its squared residual and
    whether best_g holds X_i^T best_res (it does when HTP stopped at that point).
    The arithmetic of :func:`lowrank_sparse.local._htp` for one user."""
    coef, res, g, b, score, buf, T, v = w[4:12]
    n, d = Xi.shape
    r = Bt.shape[0]
    best = _refit(Xi, yi, r, S, k, w, coef, res)
    best_S[:] = S
    best_coef[:] = coef
    best_res[:] = res
    current_is_best = True
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
        _range_coords(Bt, L, v, u)  # ||P X_T g_T||^2 = ||v||^2 - ||Q^T v||^2
        denom = max(_dot(v, v) - _dot(u[:r], u[:r]), 0.0)
        num = 0.0
        for c in range(k):
            num += g[T[c]] * g[T[c]]
        eta = num / (denom if denom > 0 else 1.0)
        for j in range(d):
            score[j] = abs(b[j] + eta * g[j])
        if _is_top_k(score, S, k):  # a fixed point of HTP
            if current_is_best:
                best_g[:] = g
            return best, current_is_best
        _top_k(score, k, S, buf)
        current_is_best = False
        res_sq = _refit(Xi, yi, r, S, k, w, coef, res)
        if res_sq < best:
            best = res_sq
            best_S[:] = S
            best_coef[:] = coef
            best_res[:] = res
            current_is_best = True
    return best, False


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
            _sort_small(S, k)
            return
        _correlate(Xi, res, g)
        for j in range(d):
            score[j] = abs(g[j]) / colnorm[j]
        for c in range(m):
            score[S[c]] = -np.inf
        S[m] = np.argmax(score)
        m += 1


@_jit()
def _greedy_seeds(Xi, yi, Bt, L, u, n_seeds, colnorm, seeds, w):
    """Projected column norms ||P x_ij|| (into colnorm) and the ``n_seeds`` columns most
    correlated with the projected response, normalized by them (descending, first
    index on ties, as a stable argsort)."""
    g, score, x, Py = w[6], w[8], w[11], w[12]
    n, d = Xi.shape
    r = Bt.shape[0]
    for j in range(d):
        for a in range(n):
            x[a] = Xi[a, j]
        _range_coords(Bt, L, x, u)
        colnorm[j] = np.sqrt(max(_dot(x, x) - _dot(u[:r], u[:r]), 1e-300))
    _project_out(Bt, L, yi, Py, u)
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
    n_blocks = (users.shape[0] + USERS_PER_TASK - 1) // USERS_PER_TASK
    for blk in prange(n_blocks):
        At = np.empty((r, n))
        Qt = np.empty((r, n))
        LA = np.zeros((max(r, 1), max(r, 1)))  # Cholesky factor of A^T A
        coords = np.empty(max(r, 1))
        colnorm = np.empty(d)
        seeds = np.empty(max(n_starts, 1), dtype=np.int64)
        S = np.empty(max(k, 1), dtype=np.int64)
        cand_S = np.empty(max(k, 1), dtype=np.int64)
        cand_coef = np.empty(m)
        cand_res = np.empty(n)
        cand_g = np.empty(d)
        w = _work(n, d, r, k)
        for u in range(blk * USERS_PER_TASK, min((blk + 1) * USERS_PER_TASK, users.shape[0])):
            i = users[u]
            Xi, yi = X[i], y[i]
            _lowrank_features(Xi, Ut, At)
            _prepare(At, yi, w)
            have_g = False  # corr_residual[i] already holds X_i^T e_i
            if k == 0:
                residual[i] = _refit(Xi, yi, r, S, 0, w, coef[i], vectors[i])
            else:
                Bt = _range_basis(At, w[1], LA, Qt)
                have = keep_existing
                for start in range(-1 if use_warm else 0, min(n_starts, d)):
                    if start == -1:
                        S[:k] = S0[i]
                        _sort_small(S, k)
                    else:
                        if start == 0:
                            _greedy_seeds(Xi, yi, Bt, LA, coords, min(n_starts, d), colnorm, seeds,
                                          w)
                        _greedy(Xi, yi, r, k, seeds[start], colnorm, S, w)
                    res_sq, with_g = _htp(Xi, yi, Bt, LA, coords, k, S[:k], max_iter,
                                          cand_S[:k], cand_coef, cand_res, cand_g, w)
                    if not have or res_sq < residual[i]:
                        support[i] = cand_S[:k]
                        coef[i] = cand_coef
                        vectors[i] = cand_res
                        residual[i] = res_sq
                        if with_g:
                            corr_residual[i] = cand_g
                        have, have_g = True, with_g
            for a in range(n):
                s = 0.0
                for c in range(r):
                    s += At[c, a] * coef[i, c]
                lowrank[i, a] = s
            if not have_g:
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
            if omega[i] == 0.0:
                continue  # contributes nothing: X_i need not be read (trimmed users)
            v[:] = 0.0
            for c in range(r):
                wc = W[i, c]
                for j in range(d):
                    v[j] += wc * Vt[c, j]
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


def precompile() -> None:
    """Compile the kernels for the array types the estimators use, into numba's on-disk
    cache (next to this file), e.g. before starting processes that would otherwise each
    compile them at once (a pipeline's parallel fit jobs): a later process loads them
    in about a second (0.3 s). Compiling takes about a minute. Runs two tiny AMHT-LRS fits
    (k = 1 and k = 0), so the types are those of the real code paths."""
    from .amht import amht_lrs
    from .data import make_problem, sample_data

    problem = make_problem(6, 8, 1, 1, rng=0)
    data = sample_data(problem, 6, n_test=0, rng=1)
    for k in (1, 0):
        amht_lrs(data.X, data.y, 1, k, n_iter=2)
