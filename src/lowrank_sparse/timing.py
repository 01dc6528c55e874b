"""Cost measurements shared by the benchmarks and the pipeline's runtime figure: time per
outer iteration of a fit, against the floor of one pass over the data."""

from __future__ import annotations

import time

import numpy as np

from ._linalg import matvec


def one_pass_seconds(X, theta, repeats: int = 3) -> float:
    """Median wall time of X_i theta_i for every user: reading X once, the least any
    outer iteration must do. X: (t, n, d), theta: (t, d)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matvec(X, theta)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def iteration_seconds(history) -> float:
    """Median wall time of one outer iteration from a fit's ``History``, leaving out the
    first (no warm start yet) when there are more; NaN without iterations."""
    per_iteration = np.diff(np.asarray(history.seconds, dtype=float), prepend=0.0)
    if per_iteration.size == 0:
        return float("nan")
    return float(np.median(per_iteration[1:] if per_iteration.size > 1 else per_iteration))
