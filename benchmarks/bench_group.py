"""The whole steady-state warm local step for groups of G users with the users innermost
(SIMD lanes across users) in the latency-bound small algebra, against the kernel.

    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=$PWD/src python benchmarks/bench_group.py
    ... bench_group.py --t 10000        # faster; X then fits in L3
    ... bench_group.py --compile-only   # the cold compile of the prototype (empty cache dir)

The setting of bench_lanes.py (d=100, n=20, r=k=5, noiseless; the true U and each
user's support from one outer iteration: the steady state, where every user's HTP stops
at its warm support, a fixed point). :func:`_group_path` takes the users in groups of G
consecutive ones:

1. per user (SIMD along d, as the kernel): A_i = X_i U, the next user's X_i prefetched
   meanwhile; A_i^T, X_i[:, S] (S the sorted warm support) and y_i copied into
   lane arrays M (m, n, G), y (n, G) (m = r + k);
2. lanes: the whole Gram matrix [A_i, X_i[:, S]]^T [A_i, X_i[:, S]] and M^T y_i (or, with
   variant & 1, per user in step 1 as the kernel's _prepare + _refit's Gram rows, then
   copied into the lanes);
3. lanes: its right-looking 10 x 10 Cholesky factor, whose leading r x r block is the
   kernel's A^T A factor LA (``_range_basis``: the same pivot test), the two triangular
   solves (coefficients w_i, b_S), the residual e and its square;
4. per user: g = X_i^T e (SIMD along d), into the lanes (d, G);
5. lanes: the top k T of |g| (k scans carrying (maximum, first index) by selects);
6. per user: X_T g_T (a gather of X_i); lanes: its coordinates in range(A_i) through
   LA, the step eta;
7. lanes: the fixed-point test (no entry off S of |eta g| beats S's weakest |b + eta g|,
   the kernel's branch-free count);
8. per user: the outputs (support, coef, residual, e, A_i w_i, X_i^T e) as the kernel's.

A user whose test fails (or whose pivots fail, the kernel's singular fallbacks) is
flagged; the driver refits the flagged users with the kernel afterwards (inside the
timing). The outputs are checked against ``K.fit_users``'s.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from numba import njit

import lowrank_sparse as ls
import lowrank_sparse.timing
from lowrank_sparse import _kernels as K
from bench_lanes import _FAST, _lowrank_prefetching, _prefetch, _top_k_argmax

#: The steps of :func:`_group_path` (it stops after step ``stop``).
STEPS = ["A_i = X_i U, copies into the lanes (per user)",
         "Gram matrix and M^T y (lanes)",
         "10x10 Cholesky (its r x r block = LA), solves, residual (lanes)",
         "g = X_i^T e (per user), into the lanes",
         "top k of |g| (lanes)",
         "line search: X_T g_T (per user), range coords, eta (lanes)",
         "fixed-point test (lanes)",
         "outputs (per user)"]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _group_path(X, y, Ut, users, warm, k, G, out, flagged, stop, variant, fetch):
    """The steady-state warm path for groups of G consecutive entries of ``users``, up to
    step ``stop`` (1..8, :data:`STEPS`); writes the outputs of the users at a fixed
    point into ``out`` (:class:`K.LocalOutputs`) and the others into ``flagged``;
    returns their number and the sum of what _stream_in read.

    variant: & 1 the Gram matrix per user (SIMD along n) instead of in the lanes; & 2
    the lanes' top k scans through a 1-d helper; & 4 top k per user by the kernel's
    _top_k, & 8 by bench_lanes' _top_k_argmax (instead of in the lanes). fetch: how X_i
    gets into cache: 1 the next group's X_i prefetched in equal parts at 7 G + 2 m + 7
    points spread over this group's work, 3 at 5 G + 4 points (after each user's A_i,
    X_i^T e, X_T g_T, outputs, and each step of the lanes), the first group's X_i read
    by _stream_in; 0 the next user's X_i prefetched during A_i (five parts); 2 each X_i
    read by _stream_in before its A_i."""
    t_u = users.shape[0]
    n, d = X.shape[1:]
    r = Ut.shape[0]
    m = r + k
    w = K._work(n, d, r, k, 0)
    Mt, Gu = w.Mt, w.G
    S = np.empty(k, dtype=np.intp)
    ML, yL = np.empty((m, n, G)), np.empty((n, G))
    GL, hL = np.empty((m, m, G)), np.empty((m, G))
    LL, dinv = np.empty((m, m, G)), np.empty((m, G))
    coefL, eL, rsq = np.empty((m, G)), np.empty((n, G)), np.empty(G)
    SL, TL = np.empty((k, G), dtype=np.intp), np.empty((k, G), dtype=np.intp)
    gU, gL, scoreL = np.empty((G, d)), np.empty((d, G)), np.empty((d, G))
    top, at = np.empty(G), np.empty(G)
    vL, uL, eta = np.empty((n, G)), np.empty((r, G)), np.empty(G)
    worst, worst_j = np.empty(G), np.empty(G, dtype=np.intp)
    beats, bad = np.empty(G, dtype=np.intp), np.empty(G, dtype=np.intp)
    base, size = X.ctypes.data, X.strides[0]
    n_flagged, streamed = 0, 0.0
    per_user = (size + 63) // 64 + 1  # cache lines of X_i (not 64-byte aligned)
    points = 7 * G + 2 * m + 7 if fetch == 1 else 5 * G + 4  # prefetch points per group
    chunk = (G * per_user + points - 1) // points  # lines per point
    everything = G * per_user
    for g0 in range(0, t_u, G):
        nl = min(G, t_u - g0)
        g1 = g0 + nl  # the next group's first entry of users
        nl1 = min(G, t_u - g1)
        sent = 0  # of the next group's lines (fetch 1)
        if fetch & 1 and g0 == 0:
            for l in range(nl):
                streamed += K._stream_in(X[users[l]])
        # 1. per user: A_i (SIMD along d), copies into the lanes.
        for l in range(nl):
            i = users[g0 + l]
            Xi = X[i]
            if fetch == 0:
                following = base + users[min(g0 + l + 1, t_u - 1)] * size
                _lowrank_prefetching(Xi, Ut, w.At, following, size, 5, False)
            else:
                if fetch == 2:
                    streamed += K._stream_in(Xi)
                else:
                    sent = _send(base, size, users, g1, nl1, per_user, sent, chunk)
                K._lowrank_features(Xi, Ut, w)
                if fetch & 1:
                    sent = _send(base, size, users, g1, nl1, per_user, sent, chunk)
            K._copy(warm[i], S)
            K._sort_small(S, k)
            for c in range(r):
                for a in range(n):
                    ML[c, a, l] = Mt[c, a]
            for c in range(k):
                SL[c, l] = S[c]
                j = S[c]
                for a in range(n):
                    ML[r + c, a, l] = Xi[a, j]
            for a in range(n):
                yL[a, l] = y[i, a]
            if fetch == 1:  # (the finer points)
                sent = _send(base, size, users, g1, nl1, per_user, sent, chunk)
            if variant & 1:
                for c in range(k):
                    for a in range(n):
                        Mt[r + c, a] = Xi[a, S[c]]
                _gram_one(Mt, y[i], Gu, w.h)
                for p in range(m):
                    hL[p, l] = w.h[p]
                    for q in range(p + 1):
                        GL[p, q, l] = Gu[p, q]
        if fetch & 1:
            sent = _send(base, size, users, g1, nl1, per_user, sent,
                         chunk if stop >= 2 else everything)
        if stop < 2:
            continue
        # 2. lanes: the Gram matrix (lower triangle) and M^T y.
        if not variant & 1:
            for p in range(m):
                for q in range(p + 1):
                    for l in range(nl):
                        GL[p, q, l] = 0.0
                    for a in range(n):
                        for l in range(nl):
                            GL[p, q, l] += ML[p, a, l] * ML[q, a, l]
                for l in range(nl):
                    hL[p, l] = 0.0
                for a in range(n):
                    for l in range(nl):
                        hL[p, l] += ML[p, a, l] * yL[a, l]
                if fetch == 1:  # (the finer points)
                    sent = _send(base, size, users, g1, nl1, per_user, sent, chunk)
        if fetch & 1:
            sent = _send(base, size, users, g1, nl1, per_user, sent,
                         chunk if stop >= 3 else everything)
        if stop < 3:
            continue
        # 3. lanes: right-looking Cholesky (pivot test as the kernel's), solves, residual.
        for b in range(m):
            for a in range(b, m):
                for l in range(nl):
                    LL[a, b, l] = GL[a, b, l]
        for l in range(nl):
            bad[l] = 0
        for c in range(m):
            for l in range(nl):
                s = LL[c, c, l]
                good = s > 1e-12 * GL[c, c, l]
                bad[l] += not good
                piv = np.sqrt(s if good else 1.0)
                LL[c, c, l] = piv
                dinv[c, l] = 1.0 / piv
            for a in range(c + 1, m):
                for l in range(nl):
                    LL[a, c, l] *= dinv[c, l]
            for b in range(c + 1, m):
                for a in range(b, m):
                    for l in range(nl):
                        LL[a, b, l] -= LL[a, c, l] * LL[b, c, l]
            if fetch == 1:  # (the finer points)
                sent = _send(base, size, users, g1, nl1, per_user, sent, chunk)
        for a in range(m):
            for l in range(nl):
                coefL[a, l] = hL[a, l]
        for a in range(m):
            for l in range(nl):
                coefL[a, l] *= dinv[a, l]
            for b in range(a + 1, m):
                for l in range(nl):
                    coefL[b, l] -= LL[b, a, l] * coefL[a, l]
        for a in range(m - 1, -1, -1):
            for l in range(nl):
                coefL[a, l] *= dinv[a, l]
            for p in range(a):
                for l in range(nl):
                    coefL[p, l] -= LL[a, p, l] * coefL[a, l]
        for a in range(n):
            for l in range(nl):
                eL[a, l] = yL[a, l]
        for c in range(m):
            for a in range(n):
                for l in range(nl):
                    eL[a, l] -= coefL[c, l] * ML[c, a, l]
        for l in range(nl):
            rsq[l] = 0.0
        for a in range(n):
            for l in range(nl):
                rsq[l] += eL[a, l] * eL[a, l]
        if fetch & 1:
            sent = _send(base, size, users, g1, nl1, per_user, sent,
                         chunk if stop >= 4 else everything)
        if stop < 4:
            continue
        # 4. per user: g = X_i^T e (SIMD along d); into the lanes.
        res = w.res
        for l in range(nl):
            for a in range(n):
                res[a] = eL[a, l]
            K._correlate(X[users[g0 + l]], res, gU[l])
            if fetch & 1:
                sent = _send(base, size, users, g1, nl1, per_user, sent, chunk)
        for j in range(d):
            for l in range(nl):
                gL[j, l] = gU[l, j]
        if fetch & 1:
            sent = _send(base, size, users, g1, nl1, per_user, sent,
                         chunk if stop >= 5 else everything)
        if stop < 5:
            continue
        # 5. lanes: T = the k largest |g| (first index on ties), by k select scans; or
        # per user (variant & 4: the kernel's _top_k; & 8: bench_lanes' _top_k_argmax).
        if variant & 12:
            score, T = w.score, w.T
            for l in range(nl):
                for j in range(d):
                    score[j] = abs(gU[l, j])
                if variant & 4:
                    K._top_k(score, k, T, w.top_score)
                else:
                    _top_k_argmax(score, k, T, top)
                for c in range(k):
                    TL[c, l] = T[c]
                if fetch == 1:  # (the finer points)
                    sent = _send(base, size, users, g1, nl1, per_user, sent, chunk)
        for j in range(d if not variant & 12 else 0):
            for l in range(nl):
                scoreL[j, l] = abs(gL[j, l])
        for c in range(k if not variant & 12 else 0):  # (the index as a float)
            for l in range(nl):
                top[l] = scoreL[0, l]
                at[l] = 0.0
            for j in range(1, d):
                if variant & 2:
                    _select_row(scoreL[j], top, at, np.float64(j), nl)
                    continue
                jf = np.float64(j)
                for l in range(nl):
                    s = scoreL[j, l]
                    better = s > top[l]
                    top[l] = s if better else top[l]
                    at[l] = jf if better else at[l]
            for l in range(nl):
                TL[c, l] = np.intp(at[l])
                scoreL[TL[c, l], l] = -np.inf
        if fetch & 1:
            sent = _send(base, size, users, g1, nl1, per_user, sent,
                         chunk if stop >= 6 else everything)
        if stop < 6:
            continue
        # 6. line search: v = X_T g_T per user (a gather); the rest in the lanes.
        for l in range(nl):
            Xi = X[users[g0 + l]]
            for a in range(n):
                s = 0.0
                for c in range(k):
                    s += Xi[a, TL[c, l]] * gL[TL[c, l], l]
                vL[a, l] = s
            if fetch & 1:
                sent = _send(base, size, users, g1, nl1, per_user, sent, chunk)
        for c in range(r):
            for l in range(nl):
                uL[c, l] = 0.0
            for a in range(n):
                for l in range(nl):
                    uL[c, l] += ML[c, a, l] * vL[a, l]
        for c in range(r):  # u <- LA^{-1} u, LA the leading block of L
            for p in range(c):
                for l in range(nl):
                    uL[c, l] -= LL[c, p, l] * uL[p, l]
            for l in range(nl):
                uL[c, l] *= dinv[c, l]
        for l in range(nl):
            eta[l] = 0.0  # ||v||^2 - ||u||^2 first
        for a in range(n):
            for l in range(nl):
                eta[l] += vL[a, l] * vL[a, l]
        for c in range(r):
            for l in range(nl):
                eta[l] -= uL[c, l] * uL[c, l]
        for l in range(nl):
            denom = max(eta[l], 0.0)
            num = 0.0
            for c in range(k):
                x = gL[TL[c, l], l]
                num += x * x
            eta[l] = num / (denom if denom > 0 else 1.0)
        if fetch & 1:
            sent = _send(base, size, users, g1, nl1, per_user, sent,
                         chunk if stop >= 7 else everything)
        if stop < 7:
            continue
        # 7. lanes: the fixed-point test. S's weakest |b + eta g| (greatest index on
        # ties), then the entries off S of |eta g| that beat it (b = 0 there).
        for l in range(nl):
            worst[l] = np.inf
            worst_j[l] = -1
        for c in range(k):
            for l in range(nl):
                j = SL[c, l]
                s = abs(coefL[r + c, l] + eta[l] * gL[j, l])
                weaker = s < worst[l] or (s == worst[l] and j > worst_j[l])
                worst[l] = s if weaker else worst[l]
                worst_j[l] = j if weaker else worst_j[l]
        for l in range(nl):
            beats[l] = 0
        for j in range(d):
            for l in range(nl):
                s = abs(eta[l] * gL[j, l])
                beats[l] += np.intp(s > worst[l]) + np.intp(s == worst[l]) * np.intp(j < worst_j[l])
        for c in range(k):
            for l in range(nl):
                j = SL[c, l]
                s = abs(eta[l] * gL[j, l])
                beats[l] -= np.intp(s > worst[l]) + np.intp(s == worst[l]) * np.intp(j < worst_j[l])
        if fetch & 1:
            sent = _send(base, size, users, g1, nl1, per_user, sent,
                         chunk if stop >= 8 else everything)
        if stop < 8:
            continue
        # 8. per user: the outputs, or the user flagged.
        for l in range(nl):
            i = users[g0 + l]
            if beats[l] != 0 or bad[l] != 0:
                flagged[n_flagged] = i
                n_flagged += 1
                continue
            for c in range(k):
                out.support[i, c] = SL[c, l]
            for c in range(m):
                out.coef[i, c] = coefL[c, l]
            out.residual[i] = rsq[l]
            for a in range(n):
                out.vectors[i, a] = eL[a, l]
                s = 0.0
                for c in range(r):
                    s += ML[c, a, l] * coefL[c, l]
                out.lowrank[i, a] = s
            K._copy(gU[l], out.corr_residual[i])
            if fetch & 1:
                sent = _send(base, size, users, g1, nl1, per_user, sent, chunk)
        if fetch & 1:
            _send(base, size, users, g1, nl1, per_user, sent, everything)
    return n_flagged, streamed


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _select_row(row, top, at, jf, nl):
    """top, at = row, jf where row > top, lanes 0..nl-1 (1-d contiguous: vectorizes)."""
    for l in range(nl):
        s = row[l]
        better = s > top[l]
        top[l] = s if better else top[l]
        at[l] = jf if better else at[l]


@njit(cache=True, error_model="numpy")
def _send(base, size, users, first, count, per_user, sent, lines):
    """Prefetch (into L2) the next ``lines`` cache lines, from the ``sent``-th on, of
    the X_i of users[first:first + count] (X_i at base + i size, per_user lines each);
    returns the new number sent."""
    stop = min(sent + lines, count * per_user)
    if sent >= stop:
        return stop
    u = sent // per_user  # (one division per call, not per line)
    line = sent - u * per_user
    start = base + users[first + u] * size
    start -= start % 64
    for _ in range(sent, stop):
        _prefetch(start + 64 * line)
        line += 1
        if line == per_user:
            u, line = u + 1, 0
            if u < count:
                start = base + users[first + u] * size
                start -= start % 64
    return stop


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _gram_one(Mt, yi, G, h):
    """The lower triangle of Mt Mt^T and Mt y_i for one user (SIMD along n): the kernel's
    _prepare's dot products, then _refit's Gram rows four entries at a time."""
    m, n = Mt.shape
    for p in range(m):
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
        s = 0.0
        for a in range(n):
            s += Mt[p, a] * yi[a]
        h[p] = s


def grouped_fit(X, y, Ut, users, warm, k, G, out, stop=len(STEPS), variant=0, fetch=1):
    """:func:`_group_path`, then the kernel for the flagged users; returns their number."""
    flagged = np.empty(users.shape[0], dtype=np.intp)
    count = _group_path(X, y, Ut, users, warm, k, G, out, flagged, stop, variant, fetch)[0]
    if count and stop == len(STEPS):
        K.fit_users(X, y, Ut, flagged[:count], warm, K.LocalSettings(k, 0, 20, True, False),
                    out)
    return count


def _times_ns(run, repeats, per):
    """Wall times of ``repeats`` runs (after one to warm up), ns per item."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e9 / per)
    return np.array(times)


