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
    """

    name: str
    kind: str
    function: str
    caption: str
    sweeps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    traces: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}; got {self.kind!r}")
        object.__setattr__(self, "sweeps", MappingProxyType(
            {sweep: tuple(methods) for sweep, methods in self.sweeps.items()}))

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


OUTPUTS: dict[str, Output] = {output.stem: output for output in [
    Output("phase_transition", "figure", "phase_transition",
           "Fraction of users recovered against samples per user n for several (r, k): "
           "AMHT-LRS, KnownSubspace (true U), Oracle (true U and supports: succeeds exactly "
           "at n = r + k, dotted line) and per-user least squares (needs n >= d).",
           sweeps={"phase_transition": ()}),
    Output("thresholds", "figure", "thresholds",
           "n_50 (half the users recovered) against r + k and against r + k log(d/k), with "
           "least-squares lines: the sample complexity grows linearly with the number of "
           "unknowns per user.",
           sweeps={"phase_transition": ()}),
    Output("total_samples", "figure", "total_samples",
           "Subspace distance against total samples t n / (d r) for several d.",
           sweeps={"total_samples": ()}),
    Output("convergence", "figure", "convergence",
           "Subspace distance to U* per outer iteration for several noise levels: "
           "geometric convergence, to machine precision without noise.",
           sweeps={"convergence": ()}, traces=True),
    Output("privacy", "figure", "privacy",
           "Subspace distance and median test MSE of DP-AMHT-LRS and private low-rank only "
           "against epsilon for several t; dashed: the non-private fits.",
           sweeps={"privacy": ()}),
    Output("runtime", "figure", "runtime",
           "AMHT-LRS time per outer iteration against t and d, log-log with fitted slopes, "
           "next to the time of one pass over X (the measurement of "
           "benchmarks/bench_scale.py).",
           sweeps={"runtime_t": ("amht_lrs",), "runtime_d": ("amht_lrs",)}),
    Output("n50", "table", "n50_table",
           "n_50 of every method per (r, k), and AMHT-LRS's ratio to r + k and to "
           "KnownSubspace's n_50.",
           sweeps={"phase_transition": ("amht_lrs",)}),
    Output("privacy", "table", "privacy_table",
           "Mean subspace distance, median test MSE, epsilon spent and noise multiplier by "
           "method, t and epsilon.",
           sweeps={"privacy": ()}),
    Output("methods", "table", "methods_table",
           "Every method at the setting of the methods sweep, sorted by median test MSE.",
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
