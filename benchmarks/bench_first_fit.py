"""The first fit of a fresh install: compiling the numba kernels into an empty cache,
then the same fit in a new process that loads them from that cache.

    python benchmarks/bench_first_fit.py [--repeat 3] [--dtype float64]

Each run is a new Python process with ``NUMBA_CACHE_DIR`` set to a new empty directory
(as after ``pip install``), timed from before ``import lowrank_sparse`` to the end of
one default ``amht_lrs`` fit at d=50, t=400, n=32, r=k=2 (the data are drawn before
the clock starts); the second process reuses that directory (the warm first fit). The
process's own clocks are used, so interpreter start-up is left out: wall time, and CPU
time (user + system, all threads), which a busy machine inflates less. Medians of
--repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

CHILD = """
import json, sys, time
import numpy as np
from numpy.random import default_rng
d, t, n, r, k = 50, 400, 32, 2, 2
rng = default_rng(0)
U = np.linalg.qr(rng.standard_normal((d, r)))[0]
theta = rng.standard_normal((t, r)) @ U.T
theta[np.arange(t)[:, None], rng.permuted(np.tile(np.arange(d), (t, 1)), axis=1)[:, :k]] += 1.0
X = rng.standard_normal((t, n, d)).astype(sys.argv[1])
y = np.einsum("tnd,td->tn", X, theta)
start, cpu_start = time.perf_counter(), time.process_time()
import lowrank_sparse as ls
imported = time.perf_counter()
fit = ls.amht_lrs(X, y, r, k)
done, cpu_done = time.perf_counter(), time.process_time()
print(json.dumps({"import": imported - start, "total": done - start,
                  "cpu": cpu_done - cpu_start,
                  "distance": ls.metrics.subspace_distance(U, fit.U)}))
"""


def run(cache_dir, dtype):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", CHILD, dtype], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    args = parser.parse_args()
    cold, warm = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache_dir:
            cold.append(run(cache_dir, args.dtype))
            warm.append(run(cache_dir, args.dtype))
        print(f"cold {cold[-1]['total']:.1f} s (CPU {cold[-1]['cpu']:.1f} s, import "
              f"{cold[-1]['import']:.1f} s), warm {warm[-1]['total']:.2f} s (CPU "
              f"{warm[-1]['cpu']:.2f} s), distance {cold[-1]['distance']:.1e}", flush=True)
    median = lambda rows, key: float(np.median([row[key] for row in rows]))
    print(f"first fit, X {args.dtype}, d=50, t=400, n=32, r=k=2, median of {args.repeat}: "
          f"cold (empty numba cache) {median(cold, 'total'):.1f} s wall, "
          f"{median(cold, 'cpu'):.1f} s CPU; warm (cached kernels) "
          f"{median(warm, 'total'):.2f} s wall, {median(warm, 'cpu'):.2f} s CPU")


if __name__ == "__main__":
    main()