def _outputs(t, n, d, k, m):
    return K.LocalOutputs(np.empty((t, k), dtype=np.intp), np.empty((t, m)), np.empty(t),
                          np.empty((t, n)), np.empty((t, n)), np.empty((t, d)))


def steady_state(t, d=100, n=20, r=5, k=5):
    """bench_lanes.py's set-up: X, y, U^T, the supports of one outer iteration at the
    true U."""
    problem = ls.make_problem(d, t, r, k, rng=0)
    data = ls.sample_data(problem, n, n_test=0, rng=1)
    X, y = data.X, np.ascontiguousarray(data.y)
    del data
    ls.local.precompile(("float64",))
    U = problem.U
    cold = ls.local.local_step(X, y, U, k)
    support = np.ascontiguousarray(ls.local.local_step(X, y, U, k, support_init=cold.support)
                                   .support)
    return X, y, np.ascontiguousarray(U.T), support


def compile_time():
    """Cold compile of :func:`_group_path` (run with an empty NUMBA_CACHE_DIR): the
    kernel's first call, then the prototype's, timed apart."""
    t, d, n, r, k = 64, 100, 20, 5, 5
    X, y, Ut, support = steady_state(t)  # compiles (or loads) the library's kernels
    users = np.arange(t)
    out = _outputs(t, n, d, k, r + k)
    start = time.perf_counter()
    K.fit_users(X, y, Ut, users, support, K.LocalSettings(k, 0, 20, True, False), out)
    kernel_s = time.perf_counter() - start
    start = time.perf_counter()
    grouped_fit(X, y, Ut, users, support, k, 16, out)
    print(f"NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR')}: first fit_users "
          f"{kernel_s:.1f} s (after the set-up's local_step compiled the library), first "
          f"_group_path call {time.perf_counter() - start:.1f} s (its compile)")


