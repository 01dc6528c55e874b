"""The registry of what ``paper_figures/`` holds: every figure and table in one place.

An entry names the output, the function that draws it (in ``plots.py`` for a figure,
``tables.py`` for a table), its caption and the sweeps of the config it reads, with the
methods it needs from each. The pipeline's rules, the config check, the tests and the
README's table of figures all read this registry, so adding a figure is one entry here
plus its function. Nothing here imports matplotlib: planning the pipeline stays fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

#: Where an output's function lives, and the files it is written to.
KINDS = {"figure": ("plots", "fig", ("pdf", "png")),
         "table": ("tables", "table", ("csv", "md"))}


@dataclass(frozen=True)
class Output:
    """One figure or table of ``paper_figures/``.

    Attributes
    ----------
    name : str
        Short name; the files are ``fig_<name>.{pdf,png}`` or ``table_<name>.{csv,md}``.
    kind : {"figure", "table"}
    function : str
        Name of the function in ``plots.py`` (figures, returning a matplotlib Figure) or
        ``tables.py`` (tables, returning a DataFrame), called as ``f(results)``, or
        ``f(results, traces)`` for an output that reads the traces.
    caption : str
        One or two sentences: the report's caption and the README's description.
    sweeps : mapping of str to tuple of str
        The config's sweeps the output reads, each with the methods it cannot do
        without (empty: whatever methods the sweep lists).
    traces : bool
        Whether it also reads the per-iteration traces (``results/traces.csv``).
    optional_sweeps : tuple of str
        Sweeps it reads when the config has them, and reports as not run otherwise (the
        claims table: a config without the privacy sweep still gets its other claims).
    """

    name: str
    kind: str
    function: str
    caption: str
    sweeps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    traces: bool = False
    optional_sweeps: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}; got {self.kind!r}")
        object.__setattr__(self, "sweeps", MappingProxyType(
            {sweep: tuple(methods) for sweep, methods in self.sweeps.items()}))
        object.__setattr__(self, "optional_sweeps", tuple(self.optional_sweeps))

    def reads(self, planned) -> list[str]:
        """The sweeps it reads from a config that plans the sweeps ``planned``: its own and
        the optional ones that are there."""
        return [*self.sweeps, *(s for s in self.optional_sweeps
                                if s in planned and s not in self.sweeps)]

    @property
    def stem(self) -> str:
        """File name without extension: ``fig_<name>`` or ``table_<name>``."""
        return f"{KINDS[self.kind][1]}_{self.name}"

    @property
    def extensions(self) -> tuple[str, ...]:
        return KINDS[self.kind][2]

    @property
    def function_object(self) -> Callable:
        """The function that makes the output (imports plots.py or tables.py)."""
        module = importlib.import_module(f"{__package__}.{KINDS[self.kind][0]}")
        return getattr(module, self.function)

    def make(self, results, traces=None):
        """The figure (matplotlib Figure) or table (DataFrame) from the tidy tables:
        ``function(results, traces)`` if it reads traces, else ``function(results)``."""
        if self.traces:
            return self.function_object(results, traces)
        return self.function_object(results)


#: Sweeps the claims table reads when the config runs them (``lowrank_sparse.claims``;
#: listed here so that planning the pipeline does not import pandas).
CLAIM_SWEEPS = ("phase_transition", "convergence", "dimension", "dimension_least_squares",
                "total_samples", "noise", "privacy", "runtime_t")

OUTPUTS: dict[str, Output] = {output.stem: output for output in [
    Output("phase_transition", "figure", "phase_transition",
           "Fraction of users recovered against samples per user n for several (r, k): "
           "AMHT-LRS, KnownSubspace (true U), Oracle (true U and supports: succeeds exactly "
           "at n = r + k, dotted line) and per-user least squares (needs n >= d); bands: "
           "min-max over replicates.",
           sweeps={"phase_transition": ()}),
    Output("thresholds", "figure", "thresholds",
           "n_50 (half the users recovered) against r + k and against r + k log(d/k), with "
           "95% bootstrap intervals and least-squares lines: the sample complexity grows "
           "linearly with the number of unknowns per user.",
           sweeps={"phase_transition": ()}),
    Output("total_samples", "figure", "total_samples",
           "Subspace distance against total samples t n / (d r) for several d and r (n=16); "
           "bands: min-max over replicates.",
           sweeps={"total_samples": ()}),
    Output("convergence", "figure", "convergence",
           "Subspace distance to U* per outer iteration of AMHT-LRS and low-rank only for "
           "several noise levels (first replicate): AMHT-LRS converges geometrically, to "
           "machine precision without noise; low-rank only, which ignores b_i, stalls near "
           "0.1.",
           sweeps={"convergence": ()}, traces=True),
    Output("privacy", "figure", "privacy",
           "Subspace distance and median test MSE of DP-AMHT-LRS and private low-rank only "
           "against epsilon for several t; dashed: the non-private fits; bands: min-max over "
           "replicates.",
           sweeps={"privacy": ()}),
    Output("runtime", "figure", "runtime",
           "AMHT-LRS time per outer iteration against t and d, log-log with fitted slopes, "
           "next to the time of one pass over X (measured as benchmarks/bench_scale.py "
           "does, lowrank_sparse.timing); noise 0.1, sizes from t n d = 3.2e6 up (an "
           "iteration takes ~10 ms or more), fits run alone in one thread (sweeps marked "
           "timed), so that timer and scheduling noise stay small next to the slope; "
           "wall times, so they vary between runs.",
           sweeps={"runtime_t": ("amht_lrs",), "runtime_d": ("amht_lrs",)}),
    Output("phase_diagram", "figure", "phase_diagram",
           "Fraction of users AMHT-LRS recovers over users t and samples per user n "
           "(noiseless; left d=50, r=k=2, right the larger d=100, r=k=3). Lines: n = r + k "
           "(Oracle), KnownSubspace's n_50 (the per-user floor, with its 95% bootstrap "
           "interval), and t n = C d r with C the median over n of the smallest "
           "t n / (d r) at which AMHT-LRS recovers at least 0.9x as many users as "
           "KnownSubspace.",
           sweeps={"phase_diagram": ("amht_lrs", "known_subspace"),
                   "phase_diagram_large": ("amht_lrs", "known_subspace")}),
    Output("n50_dimension", "figure", "n50_dimension",
           "n_50 against d with t n = 60 d r (r=k=2, noiseless), 95% bootstrap intervals: "
           "AMHT-LRS, KnownSubspace and Oracle with fitted a + b log d, per-user least "
           "squares (shares nothing, so run at t=40) with a fitted line in d (log-log axes); "
           "triangles: half the users recovered at the grid's first n already (an upper "
           "bound, not fitted: the Oracle's n_50 is r + k, dotted).",
           sweeps={"dimension": ("amht_lrs", "known_subspace", "oracle"),
                   "dimension_least_squares": ("per_user_least_squares",)}),
    Output("n50_users", "figure", "n50_users",
           "n_50 of AMHT-LRS and KnownSubspace against the number of users t (d=50, r=k=2, "
           "noiseless) with 95% bootstrap intervals: the users it takes to reach the "
           "per-user floor.",
           sweeps={"phase_diagram": ("amht_lrs", "known_subspace")}),
    Output("noise", "figure", "noise",
           "Left: excess test MSE (test MSE - sigma^2, computed exactly as the mean "
           "||theta_i - theta*_i||^2, which it equals in expectation for x ~ N(0, I)) "
           "against n, log-log, sigma=0.1, t=400, with the Oracle's closed form "
           "sigma^2 (r + k) / (n - r - k - 1). Right: AMHT-LRS's subspace distance against "
           "t n (n=16) with its log-log slope. Bands: min-max over replicates.",
           sweeps={"noise": ("amht_lrs", "known_subspace", "oracle"),
                   "noise_users": ("amht_lrs",)}),
    Output("claims", "table", "claims_table",
           "Every claim the figures support: the statistic computed from the results, its "
           "95% bootstrap interval (or min-max where stated), the threshold and the "
           "verdict (the point estimate against the threshold; NOT RUN when the config "
           "does not run the claim's sweeps).",
           traces=True, optional_sweeps=CLAIM_SWEEPS),
    Output("n50", "table", "n50_table",
           "n_50 of every method per (r, k) with 95% bootstrap intervals (replicates and "
           "users resampled), and AMHT-LRS's ratio to r + k and to KnownSubspace's n_50.",
           sweeps={"phase_transition": ("amht_lrs",)}),
    Output("n50_dimension", "table", "dimension_table",
           "n_50 of every method against d (t n = 60 d r) with 95% bootstrap intervals, and "
           "AMHT-LRS's ratio to KnownSubspace's n_50.",
           sweeps={"dimension": ("amht_lrs",), "dimension_least_squares": ()}),
    Output("n50_users", "table", "users_table",
           "n_50 of AMHT-LRS and KnownSubspace against t (d=50, r=k=2) with 95% bootstrap "
           "intervals, and their ratio.",
           sweeps={"phase_diagram": ("amht_lrs", "known_subspace")}),
    Output("privacy", "table", "privacy_table",
           "Mean subspace distance, median test MSE, epsilon spent and noise multiplier by "
           "method, t and epsilon.",
           sweeps={"privacy": ()}),
    Output("methods", "table", "methods_table",
           "Every method at d=50, t=2000, n=17, r=k=2, noise 0.1, epsilon 4 (the methods "
           "sweep: enough users for the user-level private fits), mean over replicates, "
           "sorted by median test MSE.",
           sweeps={"methods": ()}),
]}


def by_kind(kind: str) -> dict[str, Output]:
    """The registered outputs of one kind ("figure" or "table"), keyed by name."""
    return {output.name: output for output in OUTPUTS.values() if output.kind == kind}


def sweeps_needed() -> dict[str, set[str]]:
    """Every sweep some output reads, with the methods the outputs need from it: what a
    config must provide (``lowrank_sparse.config.check_config``)."""
    needed: dict[str, set[str]] = {}
    for output in OUTPUTS.values():
        for sweep, methods in output.sweeps.items():
            needed.setdefault(sweep, set()).update(methods)
    return needed
