"""AMHT-LRS against a straightforward implementation of the same algorithm (per-user
Python loops, a dense Kronecker normal-equation U step), the fixed yardstick
``naive_amht.py`` (called, never edited): same data, same number of outer iterations.

    python benchmarks/bench_naive.py [--repeat 7] [--yardstick PATH]

d=50, t=400, n=32, r=k=3, noise 0.1, 10 outer iterations on both sides (``tol=0`` so
AMHT-LRS does all 10). Each side is timed best of its runs (the least disturbed on a
shared machine; the sides alternate, --repeat of ours per yardstick run), after one
untimed warm-up fit (numba kernels loaded from the cache). A fit of this size runs on
one thread (``lowrank_sparse._linalg.PARALLEL_MIN_ENTRIES``).
Prints both times, the ratio and both subspace distances to the true U.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
import warnings
from pathlib import Path

import numpy as np

import lowrank_sparse as ls
from lowrank_sparse import metrics

def load_yardstick(path):
    spec = importlib.util.spec_from_file_location("naive_amht", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def best_time(fn, repeat):
    """Minimum wall time of ``repeat`` calls, and the last result."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--naive-repeat", type=int, default=3,
                        help="runs of the yardstick (about a second each)")
    parser.add_argument("--yardstick", type=Path,
                        default=Path("/work/shared/yardstick/naive_amht.py"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    d, t, n, r, k, n_iter = 50, 400, 32, 3, 3, 10
    naive = load_yardstick(args.yardstick)
    problem = ls.make_problem(d, t, r, k, rng=args.seed)
    data = ls.sample_data(problem, n, noise=0.1, n_test=0, rng=args.seed + 1)
    X, y = data.X, data.y

    # tol=0: all 10 iterations by design, so the non-convergence warning says nothing.
    warnings.simplefilter("ignore", ls.ConvergenceWarning)
    ours = lambda: ls.amht_lrs(X, y, r, k, n_iter=n_iter, tol=0.0)
    ours()  # warm-up: loads the compiled kernels
    # Rounds of (--repeat fits of ours, one of the yardstick), so that on a shared
    # machine both sides are timed under the same changing load.
    ours_s = naive_s = np.inf
    for _ in range(args.naive_repeat):
        seconds, fit = best_time(ours, args.repeat)
        ours_s = min(ours_s, seconds)
        seconds, (U_naive, _, _) = best_time(lambda: naive.fit(X, y, r, k, n_iter=n_iter), 1)
        naive_s = min(naive_s, seconds)
    ours_dist = metrics.subspace_distance(problem.U, fit.U)
    naive_dist = metrics.subspace_distance(problem.U, U_naive)
    print(f"d={d}, t={t}, n={n}, r=k={r}, noise 0.1, {n_iter} outer iterations, best of "
          f"{args.repeat * args.naive_repeat} (ours) and {args.naive_repeat} (yardstick):")
    print(f"  amht_lrs   {ours_s * 1e3:8.1f} ms   distance {ours_dist:.1e}   "
          f"({ours_s / n_iter * 1e3:.2f} ms per iteration incl. init and final local step)")
    print(f"  yardstick  {naive_s * 1e3:8.1f} ms   distance {naive_dist:.1e}")
    print(f"  ratio {naive_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
