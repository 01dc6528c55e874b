"""Where a steady-state AMHT-LRS iteration goes, phase by phase, in passes over X, next
to each phase's floor.

    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_phases.py
    python benchmarks/bench_phases.py --t 10000          # faster, same shape per user

The setting of bench_passes.py (t=1e5, d=100, n=20, r=k=5, ``Trimmed()``). One fit from
the moment initialization with the phases timed in every steady-state iteration (U
settled, only outliers restarted): the local step's compiled kernel for every user from
its warm support, its restart of the outliers, the U step's CG operator applications,
its residual from the kept users' correlations, and the rest (Python). Then, at the
fit's final U and supports, the floors: a plain read of X in memory order on one thread; the local
step's kernel over 32 users over and over, so that X_i is always in cache (its
arithmetic alone); A_i = X_i U alone in cache (n d r = 1e4 multiply-adds per user,
whose AVX2 peak of 8 per cycle is about 0.3 passes here on one thread); and reading only the
kept users' X on one thread, the CG operator's floor. One pass:
``lowrank_sparse.timing.one_pass_seconds`` (a read of X on numba's threads), medians of
repeats.

The "X read" column counts the users whose X_i each phase reads from memory, in passes:
the iteration's memory traffic. Every per-user quantity the U step needs is computed
while the local step has X_i in cache, and a CG operator application (over the users of
nonzero weight) needs the sums over all users of the read before it, so it cannot share
that read: the traffic is at its floor, and what an iteration costs above it is
arithmetic (issue 15's question whether an iteration can be within 2 passes: only if
the local step's arithmetic alone, in cache, is well under 2).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numba
import numpy as np
from numba import njit

import lowrank_sparse as ls
from lowrank_sparse import _kernels, amht, global_step, timing
from lowrank_sparse.alternating import RESTART_ALL_ABOVE_CHANGE


@njit(cache=True, fastmath={"reassoc", "contract"})
def _read(X, users):
    s = 0.0
    for i in users:
        for a in range(X.shape[1]):
            for j in range(X.shape[2]):
                s += X[i, a, j]
    return s


@njit(cache=True, fastmath={"reassoc", "contract"})
def _lowrank(X, users, Ut, k):
    w = _kernels._work(X.shape[1], X.shape[2], Ut.shape[0], k, 0)  # nothing prefetched
    for i in users:
        _kernels._lowrank_features(X[i], Ut, w)
    return w.At[0, 0]


def _median_seconds(run, repeats):
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _timed_phases(phases, reads):
    """Wrap the functions each phase runs so that their time adds up in ``phases``, and
    the number of users whose X_i they read from memory in ``reads``."""
    def wrap(module, name, key_of, users_read):
        original = getattr(module, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                phases[key_of(*args)] += time.perf_counter() - start
                reads[key_of(*args)] += users_read(*args)
        setattr(module, name, timed)

    wrap(_kernels, "fit_users", lambda *a: ("local step, restarts" if a[5].keep_existing
                                            else "local step, every user"),
         lambda *a: len(a[3]))
    # The operator skips the users of weight 0 (_normal_operator_blocks).
    wrap(global_step, "_apply_compiled", lambda *a: "U step, CG operator",
         lambda X, V, W, omega: np.count_nonzero(omega))
    wrap(amht, "_weighted_correlations", lambda *a: "U step, residual", lambda *a: 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    d, n, r, k = 100, 20, 5, 5
    problem = ls.make_problem(d, args.t, r, k, rng=0)
    data = ls.sample_data(problem, n, n_test=0, rng=1)
    X, y = data.X, data.y
    del data
    ls.local.precompile(("float64",))
    one_pass = timing.one_pass_seconds(X, repeats=args.repeats)

    phases, reads, per_iteration, reads_per_iteration = defaultdict(float), defaultdict(int), [], []
    _timed_phases(phases, reads)

    def record(it, U):
        per_iteration.append(dict(phases))
        reads_per_iteration.append(dict(reads))
        phases.clear()
        reads.clear()

    fit = ls.amht_lrs(X, y, r, k, init=ls.moment_init(X, y, r), tol=1e-10,
                      robust=ls.Trimmed(), callback=record)  # as bench_passes.py
    seconds = np.diff(fit.history.seconds, prepend=0.0)
    changes = fit.history.subspace_change
    steady = [it for it in range(1, len(seconds)) if changes[it - 1] <= RESTART_ALL_ABOVE_CHANGE]
    print(f"t={args.t:,}, d={d}, n={n}, r={r}, k={k}, X float64: one pass "
          f"{one_pass * 1e3:.1f} ms; {len(steady)} steady-state iterations of {fit.n_iter}, "
          f"CG iterations {np.median(fit.history.cg_iterations[steady]):g} (median)")
    print("| phase | passes (median) | X read (passes, median) |\n|---|---:|---:|")
    names = ["local step, every user", "local step, restarts", "U step, CG operator",
             "U step, residual"]
    read = lambda it, name: reads_per_iteration[it].get(name, 0) / args.t
    for name in names:
        print(f"| {name} | {np.median([per_iteration[it].get(name, 0.0) for it in steady]) / one_pass:.2f} "
              f"| {np.median([read(it, name) for it in steady]):.2f} |")
    rest = [seconds[it] - sum(per_iteration[it].get(name, 0.0) for name in names) for it in steady]
    print(f"| the rest (Python) | {np.median(rest) / one_pass:.2f} | 0 |")
    print(f"| **iteration** | **{np.median(seconds[steady]) / one_pass:.2f}** | "
          f"**{np.median([sum(read(it, name) for name in names) for it in steady]):.2f}** |")

    # Floors, at the fit's final U and supports.
    support = np.sort(np.argsort(fit.B == 0, axis=1, kind="stable")[:, :k], axis=1)
    Ut = np.ascontiguousarray(fit.U.T)
    users = np.arange(args.t)
    in_cache = np.tile(np.random.default_rng(0).choice(args.t, 32, replace=False), args.t // 32)
    out = _kernels.LocalOutputs(np.empty((args.t, k), dtype=np.intp), np.empty((args.t, r + k)),
                                np.empty(args.t), np.empty((args.t, n)), np.empty((args.t, n)),
                                np.empty((args.t, d)))
    settings = _kernels.LocalSettings(k, 0, 20, True, False)
    local = lambda who: lambda: _kernels.fit_users(X, y, Ut, who, support, settings, out)
    residual = ls.local.local_step(X, y, fit.U, k, support_init=support).residual
    kept = np.flatnonzero(ls.Trimmed().weights(residual, n - r - k, k / d))
    rows = [("local step's kernel, every user (as in the fit)", local(users)),
            ("  its arithmetic alone (X_i in cache)", local(in_cache)),
            ("  reading X in memory order, one thread", lambda: _read(X, users)),
            ("  A_i = X_i U alone, in cache", lambda: _lowrank(X, in_cache, Ut, k)),
            (f"reading the kept users' X ({kept.size / args.t:.1%}), one thread",
             lambda: _read(X, kept))]
    print("\n| at the final U | passes |\n|---|---:|")
    for label, run in rows:
        print(f"| {label} | {_median_seconds(run, args.repeats) / one_pass:.2f} |")
    print(f"\n{numba.get_num_threads()} numba threads (the rows marked one thread run on one).")


if __name__ == "__main__":
    main()
