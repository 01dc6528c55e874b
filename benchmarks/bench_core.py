"""Speed of AMHT-LRS on one machine: fit time and time per outer iteration against the
floor of one pass over the data (X read once on numba's threads; ``lowrank_sparse.timing``).

    python benchmarks/bench_core.py            # both measurements, markdown to stdout
    python benchmarks/bench_core.py --quick    # smaller t, for a smoke run

Peak memory is what the fit allocates on top of the data (tracemalloc sees numpy's
allocations). Run it on an idle machine; numbers are medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

import lowrank_sparse as ls
from lowrank_sparse import metrics, timing


def fit_stats(X, y, r, k, n_iter, repeat):
    """Median fit time, time per outer iteration and peak extra memory (MB)."""
    times, per_iter = [], []
    fit = None
    for _ in range(repeat):
        start = time.perf_counter()
        fit = ls.amht_lrs(X, y, r, k, n_iter=n_iter, tol=0.0)
        times.append(time.perf_counter() - start)
        per_iter.append(timing.iteration_seconds(fit.history))
    tracemalloc.start()
    ls.amht_lrs(X, y, r, k, n_iter=2, tol=0.0)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return float(np.median(times)), float(np.median(per_iter)), peak, fit


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="t up to 1,000 only")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print("## (a) fit time, d=50, t=200, n=25, r=5, k=4, 50 iterations\n")
    problem = ls.make_problem(50, 200, 5, 4, rng=0)
    data = ls.sample_data(problem, 25, n_test=0, rng=1)
    total, per_iter, peak, fit = fit_stats(data.X, data.y, 5, 4, 50, args.repeat)
    print(f"fit {total:.3f} s, {per_iter * 1e3:.2f} ms / iteration, peak extra memory "
          f"{peak:.1f} MB, subspace distance {metrics.subspace_distance(problem.U, fit.U):.1e}\n")

    print("## (b) median time per outer iteration over 30 iterations, d=100, n=20, r=5, k=5\n")
    print("| t | data MB | one pass (ms) | iteration (ms) | ratio | peak extra MB | distance |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for t in ([1000] if args.quick else [1000, 10000]):
        problem = ls.make_problem(100, t, 5, 5, rng=2)
        data = ls.sample_data(problem, 20, n_test=0, rng=3)
        floor = timing.one_pass_seconds(data.X, repeats=5 * args.repeat)
        total, per_iter, peak, fit = fit_stats(data.X, data.y, 5, 5, 30, args.repeat)
        dist = metrics.subspace_distance(problem.U, fit.U)
        print(f"| {t:,} | {data.X.nbytes / 2**20:.0f} | {floor * 1e3:.2f} | {per_iter * 1e3:.1f} | "
              f"{per_iter / floor:.1f} | {peak:.0f} | {dist:.1e} |")


if __name__ == "__main__":
    main()
