"""What each piece of the warm steady-state local step costs per user with X_i in cache,
against its FLOP floor, and what processing several users in SIMD lanes would gain.

    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_lanes.py
    python benchmarks/bench_lanes.py --t 20000 --repeats 9

The setting of bench_passes.py per user (d=100, n=20, r=k=5, noiseless, ``Trimmed()``):
a fit from the moment initialization at t users (its per-user work does not depend on
t), then, at the fit's final U and supports, the local step's steady-state warm path
(``_kernels._fit_tasks`` with ``n_starts=0``) replayed by :func:`_warm_path`, a copy of it
that stops after a given piece: the cost of piece p is the time up to p minus the time
up to the piece before, over 32 users cycled so that X_i stays in cache (the arithmetic
alone, as bench_phases.py's "arithmetic alone"). The copy is checked against the
kernel (same residuals, bit for bit) and timed next to it.

Then the prototypes, each against the kernel's own function on the same inputs (the
refits' Gram matrices and right-hand sides, the HTP scores of the same users):
the refit's (r + k) x (r + k) Cholesky solve for LANES users at once, users innermost
(SIMD lanes), and the refit's Gram rows likewise; a top-k selection without the
insertion list's data-dependent branches.

One pass is 1.32 us per user (``timing.one_pass_seconds`` at t=1e5 on a quiet machine,
132 ms); floors count multiply-adds at AVX2's 8 per cycle (two 4-wide FMAs) at the clock
that makes A_i = X_i U's 1e4 multiply-adds 0.27 passes (3.5 GHz), as bench_phases.py.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from numba import njit

import lowrank_sparse as ls
from lowrank_sparse import _kernels as K

_FAST = {"reassoc", "contract"}
PASS_NS = 1320.0  # one pass over X per user at t=1e5 (132 ms / 1e5), quiet machine
FLOOR_NS_PER_MAC = 1.0 / (8 * 3.5)  # AVX2 peak, 8 multiply-adds per cycle at 3.5 GHz
LANES = 4  # users per SIMD group (AVX2: 4 float64)

#: The pieces of the warm path, in order (what _warm_path runs up to ``stop``).
PIECES = ["read X_i (_stream_in)", "A_i = X_i U (_lowrank_features)",
          "A^T A, A^T y (_prepare)", "r x r Cholesky (_range_basis)",
          "warm support + refit (_refit: gather, Gram rows, 10x10 Cholesky, residual)",
          "X_i^T e (_correlate)", "|g|, top k (_top_k)",
          "line search (X_T g_T, _range_coords, eta)", "scores, fixed-point test (_is_top_k)",
          "further HTP iterations (top k + refit + the above)",
          "outputs (copies, A_i w_i, X_i^T e if needed)"]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _warm_path(X, y, Ut, users, warm, k, max_iter, stop, iterations, residual):
    """The steady-state warm path of ``_kernels._fit_tasks`` (n_starts=0, use_warm,
    not keep_existing), the same calls in the same order, run only up to piece ``stop``
    (an index into PIECES). Writes each user's HTP iterations and squared residual."""
    n, d = X.shape[1:]
    r = Ut.shape[0]
    w = K._work(n, d, r, k, 0)
    S, T, coef, res, g, b, score = w.S, w.T, w.coef, w.res, w.grad, w.b, w.score
    top_score, v, u, LA = w.top_score, w.direction, w.coords, w.LA
    streamed = 0.0
    for i in users:
        Xi, yi = X[i], y[i]
        streamed += K._stream_in(Xi)
        if stop < 1:
            continue
        K._lowrank_features(Xi, Ut, w.At)
        if stop < 2:
            continue
        K._prepare(w, yi)
        if stop < 3:
            continue
        Bt = K._range_basis(w)
        if stop < 4:
            continue
        K._copy(warm[i], S)
        K._sort_small(S, k)
        best = K._refit(Xi, yi, w, k)
        K._keep_as_best(w)
        if stop < 5:
            continue
        current_is_best, fixed, it = True, False, 0
        while it < max_iter:
            it += 1
            K._fill(b, 0.0)
            for c in range(k):
                b[S[c]] = coef[r + c]
            K._correlate(Xi, res, g)
            if stop < 6:
                break
            for j in range(d):
                score[j] = abs(g[j])
            K._top_k(score, k, T, top_score)
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
            if stop < 8:
                break
            for j in range(d):
                score[j] = abs(b[j] + eta * g[j])
            if K._is_top_k(score, S, k):
                if current_is_best:
                    K._copy(g, w.best_grad)
                fixed = True
                break
            if stop < 9:
                break
            K._top_k(score, k, S, top_score)
            res_sq = K._refit(Xi, yi, w, k)
            current_is_best = res_sq < best
            if current_is_best:
                best = res_sq
                K._keep_as_best(w)
        iterations[i] = it
        residual[i] = best
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


