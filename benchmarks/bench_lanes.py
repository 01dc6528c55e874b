"""What each piece of the warm steady-state local step costs per user, against its FLOP
floor, and what cheaper forms of the biggest pieces (branch-free selections, several
users' small solves in SIMD lanes) would gain.

    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_lanes.py
    python benchmarks/bench_lanes.py --t 10000          # faster; X then fits in L3
    PYTHONPATH=<a library's src> python benchmarks/bench_lanes.py --kernel-only  # A/B runs

numba's on-disk cache of this file's functions does not notice changes to
``lowrank_sparse._kernels``, whose code they contain: after changing it, delete
``benchmarks/__pycache__`` (``--kernel-only`` uses none of them).

The setting of bench_passes.py per user (d=100, n=20, r=k=5, noiseless), in the steady
state of a converged fit: the true U (a fit's final U is within 1e-10 of it) and each
user's support from one outer iteration's local step. :func:`_warm_path` is a copy of
the kernel's warm path (``_kernels._fit_tasks`` with ``n_starts=0``, the same calls in
the same order; its residuals are checked equal to the kernel's) as it was before the
kernel skipped the top k, line search and fixed-point test of the supports that
``_kernels._surely_fixed_point`` certifies (~99% of the users here, ~10% of the
kernel's time), so the pieces after X_i^T e are what an uncertified user pays. It stops
after a given piece: a piece's cost is the time up to it minus the time up to the piece before,
(a) over all users in order, as in a fit (X_i read from memory, each user's data new to
the branch predictor), and (b) over 32 users cycled so that X_i stays in cache
(bench_phases.py's "arithmetic alone"; the branch predictor learns their selections,
so branchy pieces look cheaper there than in a fit). Differences of two timings are
noisy (+-100 ns per piece on this VM); the totals are not.

Variants of the copy (bitwise the same supports and residuals): a branch-free
fixed-point test (:func:`_is_top_k_flat`) and top k (:func:`_top_k_select`). Then
prototypes on the first refits of 8192 distinct users against the kernel's functions:
top-k selections, a right-looking scalar Cholesky, and the refit's (r + k) x (r + k)
Cholesky solve and Gram rows for 4 to 32 users at once with the users innermost.

One pass is 1.32 us per user (numpy's einsum of X_i theta_i at t=1e5 on a quiet machine,
132 ms: ``timing.one_pass_seconds`` before 2026-11-29, 1.2-1.5x a read of X on one
thread, the floor it measures since); floors count multiply-adds at AVX2's 8 per cycle (two 4-wide FMAs) at 3.16 GHz
(this VM's clock, from a chain of dependent additions at 3 cycles each).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

import lowrank_sparse as ls
from lowrank_sparse import _kernels as K

_FAST = {"reassoc", "contract"}
PASS_NS = 1320.0  # the einsum's pass per user at t=1e5 (132 ms / 1e5), quiet machine
FLOOR_NS_PER_MAC = 1.0 / (8 * 3.16)  # AVX2 peak, 8 multiply-adds per cycle at 3.16 GHz
LANES = 4  # users per SIMD group (AVX2: 4 float64)

@intrinsic
def _prefetch(typingctx, address):
    """prefetcht1 (into L2) of the cache line at an integer address."""
    def codegen(context, builder, signature, args):
        ptr_t = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr_t, i32, i32, i32]),
            "llvm.prefetch.p0")
        builder.call(fn, [builder.inttoptr(args[0], ptr_t), ir.Constant(i32, 0),
                          ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(types.intp), codegen


@njit(cache=True, error_model="numpy")
def _prefetch_part(address, size, part, parts):
    """Prefetch part ``part`` of ``parts`` of the ``size`` bytes at ``address``."""
    lines = (size + 63) // 64
    for line in range(part * lines // parts, (part + 1) * lines // parts):
        _prefetch(address + 64 * line)


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _lowrank_prefetching(Xi, Ut, At, following, size, parts, fine):
    """:func:`_kernels._lowrank_features` (the same arithmetic) issuing part a / 4 of
    ``parts`` of the next user's X_i before each block of four rows, or with ``fine``
    part 3 (a / 4) + c / 2 before each block of four rows by two columns (15 parts at
    n=20, r=5)."""
    n, d = Xi.shape
    r = Ut.shape[0]
    a = 0
    while a + 4 <= n:
        if not fine:
            _prefetch_part(following, size, a // 4, parts)
        c = 0
        while c + 2 <= r:
            if fine:
                _prefetch_part(following, size, 3 * (a // 4) + c // 2, parts)
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
            if fine:
                _prefetch_part(following, size, 3 * (a // 4) + c // 2, parts)
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


#: The pieces of the warm path, in order (what _warm_path runs up to ``stop``).
PIECES = ["read X_i (_stream_in)", "A_i = X_i U (_lowrank_features)",
          "A^T A, A^T y (_prepare)", "r x r Cholesky (_range_basis)",
          "warm support + refit (_refit: gather, Gram rows, 10x10 Cholesky, residual)",
          "X_i^T e (_correlate)", "|g|, top k (_top_k)",
          "line search (X_T g_T, _range_coords, eta)", "scores, fixed-point test (_is_top_k)",
          "further HTP iterations (top k + refit + the above)",
          "outputs (copies, A_i w_i, X_i^T e if needed)"]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _warm_path(X, y, Ut, users, warm, k, max_iter, stop, iterations, residual, variant):
    """The steady-state warm path of ``_kernels._fit_tasks`` (n_starts=0, use_warm,
    not keep_existing), the same calls in the same order, run only up to piece ``stop``
    (an index into PIECES). Writes each user's HTP iterations and squared residual.
    variant: 0 the kernel's functions; + 1 :func:`_is_top_k_flat`; + 2 the refits by
    :func:`_refit_right`; + 4 :func:`_top_k_select`; + 8 the next user's X_i
    prefetched into L2 at once after this user's read, or + 16 in four parts spread over
    this user's arithmetic, or + 64 in twelve parts (five inside A_i's loop, the
    others after each later piece; with + 256, 22 parts, 15 inside A_i's loop); + 32 without :func:`_kernels._stream_in`; + 128
    the prefetches for the user after next instead."""
    n, d = X.shape[1:]
    r = Ut.shape[0]
    w = K._work(n, d, r, k, 0)
    S, T, coef, res, g, b, score = w.S, w.T, w.coef, w.res, w.grad, w.b, w.score
    top_score, v, u, LA = w.top_score, w.direction, w.coords, w.LA
    dinv = np.empty(r + k)
    block_max, cand, cand_score = np.empty(2 * k), np.empty(d, dtype=np.intp), np.empty(d)
    saved = np.empty(k)
    streamed = 0.0
    base, size = X.ctypes.data, X.strides[0]
    fine = variant & 256 != 0
    parts, later = (22, 15) if fine else (12, 5)  # (all parts, the first after A_i)
    for ui in range(users.shape[0]):
        i = users[ui]
        ahead = 2 if variant & 128 else 1
        following = base + users[min(ui + ahead, users.shape[0] - 1)] * size
        Xi, yi = X[i], y[i]
        if not variant & 32:
            streamed += K._stream_in(Xi)
        if variant & 8:
            _prefetch_part(following, size, 0, 1)
        if stop < 1:
            continue
        if variant & 64:
            _lowrank_prefetching(Xi, Ut, w.At, following, size, parts, fine)
        else:
            K._lowrank_features(Xi, Ut, w)
        if variant & 16:
            _prefetch_part(following, size, 0, 4)
        if stop < 2:
            continue
        K._prepare(w, yi)
        if variant & 64:
            _prefetch_part(following, size, later + 0, parts)
        if stop < 3:
            continue
        Bt = K._range_basis(w)
        if variant & 64:
            _prefetch_part(following, size, later + 1, parts)
        if stop < 4:
            continue
        K._copy(warm[i], S)
        K._sort_small(S, k)
        best = (_refit_right(Xi, yi, w, k, dinv) if variant & 2
                else K._refit(Xi, yi, w, k, False))
        K._keep_as_best(w)
        if variant & 16:
            _prefetch_part(following, size, 1, 4)
        if variant & 64:
            _prefetch_part(following, size, later + 2, parts)
        if stop < 5:
            continue
        current_is_best, fixed, it = True, False, 0
        while it < max_iter:
            it += 1
            K._fill(b, 0.0)
            for c in range(k):
                b[S[c]] = coef[r + c]
            K._correlate(Xi, res, g)
            if variant & 16 and it == 1:
                _prefetch_part(following, size, 2, 4)
            if variant & 64 and it == 1:
                _prefetch_part(following, size, later + 3, parts)
            if stop < 6:
                break
            for j in range(d):
                score[j] = abs(g[j])
            if variant & 4:
                _top_k_select(score, k, T, block_max)
            else:
                K._top_k(score, k, T, top_score)
            if variant & 64 and it == 1:
                _prefetch_part(following, size, later + 4, parts)
            if stop < 7:
                break
            for a in range(n):
                s = 0.0
                for c in range(k):
                    s += Xi[a, T[c]] * g[T[c]]
                v[a] = s
            K._range_coords(Bt, LA, v, u)
            denom = max(K._dot(v, v) - K._sum_squares(u, r), 0.0)
            num = 0.0
            for c in range(k):
                num += g[T[c]] * g[T[c]]
            eta = num / (denom if denom > 0 else 1.0)
            if variant & 64 and it == 1:
                _prefetch_part(following, size, later + 5, parts)
            if stop < 8:
                break
            for j in range(d):
                score[j] = abs(b[j] + eta * g[j])
            if _is_top_k_flat(score, S, k, saved) if variant & 1 else K._is_top_k(score, S, k):
                if current_is_best:
                    K._copy(g, w.best_grad)
                fixed = True
                break
            if stop < 9:
                break
            if variant & 4:
                _top_k_select(score, k, S, block_max)
            else:
                K._top_k(score, k, S, top_score)
            res_sq = (_refit_right(Xi, yi, w, k, dinv) if variant & 2
                      else K._refit(Xi, yi, w, k, False))
            current_is_best = res_sq < best
            if current_is_best:
                best = res_sq
                K._keep_as_best(w)
        iterations[i] = it
        residual[i] = best
        if variant & 16:
            _prefetch_part(following, size, 3, 4)
        if variant & 64:
            _prefetch_part(following, size, later + 6, parts)
        if stop < 10:
            continue
        have_grad = fixed and current_is_best
        streamed += w.best_coef[0] + w.best_res[0] + w.best_S[0]  # the copies out
        for a in range(n):
            s = 0.0
            for c in range(r):
                s += w.At[c, a] * w.best_coef[c]
            v[a] = s
        if not have_grad:
            K._correlate(Xi, w.best_res, w.best_grad)
        streamed += v[0] + w.best_grad[0]
    return streamed


# ---------------------------------------------------------------- scalar prototypes

@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _is_top_k_flat(score, S, k, saved):
    """The prototype of :func:`_kernels._is_top_k`'s branch-free count (the kernel's
    since commit 8af8c8c, which subtracts S's own entries instead of masking them;
    before it, the kernel kept a running maximum with branches): S's entries are set
    to -inf for the pass and restored, and the pass counts the
    entries that beat S's weakest (greater, or equal with a smaller index), a
    vectorizable sum. The same answer (scores are >= 0 or NaN; NaN never beats)."""
    worst, worst_j = np.inf, -1
    for c in range(k):
        s = score[S[c]]
        if s < worst or (s == worst and S[c] > worst_j):
            worst, worst_j = s, S[c]
    for c in range(k):
        saved[c] = score[S[c]]
        score[S[c]] = -np.inf
    beats = 0
    for j in range(score.shape[0]):
        s = score[j]
        beats += np.intp(s > worst) + np.intp(s == worst) * np.intp(j < worst_j)
    for c in range(k):
        score[S[c]] = saved[c]
    return beats == 0


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _top_k_flat(score, k, S, best, block_max, cand, cand_score):
    """The same S as :func:`_kernels._top_k` (sorted indices of the k largest, first
    index on ties) with few data-dependent branches: the maxima of 2k strided blocks
    (j mod 2k: elementwise maxima of contiguous rows, which vectorize); their k-th
    largest, tau, is a lower bound of the k-th largest of all (k blocks hold an entry
    >= tau); a branch-free compaction of the entries >= tau (the candidates, a few
    more than k, in index order); the kernel's insertion list over them alone.
    (Differs from _top_k only for NaN scores, which _top_k may admit among the first
    k entries.)"""
    d = score.shape[0]
    nb = min(2 * k, d)
    for b in range(nb):
        block_max[b] = score[b]
    rows = d // nb
    for i in range(1, rows):
        for b in range(nb):
            s = score[i * nb + b]
            block_max[b] = s if s > block_max[b] else block_max[b]
    for j in range(rows * nb, d):
        s = score[j]
        block_max[j - rows * nb] = s if s > block_max[j - rows * nb] else block_max[j - rows * nb]
    K._top_k(block_max[:nb], k, S, best)
    tau = best[k - 1]
    nc = 0
    for j in range(d):
        cand[nc] = j
        nc += score[j] >= tau
    for c in range(nc):
        cand_score[c] = score[cand[c]]
    K._top_k(cand_score[:nc], k, S, best)
    for c in range(k):
        S[c] = cand[S[c]]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _top_k_argmax(score, k, S, chunk_max):
    """The same S as :func:`_kernels._top_k` by k passes of a branch-free maximum: the
    maxima of 8 interleaved strands in eight scalar locals (registers: LLVM packs them
    into two 4-wide maxima; an array there would be stored and reloaded at every
    step, as numba cannot tell it from score), their maximum, the first index holding
    it (one loop exit to predict), which is then set to -inf for the next passes and
    restored at the end (its value kept in chunk_max)."""
    d = score.shape[0]
    full = d // 8 * 8
    for c in range(k):
        m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = -np.inf
        for base in range(0, full, 8):
            s0, s1, s2, s3 = score[base], score[base + 1], score[base + 2], score[base + 3]
            s4, s5, s6, s7 = score[base + 4], score[base + 5], score[base + 6], score[base + 7]
            m0 = s0 if s0 > m0 else m0
            m1 = s1 if s1 > m1 else m1
            m2 = s2 if s2 > m2 else m2
            m3 = s3 if s3 > m3 else m3
            m4 = s4 if s4 > m4 else m4
            m5 = s5 if s5 > m5 else m5
            m6 = s6 if s6 > m6 else m6
            m7 = s7 if s7 > m7 else m7
        for j in range(full, d):
            s0 = score[j]
            m0 = s0 if s0 > m0 else m0
        m0 = m1 if m1 > m0 else m0
        m2 = m3 if m3 > m2 else m2
        m4 = m5 if m5 > m4 else m4
        m6 = m7 if m7 > m6 else m6
        m0 = m2 if m2 > m0 else m0
        m4 = m6 if m6 > m4 else m4
        top = m4 if m4 > m0 else m0
        j = 0
        while j < d - 1 and not score[j] == top:
            j += 1
        S[c] = j
        chunk_max[c] = score[j]
        score[j] = -np.inf
    for c in range(k):
        score[S[c]] = chunk_max[c]
    K._sort_small(S, k)


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _top_k_select(score, k, S, saved):
    """The same S as :func:`_kernels._top_k` by k scans that carry (maximum, its first
    index) in two registers, updated by selects (conditional moves, no branch to
    mispredict); the chosen entry is set to -inf for the next scans and restored."""
    d = score.shape[0]
    for c in range(k):
        top, at = score[0], 0
        for j in range(1, d):
            s = score[j]
            better = s > top
            top = s if better else top
            at = j if better else at
        S[c] = at
        saved[c] = top
        score[at] = -np.inf
    for c in range(k):
        score[S[c]] = saved[c]
    K._sort_small(S, k)


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _top_k_bench(scores, k, out, repeats, how):
    """Top k of each row of scores (distinct users: the branch predictor cannot learn
    them) by the kernel's _top_k (how 0), _top_k_flat (1) or _top_k_argmax (2)."""
    t, d = scores.shape
    best = np.empty(k)
    S = np.empty(k, dtype=np.intp)
    block_max, cand, cand_score = np.empty(8 + k), np.empty(d, dtype=np.intp), np.empty(d)
    for _ in range(repeats):
        for u in range(t):
            if how == 0:
                K._top_k(scores[u], k, S, best)
            elif how == 1:
                _top_k_flat(scores[u], k, S, best, block_max, cand, cand_score)
            elif how == 2:
                _top_k_argmax(scores[u], k, S, block_max)
            else:
                _top_k_select(scores[u], k, S, block_max)
            for c in range(k):
                out[u, c] = S[c]
    return out[0, 0]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _collect_scores(X, y, Ut, users, warm, k, scores):
    """|X_i^T e_i| at each user's warm refit: the scores HTP's first top k sees."""
    n, d = X.shape[1:]
    r = Ut.shape[0]
    w = K._work(n, d, r, k, 0)
    for u in range(users.shape[0]):
        i = users[u]
        K._lowrank_features(X[i], Ut, w)
        K._prepare(w, y[i])
        K._copy(warm[i], w.S)
        K._sort_small(w.S, k)
        K._refit(X[i], y[i], w, k, False)
        K._correlate(X[i], w.res, w.grad)
        for j in range(d):
            scores[u, j] = abs(w.grad[j])


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _cholesky_right(G, L, dinv, m, rel_tol):
    """Right-looking Cholesky of the leading m x m block of G into L's lower triangle,
    the pivots' reciprocals into dinv: after each pivot the trailing block is updated
    by independent multiply-adds (the kernel's left-looking form chains a dot product
    into every entry). The kernel's pivot test; multiplications by 1/L[c, c] where the
    kernel divides (the last bit may differ)."""
    for b in range(m):
        for a in range(b, m):
            L[a, b] = G[a, b]
    for c in range(m):
        s = L[c, c]
        if not s > rel_tol * G[c, c]:
            return False
        piv = np.sqrt(s)
        inv = 1.0 / piv
        L[c, c] = piv
        dinv[c] = inv
        for a in range(c + 1, m):
            L[a, c] *= inv
        for b in range(c + 1, m):
            lb = L[b, c]
            for a in range(b, m):
                L[a, b] -= L[a, c] * lb
    return True


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _solve_right(L, dinv, x, m):
    """x <- (L L^T)^{-1} x, both substitutions column by column (independent updates)."""
    for a in range(m):
        xa = x[a] * dinv[a]
        x[a] = xa
        for b in range(a + 1, m):
            x[b] -= L[b, a] * xa
    for a in range(m - 1, -1, -1):
        xa = x[a] * dinv[a]
        x[a] = xa
        for p in range(a):
            x[p] -= L[a, p] * xa


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _solve_spd_right(G, h, x, L, dinv, m):
    if not _cholesky_right(G, L, dinv, m, 1e-12):
        K._solve_pinv(G, h, x, m)
        return
    for a in range(m):
        x[a] = h[a]
    _solve_right(L, dinv, x, m)


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _refit_right(Xi, yi, w, m_cols, dinv):
    """:func:`_kernels._refit` with the right-looking solve."""
    Mt, G, h, S, coef, res = w.Mt, w.G, w.h, w.S, w.coef, w.res
    n = Xi.shape[0]
    r = w.At.shape[0]
    m = r + m_cols
    for c in range(m_cols):
        j = S[c]
        for a in range(n):
            Mt[r + c, a] = Xi[a, j]
    for p in range(r, m):
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
            G[p, q] = K._dot_rows(Mt, p, Mt, q)
        for q in range(p):
            G[q, p] = G[p, q]
        s = 0.0
        for a in range(n):
            s += Mt[p, a] * yi[a]
        h[p] = s
    _solve_spd_right(G, h, coef, w.L, dinv, m)
    K._copy(yi, res)
    for c in range(m):
        cc = coef[c]
        for a in range(n):
            res[a] -= cc * Mt[c, a]
    return K._dot(res, res)


