"""A whole AMHT-LRS fit from the moment initialization, counted in passes over X: the
time of every outer iteration and of the whole fit to subspace distance 1e-6, divided
by the time of one pass over X (``lowrank_sparse.timing.one_pass_seconds``: reading X
once on numba's threads, at the memory's speed).

    python benchmarks/bench_passes.py                     # t=1e5, d=100, n=20, r=k=5
    python benchmarks/bench_passes.py --t 10000 --dtype float32

n=20 is below the local step's sample complexity at k=5 (the true U fits ~9% of users),
so the U step is ``Trimmed()``, as in bench_scale.py. The first iterations restart every
user from greedy supports (U still moves); the table marks them. The moment
initialization (one pass over X plus a d x d eigendecomposition) is counted in the
whole fit's time and shown apart. Where a steady-state iteration goes, phase by phase
against each phase's floor: ``bench_phases.py`` (on one thread the local step's
arithmetic alone, X_i in cache, is 1.7-2.9 passes: within 2 passes an iteration needs a
cheaper local step, not fewer reads of X).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import lowrank_sparse as ls
from lowrank_sparse import metrics, timing
from lowrank_sparse.alternating import RESTART_ALL_ABOVE_CHANGE


def _einsum_seconds(X, theta, repeats):
    """Median time of numpy's X_i theta_i for every user (one read of X, but at 0.4-0.8 of
    the memory's speed): the floor these benchmarks used before 2026-11-29."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.einsum("tnd,td->tn", X, theta)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--r", type=int, default=5)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--target", type=float, default=1e-6)
    args = parser.parse_args()
    problem = ls.make_problem(args.d, args.t, args.r, args.k, rng=0)
    data = ls.sample_data(problem, args.n, n_test=0, rng=1, dtype=args.dtype)
    X, y = data.X, data.y
    del data
    ls.local.precompile((args.dtype,))
    one_pass = timing.one_pass_seconds(X, repeats=7)
    einsum = _einsum_seconds(X, problem.theta, repeats=7)

    reached = []

    def trace(it, U):
        if not reached and metrics.subspace_distance(problem.U, U) <= args.target:
            reached.append(time.perf_counter())

    start = time.perf_counter()
    U0 = ls.moment_init(X, y, args.r)
    init_seconds = time.perf_counter() - start
    fit = ls.amht_lrs(X, y, args.r, args.k, init=U0, tol=1e-10, robust=ls.Trimmed(),
                      callback=trace)
    total = time.perf_counter() - start
    per_iteration = np.diff(fit.history.seconds, prepend=0.0)
    changes = fit.history.subspace_change
    print(f"t={args.t:,}, d={args.d}, n={args.n}, r={args.r}, k={args.k}, X {args.dtype}: "
          f"one pass {one_pass * 1e3:.1f} ms (numpy's einsum of X_i theta_i, the floor used "
          f"before 2026-11-29: {einsum * 1e3:.1f} ms = {einsum / one_pass:.2f} passes)")
    print("| iteration | restarts | CG its | seconds | passes |\n|---:|---|---:|---:|---:|")
    for it, seconds in enumerate(per_iteration):
        restart_all = it == 0 or changes[it - 1] > RESTART_ALL_ABOVE_CHANGE
        print(f"| {it + 1} | {'all users' if restart_all else 'outliers'} | "
              f"{fit.history.cg_iterations[it]} | {seconds:.3f} | {seconds / one_pass:.1f} |")
    steady = [s for it, s in enumerate(per_iteration)
              if it > 0 and changes[it - 1] <= RESTART_ALL_ABOVE_CHANGE]
    print(f"moment initialization {init_seconds:.2f} s ({init_seconds / one_pass:.1f} passes); "
          f"steady-state iteration median {np.median(steady) / one_pass:.2f} passes "
          f"({np.median(steady) / einsum:.2f} einsums)")
    if reached:
        print(f"distance {args.target:g} after {reached[0] - start:.2f} s = "
              f"{(reached[0] - start) / one_pass:.0f} passes (initialization included)")
    print(f"whole fit ({fit.n_iter} iterations to change {changes[-1]:.1e}, final local step, "
          f"distance {metrics.subspace_distance(problem.U, fit.U):.1e}): {total:.2f} s = "
          f"{total / one_pass:.0f} passes")


if __name__ == "__main__":
    main()
