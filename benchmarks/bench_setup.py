"""What an AMHT-LRS fit does before its first outer iteration ends, in seconds and in
passes over X: the set-up (checks, scaling, moment initialization, ||X_i||^2), the
low-rank warm-up (3 iterations with sparsity 0) and the first iteration, which restarts
every user from greedy supports.

    python benchmarks/bench_setup.py                    # t=1e5, d=100, n=40, r=k=5, float32
    python benchmarks/bench_setup.py --repeats 5 --t 20000

The setting is bench_million.py's at a tenth of its users (X is 1.5 GiB), so the times
scale to the million-user fit by about 10. Each repeat is one fit with the library
defaults, stopped after two iterations; the phases are told apart by timestamps around
the fit's two calls of ``alternating.alternate`` (warm-up, then the main loop) and at the
callback. One pass is ``lowrank_sparse.timing.one_pass_seconds``, measured before each
fit. Prints every repeat, then best and median per phase.
"""

import argparse
import time
import warnings

import numpy as np

import lowrank_sparse as ls
from lowrank_sparse import amht, timing


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--r", type=int, default=5)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    problem = ls.make_problem(args.d, args.t, args.r, args.k, rng=0)
    data = ls.sample_data(problem, args.n, n_test=0, rng=1, dtype=args.dtype)
    X, y = data.X, data.y
    del data
    ls.local.precompile((args.dtype,))

    calls = []  # (start, end) of each call of alternate inside the fit
    alternate = amht.alternate

    def timed_alternate(*pos, **kw):
        start = time.perf_counter()
        run = alternate(*pos, **kw)
        calls.append((start, time.perf_counter()))
        return run

    amht.alternate = timed_alternate
    rows = []
    for repeat in range(args.repeats):
        one_pass = timing.one_pass_seconds(X)
        calls.clear()
        stamps = []
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ls.ConvergenceWarning)
            ls.amht_lrs(X, y, args.r, args.k, n_iter=2, tol=0.0,
                        callback=lambda it, U: stamps.append(time.perf_counter()))
        (warmup_start, warmup_end), (loop_start, _) = calls
        phases = {"set-up": warmup_start - start, "low-rank warm-up": warmup_end - warmup_start,
                  "iteration 1 (all restart)": stamps[0] - loop_start,
                  "to the end of iteration 1": stamps[0] - start}
        print(f"repeat {repeat + 1}: one pass {one_pass:.3f} s; " + "; ".join(
            f"{name} {s:.2f} s = {s / one_pass:.1f} passes" for name, s in phases.items()),
              flush=True)
        rows.append({name: (s, s / one_pass) for name, s in phases.items()})
    print(f"t={args.t:,}, d={args.d}, n={args.n}, r={args.r}, k={args.k}, X {args.dtype}, "
          f"{args.repeats} repeats\n| phase | seconds, best / median | passes, best / median |"
          "\n|---|---:|---:|")
    for name in rows[0]:
        seconds = [row[name][0] for row in rows]
        passes = [row[name][1] for row in rows]
        print(f"| {name} | {min(seconds):.2f} / {np.median(seconds):.2f} | "
              f"{min(passes):.1f} / {np.median(passes):.1f} |")


if __name__ == "__main__":
    main()