# ---------------------------------------------------------------- lanes prototypes

@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _collect_refits(X, y, Ut, users, warm, k, G_out, h_out, M_out):
    """Each user's first refit in the steady state, as _refit builds it: the Gram
    matrix G (m, m), M^T y (m) and the regressors M^T = [A_i, X_i[:, S]]^T (m, n)."""
    n, d = X.shape[1:]
    r = Ut.shape[0]
    m = r + k
    w = K._work(n, d, r, k, 0)
    for u in range(users.shape[0]):
        i = users[u]
        K._lowrank_features(X[i], Ut, w)
        K._prepare(w, y[i])
        K._copy(warm[i], w.S)
        K._sort_small(w.S, k)
        K._refit(X[i], y[i], w, k, False)
        for p in range(m):
            h_out[u, p] = w.h[p]
            for q in range(m):
                G_out[u, p, q] = w.G[p, q]
            for a in range(n):
                M_out[u, p, a] = w.Mt[p, a]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _solve_each(G, h, x, repeats, right):
    """The kernel's solve (_cholesky, _solve_factored), or the right-looking one, user
    after user."""
    t, m = h.shape
    L = np.zeros((m, m))
    dinv = np.empty(m)
    xu = np.empty(m)
    for _ in range(repeats):
        for u in range(t):
            if right:
                _solve_spd_right(G[u], h[u], xu, L, dinv, m)
            else:
                K._solve_factored(G[u], h[u], xu, L, m, K._cholesky(G[u], L, m, 1e-12))
            for p in range(m):
                x[u, p] = xu[p]
    return x[0, 0]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _gram_each(M, y, G, h, r, repeats):
    """The refit's new Gram rows (k rows against r + k columns) and M^T y, user after
    user, as _refit computes them (four entries at a time)."""
    t, m, n = M.shape
    for _ in range(repeats):
        for u in range(t):
            Mt = M[u]
            for p in range(r, m):
                q = 0
                while q + 4 <= p + 1:
                    s0 = s1 = s2 = s3 = 0.0
                    for a in range(n):
                        x = Mt[p, a]
                        s0 += x * Mt[q, a]
                        s1 += x * Mt[q + 1, a]
                        s2 += x * Mt[q + 2, a]
                        s3 += x * Mt[q + 3, a]
                    G[u, p, q], G[u, p, q + 1], G[u, p, q + 2], G[u, p, q + 3] = s0, s1, s2, s3
                    q += 4
                for q in range(q, p + 1):
                    G[u, p, q] = K._dot_rows(Mt, p, Mt, q)
                s = 0.0
                for a in range(n):
                    s += Mt[p, a] * y[u, a]
                h[u, p] = s
    return G[0, r, 0]


