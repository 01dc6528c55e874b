"""One grid cell of an experiment: seeds, the method registry, fitting and scoring, and
what a result row holds.

The pipeline's scripts call these functions; nothing here knows about Snakemake. The
config is checked and expanded into fits in ``lowrank_sparse.config``; fit outputs are
checked and aggregated in ``lowrank_sparse.results``.
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
    #: whether its fits run the library's numba kernels (a pipeline's jobs of the others
    #: need not wait for the kernels to be compiled)
    compiled: bool = True
    #: rough CPU seconds to draw, fit and score 1e6 numbers of data, t d (n + n_test),
    #: measured in the pipeline's fit records (one thread): orders the jobs, longest first
    seconds_per_million: float = 0.4

    def min_samples(self, cell: dict) -> int:
        """Samples per user below which the method's per-user fit is undetermined."""
        return {"r+k": cell["r"] + cell["k"], "r": cell["r"], "none": 1}[self.unknowns]


METHODS = {
    "amht_lrs": Method("amht_lrs", lambda p, c, rng: AMHTLRS(c["r"], c["k"]), traces=True),
    "low_rank_only": Method("low_rank_only", lambda p, c, rng: AMHTLRS(c["r"], 0), traces=True,
                            unknowns="r", seconds_per_million=0.15),
    "known_subspace": Method("known_subspace", lambda p, c, rng: KnownSubspace(p.U, c["k"]),
                             seconds_per_million=0.07),
    "oracle": Method("oracle", lambda p, c, rng: Oracle(p.U, p.support), compiled=False,
                     seconds_per_million=0.06),
    "dp_amht_lrs": Method("dp_amht_lrs", lambda p, c, rng: DPAMHTLRS(
        c["r"], c["k"], c["epsilon"], c["delta"], rng=rng), private=True,
        seconds_per_million=0.3),
    "private_low_rank_only": Method("private_low_rank_only", lambda p, c, rng: DPAMHTLRS(
        c["r"], 0, c["epsilon"], c["delta"], rng=rng), private=True, unknowns="r",
        seconds_per_million=0.25),
    "per_user_least_squares": Method("per_user_least_squares",
                                     lambda p, c, rng: PerUserLeastSquares(), unknowns="none",
                                     compiled=False, seconds_per_million=0.07),
    # Same number of free parameters per user as AMHT-LRS: r + k non-zeros.
    "per_user_sparse": Method("per_user_sparse",
                              lambda p, c, rng: PerUserSparse(c["r"] + c["k"]),
                              seconds_per_million=0.1),
    "convex_low_rank_sparse": Method("convex_low_rank_sparse",
                                     lambda p, c, rng: ConvexLowRankSparse(), unknowns="none",
                                     compiled=False, seconds_per_million=10.0),
}

@dataclass(frozen=True)
class Column:
    """What a metric of a fitted result row may hold: a number in [low, high], NaN only
    where ``nan`` says why it can be undefined, infinity only if ``inf``."""

    low: float = 0.0
    high: float = float("inf")
    nan: str = ""  # when NaN is allowed: the reason (empty: never)
    inf: bool = False
    integer: bool = False


#: The metrics of a result row and what each may hold (``lowrank_sparse.results`` checks
#: every fit's rows and the tidy table against this; a new metric goes here and in
#: ``fit_and_score``). Rows of fits that could not be attempted (``fitted`` False) hold
#: NaN everywhere but ``success_rate`` = 0.
METRIC_COLUMNS = {
    "subspace_distance": Column(high=1 + 1e-9, nan="methods without a shared subspace"),
    "subspace_distance_fro": Column(nan="methods without a shared subspace"),
    "relative_error": Column(),
    "median_user_error": Column(),
    "success_rate": Column(high=1.0),
    "support_precision": Column(high=1.0),
    "support_recall": Column(high=1.0),
    "median_test_mse": Column(),
    "mean_test_mse": Column(),
    # mean over users of ||theta_i - theta*_i||^2: for x ~ N(0, I_d) exactly the excess
    # test MSE (test MSE - sigma^2) in expectation over test points, without their noise
    "mean_excess_risk": Column(),
    "seconds": Column(),
    "iteration_seconds": Column(nan="methods without outer iterations"),
    "one_pass_seconds": Column(nan="methods without compiled kernels"),
    "iterations": Column(integer=True),
    "epsilon_spent": Column(inf=True),  # inf for the non-private methods
    "noise_multiplier": Column(),
}
METRICS = tuple(METRIC_COLUMNS)

#: Wall-time columns: they differ between runs; everything else is bit-reproducible.
TIMING_COLUMNS = ("seconds", "iteration_seconds", "one_pass_seconds")

#: Columns computed against the ground truth or held-out data, and timings: evaluation
#: only, NOT private outputs of a private fit (which releases U and its privacy report;
#: ``epsilon_spent`` and ``noise_multiplier`` describe the mechanism).
EVALUATION_ONLY = tuple(m for m in METRICS if m not in ("epsilon_spent", "noise_multiplier"))


