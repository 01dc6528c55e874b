"""One grid cell of an experiment: seeds, the method registry, fitting and scoring.

The pipeline's scripts call these functions; nothing here knows about Snakemake.
"""

from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import metrics, timing
from .data import Data, Problem, make_problem, sample_data
from .baselines import ConvexLowRankSparse, PerUserLeastSquares, PerUserSparse
from .estimators import AMHTLRS, DPAMHTLRS, KnownSubspace, Oracle

#: Columns that identify a cell of the grid.
CELL_KEYS = ("d", "t", "n", "r", "k", "noise")


@dataclass(frozen=True)
class Method:
    """A named way to fit a cell. ``private`` methods also depend on epsilon."""

    name: str
    build: object  # callable(problem, cell, rng) -> estimator
    private: bool = False
    traces: bool = False  # records the subspace distance per iteration
    #: which of the cell's sizes a user's fit must determine: "r+k", "r" or "none"
    unknowns: str = "r+k"

    def min_samples(self, cell: dict) -> int:
        """Samples per user below which the method's per-user fit is undetermined."""
        return {"r+k": cell["r"] + cell["k"], "r": cell["r"], "none": 1}[self.unknowns]


METHODS = {
    "amht_lrs": Method("amht_lrs", lambda p, c, rng: AMHTLRS(c["r"], c["k"]), traces=True),
    "low_rank_only": Method("low_rank_only", lambda p, c, rng: AMHTLRS(c["r"], 0), traces=True,
                            unknowns="r"),
    "known_subspace": Method("known_subspace", lambda p, c, rng: KnownSubspace(p.U, c["k"])),
    "oracle": Method("oracle", lambda p, c, rng: Oracle(p.U, p.support)),
    "dp_amht_lrs": Method("dp_amht_lrs", lambda p, c, rng: DPAMHTLRS(
        c["r"], c["k"], c["epsilon"], c["delta"], rng=rng), private=True),
    "private_low_rank_only": Method("private_low_rank_only", lambda p, c, rng: DPAMHTLRS(
        c["r"], 0, c["epsilon"], c["delta"], rng=rng), private=True, unknowns="r"),
    "per_user_least_squares": Method("per_user_least_squares",
                                     lambda p, c, rng: PerUserLeastSquares(), unknowns="none"),
    # Same number of free parameters per user as AMHT-LRS: r + k non-zeros.
    "per_user_sparse": Method("per_user_sparse",
                              lambda p, c, rng: PerUserSparse(c["r"] + c["k"])),
    "convex_low_rank_sparse": Method("convex_low_rank_sparse",
                                     lambda p, c, rng: ConvexLowRankSparse(), unknowns="none"),
}

#: Metric columns of a result row (NaN where a method could not be fitted).
METRICS = ("subspace_distance", "subspace_distance_fro", "relative_error", "median_user_error",
           "success_rate", "support_precision", "support_recall", "median_test_mse",
           "mean_test_mse", "seconds", "iteration_seconds", "one_pass_seconds", "iterations",
           "epsilon_spent", "noise_multiplier")

#: Wall-time columns: they differ between runs; everything else is bit-reproducible.
TIMING_COLUMNS = ("seconds", "iteration_seconds", "one_pass_seconds")

#: Columns computed against the ground truth or held-out data, and timings: evaluation
#: only, NOT private outputs of a private fit (which releases U and its privacy report;
#: ``epsilon_spent`` and ``noise_multiplier`` describe the mechanism).
EVALUATION_ONLY = tuple(m for m in METRICS if m not in ("epsilon_spent", "noise_multiplier"))


def register(method: Method) -> None:
    """Add a method (e.g. a baseline) to the registry the pipeline draws from."""
    METHODS[method.name] = method


def cell_seed(root_seed: int, cell: dict, replicate: int, stream: str) -> np.random.Generator:
    """A generator seeded from the root seed, the cell's own parameters, the replicate
    and the stream name ("problem", "data", "privacy"), never from job order or hash()."""
    text = "|".join([str(root_seed), stream, str(replicate)]
                    + [f"{key}={cell[key]!r}" for key in CELL_KEYS])
    digest = hashlib.sha256(text.encode()).digest()
    return np.random.default_rng(np.frombuffer(digest[:16], dtype=np.uint32).tolist())


def simulate(cell: dict, replicate: int, root_seed: int, n_test: int) -> tuple[Problem, Data]:
    """The problem and data of one replicate of a cell (independent streams)."""
    problem = make_problem(cell["d"], cell["t"], cell["r"], cell["k"],
                           rng=cell_seed(root_seed, cell, replicate, "problem"))
    data = sample_data(problem, cell["n"], noise=cell["noise"], n_test=n_test,
                       rng=cell_seed(root_seed, cell, replicate, "data"))
    return problem, data