def _lanes_kernels(lanes, runtime):
    """The refit's Gram rows and Cholesky solve for groups of ``lanes`` users at once,
    the users innermost (contiguous): every operation of the kernel's per-user code
    becomes one SIMD operation on ``lanes`` users (AVX2: 4 float64 per register), so
    the latency chains of the small solves (sqrt, division, short dot products) are
    paid once per group. Arrays (groups, ..., lanes). With ``runtime`` the loops over
    the lanes run to the arrays' last dimension, unknown to the compiler: LLVM's loop
    vectorizer then emits SIMD code behind a runtime check that the arrays do not
    overlap; with ``lanes`` a compile-time constant it cannot prove that and leaves
    the 4 or 8 lanes as scalar code (checked in the assembly: no ymm multiply-add)."""

    @njit(fastmath=_FAST, error_model="numpy")
    def gram(Ml, yl, Gl, hl, r, repeats):
        groups, m, n = Ml.shape[0], Ml.shape[1], Ml.shape[2]
        nl = Ml.shape[3] if runtime else lanes
        for _ in range(repeats):
            for g in range(groups):
                for p in range(r, m):
                    for q in range(p + 1):
                        for lane in range(nl):
                            Gl[g, p, q, lane] = 0.0
                    for lane in range(nl):
                        hl[g, p, lane] = 0.0
                    for a in range(n):  # p + 2 independent multiply-adds per sample
                        for q in range(p + 1):
                            for lane in range(nl):
                                Gl[g, p, q, lane] += Ml[g, p, a, lane] * Ml[g, q, a, lane]
                        for lane in range(nl):
                            hl[g, p, lane] += Ml[g, p, a, lane] * yl[g, a, lane]
        return Gl[0, r, 0, 0]

    @njit(fastmath=_FAST, error_model="numpy")
    def solve(Gl, hl, xl, repeats):
        """Right-looking Cholesky and column-oriented substitutions, as _cholesky_right
        and _solve_right per lane; returns the lanes whose pivot test failed (they
        would take the kernel's singular fallback, one user at a time)."""
        groups, m = hl.shape[0], hl.shape[1]
        nl = hl.shape[2] if runtime else lanes
        L = np.empty((m, m, lanes))
        dinv = np.empty((m, lanes))
        bad = 0
        for _ in range(repeats):
            for g in range(groups):
                for b in range(m):
                    for a in range(b, m):
                        for lane in range(nl):
                            L[a, b, lane] = Gl[g, a, b, lane]
                for c in range(m):
                    for lane in range(nl):
                        s = L[c, c, lane]
                        good = s > 1e-12 * Gl[g, c, c, lane]
                        bad += not good
                        piv = np.sqrt(s if good else 1.0)
                        L[c, c, lane] = piv
                        dinv[c, lane] = 1.0 / piv
                    for a in range(c + 1, m):
                        for lane in range(nl):
                            L[a, c, lane] *= dinv[c, lane]
                    for b in range(c + 1, m):
                        for a in range(b, m):
                            for lane in range(nl):
                                L[a, b, lane] -= L[a, c, lane] * L[b, c, lane]
                for a in range(m):
                    for lane in range(nl):
                        xl[g, a, lane] = hl[g, a, lane]
                for a in range(m):
                    for lane in range(nl):
                        xl[g, a, lane] *= dinv[a, lane]
                    for b in range(a + 1, m):
                        for lane in range(nl):
                            xl[g, b, lane] -= L[b, a, lane] * xl[g, a, lane]
                for a in range(m - 1, -1, -1):
                    for lane in range(nl):
                        xl[g, a, lane] *= dinv[a, lane]
                    for p in range(a):
                        for lane in range(nl):
                            xl[g, p, lane] -= L[a, p, lane] * xl[g, a, lane]
        return bad

    return gram, solve