#: CPU seconds a pipeline job spends before its first fit (interpreter, imports, the
#: compiled kernels loaded from numba's cache)
JOB_START_SECONDS = 2.0


def estimated_seconds(method_name: str, cells, n_test: int) -> float:
    """Rough CPU seconds of one job fitting ``method_name`` on ``cells``, three replicates
    each (the pipeline uses it only to order one config's jobs)."""
    size = sum(cell["t"] * cell["d"] * (cell["n"] + n_test) for cell in cells)
    return JOB_START_SECONDS + METHODS[method_name].seconds_per_million * size / 1e6


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
        return _unfitted_row(), []
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
        "mean_excess_risk": float(np.mean(np.sum((model.theta_ - problem.theta) ** 2, axis=1))),
        "seconds": seconds,
        # Same measurements as benchmarks/bench_scale.py (lowrank_sparse.timing).
        # (Private fits keep their wall times apart from the private history.)
        "iteration_seconds": (timing.iteration_seconds(model.history_)
                              if hasattr(getattr(model, "history_", None), "seconds")
                              else float("nan")),
        # The floor an iteration of the compiled methods is set against (numba's read of
        # X); kernel-free methods do not load numba (their jobs start before the kernels).
        "one_pass_seconds": (timing.one_pass_seconds(data.X) if method.compiled
                             else float("nan")),
        "iterations": int(getattr(model, "n_iter_", 0) or 0),
    }
    report = getattr(model, "privacy_", None)
    row["epsilon_spent"] = report.epsilon_spent if report else float("inf")
    row["noise_multiplier"] = report.noise_multiplier if report else 0.0
    row["fitted"] = True
    return row, trace


def _unfitted_row() -> dict:
    """The row of a fit that cannot be attempted: fewer samples per user than the
    method's unknowns, so no user can be recovered (success 0, every other metric NaN)."""
    row = dict.fromkeys(METRICS, float("nan"))
    row.update(success_rate=0.0, fitted=False)
    return row


def fit_cell(method_name: str, cell: dict, *, replicates: int, root_seed: int, n_test: int,
             delta: float, success_tol: float = 1e-3, progress=None) -> dict:
    """Every replicate of one cell (``CELL_KEYS`` and epsilon): draw its problem and data
    from the cell's seeds, fit one method (private ones at (epsilon, delta)), score it.

    The data are drawn here rather than stored: the seeds make the draws identical in any
    process, and drawing again costs less than storing and reading the data (see the
    pipeline notes in README.md). Returns ``{"rows": [one metrics row per replicate],
    "traces": [the per-iteration subspace distances per replicate], "draw_seconds":
    time spent drawing}``.
    """
    rows, traces = [], []
    cell = {**cell, "delta": delta}
    draw_seconds = 0.0
    for rep in range(replicates):
        if cell["n"] < METHODS[method_name].min_samples(cell):
            row, trace = _unfitted_row(), []  # nothing to fit: skip the draw
        else:
            start = time.perf_counter()
            problem, data = simulate(cell, rep, root_seed, n_test)
            draw_seconds += time.perf_counter() - start
            row, trace = fit_and_score(method_name, problem, data, cell,
                                       privacy_rng=cell_seed(root_seed, cell, rep, "privacy"),
                                       success_tol=success_tol, progress=progress)
        rows.append({"replicate": rep, **row})
        traces.append(trace)
    return {"rows": rows, "traces": traces, "draw_seconds": draw_seconds}


#: Library modules whose edits do not change any fit: they plan the grid, check and
#: aggregate the results or present them. Each stage's rules carry the hash of the
#: modules they run (``code_version``), so an edit reruns that stage and what follows.
STAGE_MODULES = {
    "plan": ("config.py",),  # reaches the jobs through their params (the cells)
    "aggregate": ("results.py",),
    "present": ("results.py", "figures.py", "plots.py", "tables.py", "claims.py"),
}


def code_version(package_dir: Path | None = None, *, stage: str = "fit") -> str:
    """sha256 of the library's source files that a pipeline stage runs, for its rules'
    params, so that editing the library reruns exactly the jobs it affects.

    ``stage``: "fit" (every module not listed in ``STAGE_MODULES``: the estimators, data,
    metrics and this module), or a key of ``STAGE_MODULES``."""
    if stage != "fit" and stage not in STAGE_MODULES:
        raise ValueError(f"stage must be 'fit' or one of {sorted(STAGE_MODULES)}; got {stage!r}")
    not_fit = {name for names in STAGE_MODULES.values() for name in names}
    package_dir = Path(package_dir or Path(__file__).parent)
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        if (path.name not in not_fit if stage == "fit" else path.name in STAGE_MODULES[stage]):
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
