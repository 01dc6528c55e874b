"""Cost measurements shared by the benchmarks and the pipeline's runtime figure: time per
outer iteration of a fit, against the floor of one pass over the data."""

from __future__ import annotations

import time

import numpy as np

from ._linalg import storage


def one_pass_seconds(X, repeats: int = 3) -> float:
    """Median wall time of reading X (t, n, d) once, on numba's threads
    (``NUMBA_NUM_THREADS``, as the fit's kernels): the least any outer iteration must do;
    at the memory's speed when X is larger than the last-level cache (32 MiB here),
    faster otherwise, as the fit's own reads are. (Until 2026-11-29 this timed numpy's ``einsum`` of X_i theta_i, which runs
    at 0.4-0.8 of that speed: 1.2-1.5x this floor on one thread, 2.0-2.3x on two, at t=1e5,
    d=100, n=20, ``benchmarks/bench_passes.py``.)"""
    from ._kernels import read_pass

    X = storage(X)
    read_pass(X)  # compiled, or loaded from numba's cache, outside the clock
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read_pass(X)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def iteration_seconds(history) -> float:
    """Median wall time of one outer iteration from a fit's ``History``, leaving out the
    first (no warm start yet) when there are more; NaN without iterations."""
    per_iteration = np.diff(np.asarray(history.seconds, dtype=float), prepend=0.0)
    if per_iteration.size == 0:
        return float("nan")
    return float(np.median(per_iteration[1:] if per_iteration.size > 1 else per_iteration))