# ---------------------------------------------------------------- prototype: lanes

@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _collect_refits(X, y, Ut, users, warm, k, G_out, h_out):
    """The first refit's Gram matrix G (m, m) and M^T y (m) of each user, as _refit
    builds them (for the solve prototypes)."""
    n, d = X.shape[1:]
    r = Ut.shape[0]
    m = r + k
    w = K._work(n, d, r, k, 0)
    for u in range(users.shape[0]):
        i = users[u]
        K._lowrank_features(X[i], Ut, w.At)
        K._prepare(w, y[i])
        K._copy(warm[i], w.S)
        K._sort_small(w.S, k)
        K._refit(X[i], y[i], w, k)
        for p in range(m):
            h_out[u, p] = w.h[p]
            for q in range(m):
                G_out[u, p, q] = w.G[p, q]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _solve_each(G, h, x, repeats):
    """The kernel's solve, one user after another: _cholesky + _forward + _backward."""
    t, m = h.shape
    L = np.zeros((m, m))
    xu = np.empty(m)
    for _ in range(repeats):
        for u in range(t):
            K._solve_spd(G[u], h[u], xu, L, m)
            for p in range(m):
                x[u, p] = xu[p]
    return x[0, 0]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _to_lanes(G, h):
    """(t, m, m), (t, m) -> groups of LANES users, users innermost: (t/LANES, m, m, LANES)."""
    t, m = h.shape
    Gl = np.empty((t // LANES, m, m, LANES))
    hl = np.empty((t // LANES, m, LANES))
    for u in range(t // LANES * LANES):
        grp, lane = u // LANES, u % LANES
        for p in range(m):
            hl[grp, p, lane] = h[u, p]
            for q in range(m):
                Gl[grp, p, q, lane] = G[u, p, q]
    return Gl, hl


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _solve_lanes_group(G, h, x, L, diag_inv, ok):
    """Cholesky solve of LANES systems at once, users innermost: G (m, m, LANES),
    h, x (m, LANES). The same operations as _cholesky/_forward/_backward per lane, but
    1/L[c, c] once per column (multiplications where the kernel divides: rounding may
    differ in the last bit). ok[lane] False where a pivot is not above 1e-12 of its
    diagonal entry (that lane needs the singular fallback)."""
    m = h.shape[0]
    s = np.empty(LANES)
    for lane in range(LANES):
        ok[lane] = True
    for c in range(m):
        for lane in range(LANES):
            s[lane] = G[c, c, lane]
        for p in range(c):
            for lane in range(LANES):
                s[lane] -= L[c, p, lane] * L[c, p, lane]
        for lane in range(LANES):
            good = s[lane] > 1e-12 * G[c, c, lane]
            ok[lane] = ok[lane] and good
            piv = np.sqrt(s[lane]) if good else 1.0
            L[c, c, lane] = piv
            diag_inv[c, lane] = 1.0 / piv
        for a in range(c + 1, m):
            for lane in range(LANES):
                s[lane] = G[a, c, lane]
            for p in range(c):
                for lane in range(LANES):
                    s[lane] -= L[a, p, lane] * L[c, p, lane]
            for lane in range(LANES):
                L[a, c, lane] = s[lane] * diag_inv[c, lane]
    for a in range(m):
        for lane in range(LANES):
            x[a, lane] = h[a, lane]
        for p in range(a):
            for lane in range(LANES):
                x[a, lane] -= L[a, p, lane] * x[p, lane]
        for lane in range(LANES):
            x[a, lane] *= diag_inv[a, lane]
    for a in range(m - 1, -1, -1):
        for p in range(a + 1, m):
            for lane in range(LANES):
                x[a, lane] -= L[p, a, lane] * x[p, lane]
        for lane in range(LANES):
            x[a, lane] *= diag_inv[a, lane]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _solve_lanes(Gl, hl, xl, repeats):
    groups, m = hl.shape[0], hl.shape[1]
    L = np.zeros((m, m, LANES))
    diag_inv = np.empty((m, LANES))
    ok = np.empty(LANES, dtype=np.bool_)
    bad = 0
    for _ in range(repeats):
        for grp in range(groups):
            _solve_lanes_group(Gl[grp], hl[grp], xl[grp], L, diag_inv, ok)
            for lane in range(LANES):
                bad += not ok[lane]
    return bad


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _gather_cols(X, users, S, Mt_all):
    """Mt_all[u, c, :] = X[users[u]][:, S[users[u], c]] (the refit's support columns)."""
    n = X.shape[1]
    k = S.shape[1]
    for u in range(users.shape[0]):
        i = users[u]
        for c in range(k):
            for a in range(n):
                Mt_all[u, c, a] = X[i, a, S[i, c]]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _gram_each(At_all, Mt_all, y_all, G, h, repeats):
    """The refit's new Gram rows and M^T y (k rows against r + k), user by user, as
    _refit (four entries at a time)."""
    t, r, n = At_all.shape
    k = Mt_all.shape[1]
    m = r + k
    Mt = np.empty((m, n))
    for _ in range(repeats):
        for u in range(t):
            for c in range(r):
                for a in range(n):
                    Mt[c, a] = At_all[u, c, a]
            for c in range(k):
                for a in range(n):
                    Mt[r + c, a] = Mt_all[u, c, a]
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
                    s += Mt[p, a] * y_all[u, a]
                h[u, p] = s
    return G[0, r, 0]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _gram_lanes(Ml, yl, Gl, hl, r, repeats):
    """The same Gram rows for LANES users at once: Ml (groups, m, n, LANES) (rows of
    M^T with the users innermost), yl (groups, n, LANES)."""
    groups, m, n = Ml.shape[0], Ml.shape[1], Ml.shape[2]
    acc = np.empty(LANES)
    for _ in range(repeats):
        for grp in range(groups):
            M, yy, G, h = Ml[grp], yl[grp], Gl[grp], hl[grp]
            for p in range(r, m):
                for q in range(p + 1):
                    for lane in range(LANES):
                        acc[lane] = 0.0
                    for a in range(n):
                        for lane in range(LANES):
                            acc[lane] += M[p, a, lane] * M[q, a, lane]
                    for lane in range(LANES):
                        G[p, q, lane] = acc[lane]
                for lane in range(LANES):
                    acc[lane] = 0.0
                for a in range(n):
                    for lane in range(LANES):
                        acc[lane] += M[p, a, lane] * yy[a, lane]
                for lane in range(LANES):
                    h[p, lane] = acc[lane]
    return Gl[0, r, 0, 0]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _top_k_each(scores, k, out, repeats):
    """The kernel's _top_k over each row of scores."""
    t = scores.shape[0]
    best = np.empty(k)
    S = np.empty(k, dtype=np.intp)
    for _ in range(repeats):
        for u in range(t):
            K._top_k(scores[u], k, S, best)
            for c in range(k):
                out[u, c] = S[c]
    return out[0, 0]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _top_k_threshold(scores, k, out, repeats):
    """The same support as _top_k, with fewer data-dependent branches: tau = the k-th
    largest of a sample (the first 4k entries), a lower bound of the k-th largest of all;
    a branch-free compaction of the entries >= tau (the candidates, in index order); the
    insertion-list top k of the candidates only."""
    t, d = scores.shape
    best = np.empty(k)
    S = np.empty(k, dtype=np.intp)
    cand = np.empty(d, dtype=np.intp)
    cand_score = np.empty(d)
    for _ in range(repeats):
        for u in range(t):
            sc = scores[u]
            K._top_k(sc[:4 * k], k, S, best)
            tau = best[k - 1]
            # Candidates: entries >= tau (branch-free compaction).
            nc = 0
            for j in range(d):
                cand[nc] = j
                nc += sc[j] >= tau
            for c in range(nc):
                cand_score[c] = sc[cand[c]]
            K._top_k(cand_score[:nc], k, S, best)
            for c in range(k):
                out[u, c] = cand[S[c]]
    return out[0, 0]


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _collect_scores(X, y, Ut, users, warm, k, scores):
    """|X_i^T e_i| at each user's warm refit: the scores HTP's first top k sees."""
    n, d = X.shape[1:]
    r = Ut.shape[0]
    w = K._work(n, d, r, k, 0)
    for u in range(users.shape[0]):
        i = users[u]
        K._lowrank_features(X[i], Ut, w.At)
        K._prepare(w, y[i])
        K._copy(warm[i], w.S)
        K._sort_small(w.S, k)
        K._refit(X[i], y[i], w, k)
        K._correlate(X[i], w.res, w.grad)
        for j in range(d):
            scores[u, j] = abs(w.grad[j])


# ---------------------------------------------------------------- driver

def _median_ns(run, repeats, per):
    """Median wall time of run() in ns per item (per items per run)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e9 / per


def _row(label, ns, macs=None):
    floor = f"{macs * FLOOR_NS_PER_MAC:.0f} ({macs * FLOOR_NS_PER_MAC / PASS_NS:.3f})" if macs else ""
    print(f"| {label} | {ns:.0f} | {ns / PASS_NS:.3f} | {floor} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    d, n, r, k = 100, 20, 5, 5
    m = r + k
    problem = ls.make_problem(d, args.t, r, k, rng=0)
    data = ls.sample_data(problem, n, n_test=0, rng=1)
    X, y = data.X, np.ascontiguousarray(data.y)
    ls.local.precompile(("float64",))
    fit = ls.amht_lrs(X, y, r, k, init=ls.moment_init(X, y, r), tol=1e-10,
                      robust=ls.Trimmed())
    support = np.ascontiguousarray(np.sort(np.argsort(fit.B == 0, axis=1, kind="stable")[:, :k],
                                           axis=1))
    Ut = np.ascontiguousarray(fit.U.T)
    users = np.arange(args.t)
    rng = np.random.default_rng(0)
    hot = rng.choice(args.t, 32, replace=False)
    in_cache = np.tile(hot, args.t // 32)

    # The replica against the kernel: same residuals; HTP iterations per user.
    iterations, residual = np.zeros(args.t, dtype=np.intp), np.empty(args.t)
    _warm_path(X, y, Ut, users, support, k, 20, len(PIECES), iterations, residual)
    kernel = ls.local.local_step(X, y, fit.U, k, support_init=support, restart_above=None,
                                 n_starts=0)
    same = np.array_equal(kernel.residual, residual)
    counts = np.bincount(iterations)
    print(f"t={args.t:,}, d={d}, n={n}, r={r}, k={k}, noiseless, Trimmed(); final distance "
          f"{ls.metrics.subspace_distance(problem.U, fit.U):.1e}; replica's residuals equal the "
          f"kernel's: {same}")
    print("HTP iterations per user in the steady state (share of users): "
          + ", ".join(f"{c}: {x / args.t:.1%}" for c, x in enumerate(counts) if x)
          + f"; mean {iterations.mean():.2f}")
    hot_counts = np.bincount(iterations[hot], minlength=21)
    print("  in the 32 cycled users: mean " f"{iterations[hot].mean():.2f}")

    out = K.LocalOutputs(np.empty((args.t, k), dtype=np.intp), np.empty((args.t, m)),
                         np.empty(args.t), np.empty((args.t, n)), np.empty((args.t, n)),
                         np.empty((args.t, d)))
    settings = K.LocalSettings(k, 0, 20, True, False)
    kernel_ns = _median_ns(lambda: K.fit_users(X, y, Ut, in_cache, support, settings, out),
                           args.repeats, in_cache.size)

    # Floors in multiply-adds per user (one HTP iteration; "further" scaled by the mean).
    macs = [None, n * d * r, (r * (r + 1) // 2 + r) * n, r ** 3 // 6,
            (sum(p + 1 for p in range(r, m)) + k) * n + m ** 3 // 6 + m * m + m * n,
            n * d, None, n * k + r * n + r * r // 2, None, None, r * n + n * d * 0]
    print("\n| piece (X_i in cache, 32 users cycled) | ns/user | passes | floor ns (passes) |"
          "\n|---|---:|---:|---:|")
    previous = 0.0
    for stop, label in enumerate(PIECES):
        it = np.zeros(args.t, dtype=np.intp)
        ns = _median_ns(lambda: _warm_path(X, y, Ut, in_cache, support, k, 20, stop, it,
                                           residual), args.repeats, in_cache.size)
        _row(label, ns - previous, macs[stop])
        previous = ns
    _row("**the warm path (replica), total**", previous,
         sum(x for x in macs if x) + (iterations[hot].mean() - 1) * (macs[4] + macs[5]))
    _row("the kernel (fit_users, in cache)", kernel_ns)

    # Prototypes on the first refit's systems of every user.
    G = np.empty((args.t, m, m))
    h = np.empty((args.t, m))
    _collect_refits(X, y, Ut, users, support, k, G, h)
    x_each = np.empty((args.t, m))
    reps = 3
    each_ns = _median_ns(lambda: _solve_each(G, h, x_each, reps), args.repeats, args.t * reps)
    Gl, hl = _to_lanes(G, h)
    xl = np.empty_like(hl)
    lanes_ns = _median_ns(lambda: _solve_lanes(Gl, hl, xl, reps), args.repeats,
                          (args.t // LANES * LANES) * reps)
    bad = _solve_lanes(Gl, hl, xl, 1)
    x_lanes = xl.transpose(0, 2, 1).reshape(-1, m)
    t4 = x_lanes.shape[0]
    rel = np.max(np.abs(x_lanes - x_each[:t4])) / np.max(np.abs(x_each[:t4]))
    print(f"\nPrototypes (all {args.t:,} users' data, which fits in L2 per piece; ns per user):\n"
          "\n| piece | kernel's, user by user | LANES users at once | gain ns/user (passes) |"
          "\n|---|---:|---:|---:|")
    print(f"| 10x10 Cholesky solve, {LANES} lanes | {each_ns:.0f} | {lanes_ns:.0f} | "
          f"{each_ns - lanes_ns:.0f} ({(each_ns - lanes_ns) / PASS_NS:.3f}) |")
    print(f"  (max relative difference {rel:.1e}; lanes needing the singular fallback: {bad})")

    At_all = np.empty((args.t, r, n))
    for u in range(args.t):  # (setup, not timed)
        At_all[u] = (X[u] @ fit.U).T
    Mt_all = np.empty((args.t, k, n))
    _gather_cols(X, users, support, Mt_all)
    G2, h2 = np.zeros((args.t, m, m)), np.zeros((args.t, m))
    gram_each = _median_ns(lambda: _gram_each(At_all, Mt_all, y, G2, h2, reps), args.repeats,
                           args.t * reps)
    groups = args.t // LANES
    Ml = np.ascontiguousarray(np.concatenate([At_all, Mt_all], axis=1)[:groups * LANES]
                              .reshape(groups, LANES, m, n).transpose(0, 2, 3, 1))
    yl = np.ascontiguousarray(y[:groups * LANES].reshape(groups, LANES, n).transpose(0, 2, 1))
    Gl2, hl2 = np.zeros((groups, m, m, LANES)), np.zeros((groups, m, LANES))
    gram_lanes = _median_ns(lambda: _gram_lanes(Ml, yl, Gl2, hl2, r, reps), args.repeats,
                            groups * LANES * reps)
    G2l = Gl2.transpose(0, 3, 1, 2).reshape(-1, m, m)
    rows = np.s_[:, r:, :]
    mask = np.tril(np.ones((m, m), dtype=bool))[r:]
    rel = (np.max(np.abs(G2l[rows][:, mask] - G2[:groups * LANES][rows][:, mask]))
           / np.max(np.abs(G2[rows][:, mask])))
    print(f"| Gram rows + M^T y (k x (r + k) dots of n), {LANES} lanes | {gram_each:.0f} | "
          f"{gram_lanes:.0f} | {gram_each - gram_lanes:.0f} "
          f"({(gram_each - gram_lanes) / PASS_NS:.3f}) |")
    print(f"  (max relative difference {rel:.1e}; the kernel's includes copying M^T's rows)")

    scores = np.empty((args.t, d))
    _collect_scores(X, y, Ut, users, support, k, scores)
    top_each, top_thr = np.empty((args.t, k), dtype=np.intp), np.empty((args.t, k), dtype=np.intp)
    each_ns = _median_ns(lambda: _top_k_each(scores, k, top_each, reps), args.repeats,
                         args.t * reps)
    thr_ns = _median_ns(lambda: _top_k_threshold(scores, k, top_thr, reps), args.repeats,
                        args.t * reps)
    print(f"| top k of d=100 scores, threshold + branch-free compaction | {each_ns:.0f} | "
          f"{thr_ns:.0f} | {each_ns - thr_ns:.0f} ({(each_ns - thr_ns) / PASS_NS:.3f}) |")
    print(f"  (same supports: {np.array_equal(top_each, top_thr)})")


if __name__ == "__main__":
    main()