def _in_lanes(a, lanes):
    """(t, ...) -> (t // lanes, ..., lanes), users innermost (a layout change, untimed)."""
    groups = a.shape[0] // lanes
    b = a[:groups * lanes].reshape(groups, lanes, *a.shape[1:])
    return np.ascontiguousarray(np.moveaxis(b, 1, -1))


def _from_lanes(a):
    return np.moveaxis(a, -1, 1).reshape(-1, *a.shape[1:-1])


# ---------------------------------------------------------------- driver

def _best_ns(run, repeats, per):
    """The least wall time of ``repeats`` runs of run() (after one to warm up), in ns per
    item (per items per run): the least disturbed run (this VM's timings of the same
    run vary by 20-50%, more than the smaller pieces cost)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.min(times)) * 1e9 / per


def _passes(ns):
    return f"{ns:.0f} ({ns / PASS_NS:.2f})"


def _overlap_table(X, y, Ut, users, support, k, residual, repeats):
    """The whole warm path over all users in order, with the next users' X_i prefetched
    in parts while this user's arithmetic runs."""
    t = X.shape[0]
    print("\nThe read of the next user's X_i overlapped with this user's arithmetic (all users "
          "in order, the whole warm path):\n\n| variant | ns/user (passes) |\n|---|---:|")
    for variant, label in ((0, "the kernel's functions"),
                           (5, "branch-free top k and _is_top_k (5)"),
                           (5 | 8, "5 + next X_i prefetched into L2 at once"),
                           (5 | 16, "5 + next X_i prefetched in four parts"),
                           (5 | 64, "5 + next X_i prefetched in twelve parts"),
                           (5 | 64 | 32, "5 + prefetched in twelve parts, no _stream_in"),
                           (5 | 64 | 256 | 32, "5 + prefetched in 22 parts, no _stream_in"),
                           (5 | 64 | 128, "5 + the user after next's X_i in twelve parts"),
                           (5 | 64 | 128 | 32, "5 + the user after next's in twelve parts, "
                                               "no _stream_in"),
                           (0 | 64 | 32, "the kernel's functions, prefetched in twelve "
                                         "parts, no _stream_in"),
                           (5 | 8 | 32, "5 + prefetched at once, no _stream_in"),
                           (5 | 16 | 32, "5 + prefetched in four parts, no _stream_in")):
        it = np.zeros(t, dtype=np.intp)
        ns = _best_ns(lambda: _warm_path(X, y, Ut, users, support, k, 20, len(PIECES), it,
                                         residual, variant), repeats, t)
        print(f"| {label} | {_passes(ns)} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--kernel-only", action="store_true",
                        help="only the kernel (fit_users) over all users in order, best and "
                             "median of 15, with a checksum of its supports and residuals: "
                             "to compare two versions of the library (PYTHONPATH), run "
                             "alternately")
    parser.add_argument("--overlap-only", action="store_true",
                        help="only the table of the read overlapped with the arithmetic")
    parser.add_argument("--proto-users", type=int, default=8192,
                        help="users whose systems the prototypes solve (distinct users, so "
                             "that the branch predictor cannot learn them)")
    args = parser.parse_args()
    d, n, r, k = 100, 20, 5, 5
    m = r + k
    problem = ls.make_problem(d, args.t, r, k, rng=0)
    data = ls.sample_data(problem, n, n_test=0, rng=1)
    X, y = data.X, np.ascontiguousarray(data.y)
    del data
    ls.local.precompile(("float64",))
    # The steady state of a converged fit: U = the true U (a fit's final U is within
    # 1e-10 of it), each user's support from an outer iteration's local step (warm from
    # the greedy supports, outliers restarted), as the next iteration starts from.
    U = problem.U
    cold = ls.local.local_step(X, y, U, k)
    support = np.ascontiguousarray(ls.local.local_step(X, y, U, k, support_init=cold.support)
                                   .support)
    del cold
    Ut = np.ascontiguousarray(U.T)
    users = np.arange(args.t)
    hot = np.random.default_rng(0).choice(args.t, 32, replace=False)
    in_cache = np.tile(hot, args.t // 32)

    out = K.LocalOutputs(np.empty((args.t, k), dtype=np.intp), np.empty((args.t, m)),
                         np.empty(args.t), np.empty((args.t, n)), np.empty((args.t, n)),
                         np.empty((args.t, d)))
    settings = K.LocalSettings(k, 0, 20, True, False)
    if args.kernel_only:
        K.fit_users(X, y, Ut, users, support, settings, out)
        times = []
        for _ in range(15):
            start = time.perf_counter()
            K.fit_users(X, y, Ut, users, support, settings, out)
            times.append((time.perf_counter() - start) * 1e9 / args.t)
        print(f"{K.__file__}: fit_users, all users in order: best {_passes(min(times))}, "
              f"median {_passes(float(np.median(times)))} ns/user (passes); checksum "
              f"{out.residual.sum()!r} {out.support.sum()}")
        return
    # The replica against the kernel: the same residuals; HTP iterations per user.
    iterations, residual = np.zeros(args.t, dtype=np.intp), np.empty(args.t)
    kernel = ls.local.local_step(X, y, U, k, support_init=support, restart_above=None,
                                 n_starts=0)
    variants = {0: "the kernel's functions", 1: "branch-free _is_top_k",
                2: "right-looking Cholesky in the refit", 4: "branch-free top k",
                5: "branch-free _is_top_k and top k"}
    print(f"t={args.t:,}, d={d}, n={n}, r={r}, k={k}, noiseless, at the true U")
    for variant, label in variants.items():
        _warm_path(X, y, Ut, users, support, k, 20, len(PIECES), iterations, residual, variant)
        diff = np.max(np.abs(residual - kernel.residual)) / np.median(kernel.residual)
        print(f"replica, {label}: residuals "
              f"{'equal to' if diff == 0 else f'within {diff:.1e} (of the median) of'} the kernel's")
    counts = np.bincount(iterations)
    print("HTP iterations per user (share of users): "
          + ", ".join(f"{c}: {x / args.t:.1%}" for c, x in enumerate(counts) if x)
          + f"; mean {iterations.mean():.2f}; in the 32 cycled users {iterations[hot].mean():.2f}")

    kernel_ns = {name: _best_ns(lambda: K.fit_users(X, y, Ut, who, support, settings, out),
                                  args.repeats, args.t)
                 for name, who in (("all", users), ("cached", in_cache))}

    if args.overlap_only:
        _overlap_table(X, y, Ut, users, support, k, residual, args.repeats)
        return
    # Floors: multiply-adds per user (the first HTP iteration).
    macs = [None, n * d * r, (r * (r + 1) // 2 + r) * n, r ** 3 // 6,
            (sum(p + 1 for p in range(r, m)) + k) * n + m ** 3 // 6 + m * m + m * n,
            n * d, None, n * k + r * n + r * r // 2, None, None, r * n]
    print("\nns per user (passes of 1.32 us); each piece = the replica up to it minus up to "
          "the piece before\n\n| piece | all users in order (as in a fit) | the same, branch-free "
          "top k and _is_top_k | 32 users cycled (X_i in cache) | floor |\n|---|---:|---:|---:|---:|")
    totals = {}
    previous = {}
    for stop, label in enumerate(PIECES):
        cells = []
        for name, who, variant in (("all", users, 0), ("all5", users, 5),
                                   ("cached", in_cache, 0)):
            it = np.zeros(args.t, dtype=np.intp)
            ns = _best_ns(lambda: _warm_path(X, y, Ut, who, support, k, 20, stop, it, residual,
                                               variant), args.repeats, args.t)
            cells.append(_passes(ns - previous.get(name, 0.0)))
            previous[name] = totals[name] = ns
        floor = _passes(macs[stop] * FLOOR_NS_PER_MAC) if macs[stop] else ""
        print(f"| {label} | " + " | ".join(cells) + f" | {floor} |")
    floor_total = sum(x for x in macs if x) * FLOOR_NS_PER_MAC
    print(f"| **the replica, total** | {_passes(totals['all'])} | {_passes(totals['all5'])} | "
          f"{_passes(totals['cached'])} | {_passes(floor_total)} |")
    print(f"| the kernel (fit_users) | {_passes(kernel_ns['all'])} | | "
          f"{_passes(kernel_ns['cached'])} | |")

    _overlap_table(X, y, Ut, users, support, k, residual, args.repeats)

    # Prototypes on the first refit's systems of distinct users.
    t_p = min(args.proto_users, args.t)
    G = np.empty((t_p, m, m))
    h = np.empty((t_p, m))
    M = np.empty((t_p, m, n))
    _collect_refits(X, y, Ut, users[:t_p], support, k, G, h, M)
    yp = np.ascontiguousarray(y[:t_p])
    reps = 4
    print(f"\nPrototypes over {t_p:,} distinct users' first refits, ns per user (passes):\n\n"
          "| piece | kernel's, user after user | prototype | gain | check |\n|---|---:|---:|---:|---|")
    x_each, x_right = np.empty((t_p, m)), np.empty((t_p, m))
    each = _best_ns(lambda: _solve_each(G, h, x_each, reps, False), args.repeats, t_p * reps)
    right = _best_ns(lambda: _solve_each(G, h, x_right, reps, True), args.repeats, t_p * reps)
    scale = np.max(np.abs(x_each))
    scores = np.empty((t_p, d))
    _collect_scores(X, y, Ut, users[:t_p], support, k, scores)
    top = [np.empty((t_p, k), dtype=np.intp) for _ in range(4)]
    top_ns = [_best_ns(lambda: _top_k_bench(scores, k, top[how], reps, how), args.repeats,
                       t_p * reps) for how in range(4)]
    for how, label in ((1, "threshold from 2k block maxima + branch-free compaction"),
                       (2, "k passes of a vectorized maximum, then its index"),
                       (3, "k scans carrying (maximum, index) by selects")):
        print(f"| top k of d=100 scores: {label} | {_passes(top_ns[0])} | "
              f"{_passes(top_ns[how])} | {_passes(top_ns[0] - top_ns[how])} | same supports: "
              f"{np.array_equal(top[0], top[how])} |")
    print(f"| 10x10 Cholesky solve, one user: right-looking, reciprocal pivots | {_passes(each)} | "
          f"{_passes(right)} | {_passes(each - right)} | max diff "
          f"{np.max(np.abs(x_right - x_each)) / scale:.1e} of max|x| |")
    G2, h2 = np.zeros((t_p, m, m)), np.zeros((t_p, m))
    gram_each = _best_ns(lambda: _gram_each(M, yp, G2, h2, r, reps), args.repeats, t_p * reps)
    lower = np.tril(np.ones((m, m), dtype=bool)) & (np.arange(m)[:, None] >= r)
    for lanes, runtime in ((4, False), (8, False), (8, True), (16, True), (32, True)):
        gram, solve = _lanes_kernels(lanes, runtime)
        Gl, hl = _in_lanes(G, lanes), _in_lanes(h, lanes)
        xl = np.empty_like(hl)
        t_l = Gl.shape[0] * lanes
        ns = _best_ns(lambda: solve(Gl, hl, xl, reps), args.repeats, t_l * reps)
        bad = solve(Gl, hl, xl, 1)
        diff = np.max(np.abs(_from_lanes(xl) - x_each[:t_l])) / scale
        how = f"{lanes} users in lanes" + (" (runtime count)" if runtime else "")
        print(f"| 10x10 Cholesky solve, {how} | {_passes(each)} | {_passes(ns)} | "
              f"{_passes(each - ns)} | max diff {diff:.1e}; {bad} lanes to the fallback |")
        Ml, yl = _in_lanes(M, lanes), _in_lanes(yp, lanes)
        Gl2, hl2 = np.zeros_like(Gl), np.zeros_like(hl)
        ns = _best_ns(lambda: gram(Ml, yl, Gl2, hl2, r, reps), args.repeats, t_l * reps)
        diff = (np.max(np.abs(_from_lanes(Gl2)[:, lower] - G2[:t_l][:, lower]))
                / np.max(np.abs(G2[:, lower])))
        print(f"| refit's Gram rows + M^T y, {how} | {_passes(gram_each)} | "
              f"{_passes(ns)} | {_passes(gram_each - ns)} | max diff {diff:.1e} |")


if __name__ == "__main__":
    main()