#: (label, variant, fetch) of :func:`_group_path` timed for each G.
CONFIGS = [("top k in lanes", 0, 1),
           ("top k per user (kernel's _top_k)", 4, 1),
           ("top k per user (_top_k_argmax)", 8, 1),
           ("top k per user (_top_k_argmax), Gram per user", 9, 1),
           ("top k per user (_top_k_argmax), each X_i by _stream_in", 8, 2),
           ("top k per user (_top_k_argmax), coarser prefetch (5 G + 4 points)", 8, 3),
           ("top k per user (_top_k_argmax), next user prefetched in A_i", 8, 0)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--groups", type=int, nargs="*", default=[8, 16, 32])
    parser.add_argument("--configs", type=int, nargs="*", default=list(range(len(CONFIGS))),
                        help="indices into CONFIGS")
    parser.add_argument("--steps", type=int, nargs="*", default=[16],
                        help="the G whose per-step split is timed (config 2 and 4)")
    parser.add_argument("--cached", action="store_true",
                        help="64 users cycled (X_i in cache) instead of all users in order")
    parser.add_argument("--compile-only", action="store_true")
    args = parser.parse_args()
    if args.compile_only:
        compile_time()
        return
    d, n, r, k = 100, 20, 5, 5
    m = r + k
    X, y, Ut, support = steady_state(args.t)
    t = args.t
    users = np.tile(np.arange(64), t // 64) if args.cached else np.arange(t)
    per = users.shape[0]
    pass_ns = ls.timing.one_pass_seconds(X, repeats=5) * 1e9 / t
    print(f"t={t:,}, d={d}, n={n}, r={r}, k={k}, noiseless, at the true U; one pass (read "
          f"of X, timing.one_pass_seconds) {pass_ns:.0f} ns/user; load "
          f"{os.getloadavg()[0]:.2f}; users: {'64 cycled' if args.cached else 'all in order'}")

    def cell(ns):
        return f"{ns:.0f} ({ns / pass_ns:.2f})"

    ref = _outputs(t, n, d, k, m)
    settings = K.LocalSettings(k, 0, 20, True, False)
    kernel = _times_ns(lambda: K.fit_users(X, y, Ut, users, support, settings, ref),
                       args.repeats, per)
    rows = [("the kernel (`fit_users`)", kernel)]
    scale = np.sum(y * y, axis=1)
    for G in args.groups:
        for c in args.configs:
            name, variant, fetch = CONFIGS[c]
            out = _outputs(t, n, d, k, m)
            count = grouped_fit(X, y, Ut, users, support, k, G, out, variant=variant,
                                fetch=fetch)
            label = f"G={G}, {name}"
            if not args.cached:
                rel = np.max(np.abs(out.residual - ref.residual) / scale)
                dev = max(np.max(np.abs(getattr(out, f) - getattr(ref, f)))
                          / np.max(np.abs(getattr(ref, f)))
                          for f in ("coef", "vectors", "lowrank", "corr_residual"))
                print(f"{label}: {count} users flagged (not at a fixed point, or singular); "
                      f"supports equal to the kernel's: {np.array_equal(out.support, ref.support)}; "
                      f"squared residuals: max |diff| / ||y_i||^2 {rel:.1e} (median residual "
                      f"{np.median(ref.residual):.1e}, median ||y_i||^2 {np.median(scale):.1e}); "
                      f"coef, e, A w, X^T e: max diff / max {dev:.1e}", flush=True)
            times = _times_ns(lambda: grouped_fit(X, y, Ut, users, support, k, G, out,
                                                  variant=variant, fetch=fetch),
                              args.repeats, per)
            rows.append((label, times))
    rows.append(("the kernel again", _times_ns(
        lambda: K.fit_users(X, y, Ut, users, support, settings, ref), args.repeats, per)))
    print(f"\nns per user (passes), best and median of {args.repeats}:\n\n"
          "| | best | median |\n|---|---:|---:|")
    for label, times in rows:
        print(f"| {label} | {cell(times.min())} | {cell(np.median(times))} |")
    for G in args.steps:
        for c in (2, 4):
            name, variant, fetch = CONFIGS[c]
            print(f"\nG={G}, {name}: each step = the prototype up to it minus up to the step "
                  f"before (best of {args.repeats}; with the cursor prefetch, what is left of "
                  f"the next group's X_i is prefetched at the stop)\n\n| step | ns (passes) |"
                  "\n|---|---:|")
            out = _outputs(t, n, d, k, m)
            before = 0.0
            for stop in range(1, len(STEPS) + 1):
                ns = _times_ns(lambda: grouped_fit(X, y, Ut, users, support, k, G, out, stop,
                                                   variant, fetch), args.repeats, per).min()
                print(f"| {STEPS[stop - 1]} | {cell(ns - before)} |", flush=True)
                before = ns
            print(f"| total | {cell(before)} |")


if __name__ == "__main__":
    main()
