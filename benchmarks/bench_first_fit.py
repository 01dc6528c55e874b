"""The first fit of a fresh install: compiling the numba kernels into an empty cache,
then the same fit in a new process that loads them from that cache.

    python benchmarks/bench_first_fit.py [--repeat 3] [--dtype float64] [--kernels]

Each run is a new Python process with ``NUMBA_CACHE_DIR`` set to a new empty directory
(as after ``pip install``), timed from before ``import lowrank_sparse`` to the end of
one default ``amht_lrs`` fit at d=50, t=400, n=32, r=k=2 (the data are drawn before
the clock starts); the second process reuses that directory (the warm first fit). The
process's own clocks are used, so interpreter start-up is left out: wall time, and CPU
time (user + system, all threads), which a busy machine inflates less. Medians of
--repeat. The processes run with NUMBA_NUM_THREADS=1 (a fit this small runs on one
thread anyway, :data:`lowrank_sparse._linalg.PARALLEL_MIN_ENTRIES`).

--kernels also lists, for the cold process, the seconds numba spent compiling each
function: exclusive of the functions it compiled on the way (callees, numpy
overloads; "impl"), so the column sums to the compile time.
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
compile_seconds = {}
if sys.argv[2] == "kernels":  # per function, exclusive of what it compiled on the way
    from numba.core import event
    stack = []

    class Compiles(event.Listener):
        def on_start(self, ev):
            stack.append([ev.data["dispatcher"].py_func.__name__, time.perf_counter(), 0.0])

        def on_end(self, ev):
            name, began, nested = stack.pop()
            spent = time.perf_counter() - began
            compile_seconds[name] = compile_seconds.get(name, 0.0) + spent - nested
            if stack:
                stack[-1][2] += spent

    event.register("numba:compile", Compiles())
start, cpu_start = time.perf_counter(), time.process_time()
import lowrank_sparse as ls
imported = time.perf_counter()
fit = ls.amht_lrs(X, y, r, k)
done, cpu_done = time.perf_counter(), time.process_time()
print(json.dumps({"import": imported - start, "total": done - start,
                  "cpu": cpu_done - cpu_start,
                  "distance": ls.metrics.subspace_distance(U, fit.U),
                  "compile_seconds": compile_seconds}))
"""


def run(cache_dir, dtype, kernels=False):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, NUMBA_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD, dtype,
                          "kernels" if kernels else "total"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--kernels", action="store_true",
                        help="list the compile time of each function (cold runs)")
    args = parser.parse_args()
    cold, warm = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache_dir:
            cold.append(run(cache_dir, args.dtype, args.kernels))
            warm.append(run(cache_dir, args.dtype))
        print(f"cold {cold[-1]['total']:.1f} s (CPU {cold[-1]['cpu']:.1f} s, import "
              f"{cold[-1]['import']:.1f} s), warm {warm[-1]['total']:.2f} s (CPU "
              f"{warm[-1]['cpu']:.2f} s), distance {cold[-1]['distance']:.1e}", flush=True)
    if args.kernels:
        names = sorted(cold[0]["compile_seconds"], key=cold[0]["compile_seconds"].get,
                       reverse=True)
        print("compile seconds per function (exclusive), cold runs:")
        for name in names:
            print(f"  {name:28s}" + "".join(f" {row['compile_seconds'].get(name, 0.0):6.2f}"
                                            for row in cold))
        print(f"  {'(sum)':28s}" + "".join(f" {sum(row['compile_seconds'].values()):6.2f}"
                                          for row in cold))
    median = lambda rows, key: float(np.median([row[key] for row in rows]))
    print(f"first fit, X {args.dtype}, d=50, t=400, n=32, r=k=2, median of {args.repeat}: "
          f"cold (empty numba cache) {median(cold, 'total'):.1f} s wall, "
          f"{median(cold, 'cpu'):.1f} s CPU; warm (cached kernels) "
          f"{median(warm, 'total'):.2f} s wall, {median(warm, 'cpu'):.2f} s CPU")


if __name__ == "__main__":
    main()