def fit_and_score(method_name: str, problem: Problem, data: Data, cell: dict,
                  privacy_rng=None, success_tol: float = 1e-3,
                  progress=None) -> tuple[dict, list]:
    """Fit one method on one dataset. Returns (metrics row, trace of subspace distances).

    ``progress``: optional callable(str), told of every iteration of traced methods."""
    if method_name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}; got {method_name!r}")
    method = METHODS[method_name]
    if cell["n"] < method.min_samples(cell):
        # Fewer samples than a user's unknowns: no method can recover it (success 0).
        row = dict.fromkeys(METRICS, float("nan"))
        row.update(success_rate=0.0, fitted=False)
        return row, []
    model = method.build(problem, cell, privacy_rng)
    trace = []
    start = time.perf_counter()
    if method.traces:
        def record(it, U):
            trace.append(metrics.subspace_distance(problem.U, U))
            if progress is not None:
                progress(f"iteration {it + 1}: subspace distance {trace[-1]:.3g}")

        model.fit(data.X, data.y, callback=record)
    else:
        model.fit(data.X, data.y)
    seconds = time.perf_counter() - start
    errors = metrics.per_user_relative_error(problem.theta, model.theta_)
    shares_subspace = model.U_.shape[1] > 0
    precision, recall = metrics.support_precision_recall(problem.B, model.B_)
    mse = metrics.per_user_test_mse(model.theta_, data.X_test, data.y_test)
    row = {
        # NaN for methods without a shared subspace (per-user and convex baselines).
        "subspace_distance": (metrics.subspace_distance(problem.U, model.U_)
                              if shares_subspace else float("nan")),
        "subspace_distance_fro": (metrics.subspace_distance(problem.U, model.U_, norm="fro")
                                  if shares_subspace else float("nan")),
        "relative_error": metrics.relative_error(problem.theta, model.theta_),
        "median_user_error": float(np.median(errors)),
        "success_rate": float(np.mean(errors <= success_tol)),
        "support_precision": precision,
        "support_recall": recall,
        "median_test_mse": float(np.median(mse)),
        "mean_test_mse": float(np.mean(mse)),
        "seconds": seconds,
        # Same measurements as benchmarks/bench_scale.py (lowrank_sparse.timing).
        # (Private fits keep their wall times apart from the private history.)
        "iteration_seconds": (timing.iteration_seconds(model.history_)
                              if hasattr(getattr(model, "history_", None), "seconds")
                              else float("nan")),
        "one_pass_seconds": timing.one_pass_seconds(data.X, model.theta_),
        "iterations": int(getattr(model, "n_iter_", 0) or 0),
    }
    report = getattr(model, "privacy_", None)
    row["epsilon_spent"] = report.epsilon_spent if report else float("inf")
    row["noise_multiplier"] = report.noise_multiplier if report else 0.0
    row["fitted"] = True
    return row, trace


#: Modules that only present results: editing them reruns figures and tables, not fits.
PRESENTATION_MODULES = ("plots.py", "tables.py")


def code_version(package_dir: Path | None = None, *, presentation: bool = False) -> str:
    """sha256 of the library's source files, for a rule's params, so that editing the
    library reruns exactly the jobs it affects: the fitting code (default) or the
    presentation modules (``presentation=True``)."""
    package_dir = Path(package_dir or Path(__file__).parent)
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        if (path.name in PRESENTATION_MODULES) == presentation:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def versions() -> dict:
    """Versions that a result row carries."""
    from importlib.metadata import version

    import scipy

    from . import __version__
    return {"lowrank_sparse": __version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "dp_accounting": version("dp-accounting"), "numba": version("numba"),
            "python": platform.python_version()}


def expand_sweeps(config: dict) -> list[dict]:
    """The fits a config asks for: one dict per (sweep, cell, method).

    Each sweep is a one- or few-factor grid around ``config["base"]``: ``grid`` maps a
    parameter (or a comma-joined group such as ``"r,k"`` whose values are tuples) to the
    values it takes; the cartesian product of the entries is taken. Non-private methods
    do not depend on epsilon, so their cells carry epsilon = inf and are shared between
    sweeps. Returns dicts with the keys sweep, method, d, t, n, r, k, noise, epsilon.
    """
    import itertools

    base = config["base"]
    fits = []
    for sweep, spec in config["sweeps"].items():
        names = [key.split(",") for key in spec["grid"]]
        for combo in itertools.product(*spec["grid"].values()):
            cell = dict(base)
            for keys, value in zip(names, combo):
                values = value if len(keys) > 1 else [value]
                if len(values) != len(keys):
                    raise ValueError(f"sweep {sweep!r}: grid entry {','.join(keys)!r} needs "
                                     f"{len(keys)} values per item; got {value!r}")
                cell.update(zip(keys, values))
            for method in spec["methods"]:
                if method not in METHODS:
                    raise ValueError(f"sweep {sweep!r}: method must be one of "
                                     f"{sorted(METHODS)}; got {method!r}")
                row = {"sweep": sweep, "method": method, **cell}
                if not METHODS[method].private:
                    row["epsilon"] = float("inf")
                if row not in fits:  # e.g. a non-private method in an epsilon sweep
                    fits.append(row)
    return fits


def tidy_results(fits: list[dict], fit_paths: list[str], loaded: dict):
    """Tables from the fit files: results (one row per sweep, cell, replicate and
    method: parameters, seed, metrics, runtime, versions) and traces (one row per
    iteration of a traced fit). ``fits[i]`` is the sweep row stored at ``fit_paths[i]``;
    ``loaded`` maps a path to its parsed JSON."""
    import pandas as pd

    rows, trace_rows = [], []
    for spec, path in zip(fits, fit_paths):
        stored = loaded[path]
        for row, trace in zip(stored["rows"], stored["traces"]):
            rows.append({**spec, **row, "code_version": stored["code_version"],
                         **{f"version_{k}": v for k, v in stored["versions"].items()}})
            trace_rows += [{**spec, "replicate": row["replicate"], "iteration": i + 1,
                            "subspace_distance": value} for i, value in enumerate(trace)]
    return pd.DataFrame(rows), pd.DataFrame(trace_rows, columns=[
        "sweep", "method", *CELL_KEYS, "epsilon", "replicate", "iteration", "subspace_distance"])
