"""X stored in float32 against float64 (the arithmetic is float64 either way).

    python benchmarks/bench_float32.py [--seeds 5] [--memory-t 20000]

Accuracy, d=50, t=400, r=k=2, n=32, AMHT-LRS defaults, per seed:
- noiseless: subspace distance and users recovered for X drawn in float64, X drawn in
  float32 (``sample_data(dtype="float32")``: y computed from the stored values, so the
  model is exact for them), and the float64 X rounded to float32 with y kept from the
  float64 X (real data stored in float32: the rounding of X acts as noise of relative
  size ~1e-7 in y);
- noise 0.1: median over users of the test MSE (on float64 test data), same three.
Memory: peak resident memory of a whole fit (data draw included) in a fresh process
for each dtype at t=--memory-t, d=100, n=20, r=k=5 (5 outer iterations), and above
the process with the kernels loaded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np

import lowrank_sparse as ls
from lowrank_sparse import metrics

D, T, R, K, N = 50, 400, 2, 2, 32

MEMORY_CHILD = """
import resource, sys, warnings
import lowrank_sparse as ls
warnings.simplefilter("ignore")
t, dtype = int(sys.argv[1]), sys.argv[2]
ls.local.precompile((dtype,))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
problem = ls.make_problem(100, t, 5, 5, rng=0)
data = ls.sample_data(problem, 20, n_test=0, rng=1, dtype=dtype)
ls.amht_lrs(data.X, data.y, 5, 5, n_iter=5, robust=ls.Trimmed())
print(data.X.nbytes / 2**20, base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10)
"""


def variants(problem, noise, seed):
    """(name, X, y, X_test, y_test) for the three storages of the same problem."""
    d64 = ls.sample_data(problem, N, noise=noise, n_test=100, rng=seed)
    d32 = ls.sample_data(problem, N, noise=noise, n_test=100, rng=seed, dtype="float32")
    return [("float64", d64.X, d64.y, d64.X_test, d64.y_test),
            ("float32 draw", d32.X, d32.y, d32.X_test.astype(np.float64), d32.y_test),
            ("float64 rounded", d64.X.astype(np.float32), d64.y, d64.X_test, d64.y_test)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--memory-t", type=int, default=50_000)
    args = parser.parse_args()
    rows = {}
    for seed in range(args.seeds):
        problem = ls.make_problem(D, T, R, K, rng=np.random.default_rng([seed, 0]))
        for noise in (0.0, 0.1):
            for name, X, y, X_test, y_test in variants(problem, noise,
                                                       np.random.default_rng([seed, 1])):
                fit = ls.amht_lrs(X, y, R, K)
                row = rows.setdefault((noise, name), [])
                row.append((metrics.subspace_distance(problem.U, fit.U),
                            metrics.success_rate(problem.theta, fit.theta),
                            np.median(metrics.per_user_test_mse(fit.theta, X_test, y_test))))
    print(f"d={D}, t={T}, r=k={R}, n={N}, {args.seeds} seeds (median over seeds; "
          "min-max in brackets)")
    print("| noise | X storage | distance | users recovered | median test MSE |")
    print("|---:|---|---|---|---|")
    for (noise, name), row in rows.items():
        dist, rec, mse = np.array(row).T
        print(f"| {noise} | {name} | {np.median(dist):.1e} [{dist.min():.1e}, "
              f"{dist.max():.1e}] | {np.median(rec):.3f} [{rec.min():.3f}, {rec.max():.3f}] "
              f"| {np.median(mse):.6f} |")
    print(f"\nmemory, t={args.memory_t:,}, d=100, n=20, r=k=5 (fresh process each):")
    for dtype in ("float64", "float32"):
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(args.memory_t), dtype],
                             capture_output=True, text=True, check=True).stdout.split()
        x_mib, base, peak = map(float, out)
        print(f"  {dtype}: X {x_mib:.0f} MiB, peak RSS {peak:.0f} MiB, of which "
              f"{peak - base:.0f} MiB above the process with the kernels loaded")


if __name__ == "__main__":
    main()
