"""Figures of paper_figures/, each a function of the tidy results (and traces) table.

Which figures exist, their captions and the sweeps they read: ``lowrank_sparse.figures``.
"""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .tables import (MIN_FIT_POINTS, TooFewPoints, linear_fit, loglog_slope,  # noqa: E402
                     n50_by_setting)

sns.set_theme(context="paper", style="whitegrid")
LABELS = {"amht_lrs": "AMHT-LRS", "known_subspace": "KnownSubspace", "oracle": "Oracle",
          "low_rank_only": "Low-rank only", "dp_amht_lrs": "DP-AMHT-LRS",
          "private_low_rank_only": "Private low-rank only",
          "per_user_least_squares": "Per-user least squares", "per_user_sparse": "Per-user sparse",
          "convex_low_rank_sparse": "Convex (nuclear + l1)"}


def _label(method):
    return LABELS.get(method, method)


def _plain_log(axis):
    """Log-scale axis labelled with plain numbers at the major ticks only."""
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def phase_transition(results: pd.DataFrame, traces=None):
    """Success rate against n, one panel per (r, k); the Oracle threshold n = r + k as a
    vertical line."""
    phase = results[results["sweep"] == "phase_transition"]
    settings = sorted(phase[["r", "k"]].drop_duplicates().itertuples(index=False))
    cols = min(4, len(settings))
    rows = -(-len(settings) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.5 * rows), sharey=True,
                             squeeze=False)
    styles = {"amht_lrs": "-", "known_subspace": "--", "oracle": ":",
              "per_user_least_squares": "-."}
    for ax, (r, k) in zip(axes.flat, settings):
        cell = phase[(phase["r"] == r) & (phase["k"] == k)]
        for method, group in cell.groupby("method"):
            curve = group.groupby("n")["success_rate"].mean()
            ax.plot(curve.index, curve.values, styles.get(method, "-"), marker="o", ms=2.5,
                    label=_label(method))
        ax.axvline(r + k, color="grey", ls=":", lw=1)
        ax.set(title=f"r={r}, k={k}", xlabel="samples per user n")
    for ax in axes.flat[len(settings):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of users recovered")
    axes.flat[0].legend(fontsize="x-small", loc="lower right")
    fig.tight_layout()
    return fig


def thresholds(results: pd.DataFrame, traces=None):
    """n_50 against r + k (left) and against k log(d/k) + r (right), with fitted lines."""
    table = n50_by_setting(results)
    table = table[table["method"].isin(["amht_lrs", "known_subspace", "oracle"])]
    table = table.assign(k_log=table["r"] + table["k"] * np.log(table["d"] / table["k"]))
    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    for ax, xcol, xlabel in ((axes[0], "r_plus_k", "r + k"),
                             (axes[1], "k_log", "r + k log(d / k)")):
        for i, (method, group) in enumerate(table.groupby("method")):
            try:
                slope, intercept, r2 = linear_fit(group[xcol], group["n_50"])
            except TooFewPoints:  # no line through one or two points (a perfect "fit")
                ax.scatter(group[xcol], group["n_50"], s=18, color=f"C{i}",
                           label=f"{_label(method)} (no line: < {MIN_FIT_POINTS} points)")
                continue
            ax.scatter(group[xcol], group["n_50"], label=_label(method), s=18, color=f"C{i}")
            xs = np.linspace(group[xcol].min(), group[xcol].max(), 10)
            ax.plot(xs, slope * xs + intercept, lw=1, color=f"C{i}",
                    label=f"{_label(method)} fit: slope {slope:.2f}, R² {r2:.2f}")
        ax.set(xlabel=xlabel, ylabel="n_50")
    axes[0].legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def total_samples(results: pd.DataFrame, traces=None):
    """Subspace distance against t n / (d r), one line per d."""
    sweep = results[results["sweep"] == "total_samples"].copy()
    sweep["samples_ratio"] = sweep["t"] * sweep["n"] / (sweep["d"] * sweep["r"])
    sweep["distance"] = sweep["subspace_distance"].clip(lower=1e-16)
    fig, ax = plt.subplots(figsize=(4, 3))
    sns.lineplot(data=sweep, x="samples_ratio", y="distance", hue="d", marker="o",
                 palette="viridis", ax=ax, errorbar=None)
    ax.set(xscale="log", yscale="log", xlabel="t n / (d r)", ylabel="subspace distance")
    _plain_log(ax.xaxis)
    ax.set_xticks([1, 10, 100, 1000])
    ax.set_xlim(sweep["samples_ratio"].min() * 0.8, sweep["samples_ratio"].max() * 1.25)
    fig.tight_layout()
    return fig


def convergence(results: pd.DataFrame, traces: pd.DataFrame):
    """Subspace distance per iteration for the convergence sweep (first replicate)."""
    sweep = traces[(traces["sweep"] == "convergence") & (traces["replicate"] == 0)].copy()
    sweep["distance"] = sweep["subspace_distance"].clip(lower=1e-16)
    sweep["fit"] = sweep["method"].map(_label) + ", noise " + sweep["noise"].astype(str)
    fig, ax = plt.subplots(figsize=(4.5, 3))
    sns.lineplot(data=sweep, x="iteration", y="distance", hue="fit", ax=ax)
    ax.set(yscale="log", ylabel="subspace distance to U*")
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def privacy(results: pd.DataFrame, traces=None):
    """Subspace distance and median test MSE against epsilon, one line per (method, t);
    the non-private fits as horizontal lines."""
    sweep = results[results["sweep"] == "privacy"]
    private = sweep[np.isfinite(sweep["epsilon"])].copy()
    private["fit"] = private["method"].map(_label) + ", t=" + private["t"].astype(str)
    public = sweep[~np.isfinite(sweep["epsilon"])]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, metric, label in ((axes[0], "subspace_distance", "subspace distance"),
                              (axes[1], "median_test_mse", "median test MSE")):
        sns.lineplot(data=private, x="epsilon", y=metric, hue="fit", marker="o", ax=ax,
                     errorbar=None)
        for (method, t), group in public.groupby(["method", "t"]):
            ax.axhline(group[metric].mean(), ls="--", lw=0.8,
                       color="k" if method == "amht_lrs" else "grey")
        ax.set(xscale="log", yscale="log", xlabel="epsilon", ylabel=label)
        _plain_log(ax.xaxis)
        ax.set_xticks(sorted(private["epsilon"].unique()))
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def runtime(results: pd.DataFrame, traces=None):
    """AMHT-LRS time per outer iteration against t and d (log-log, least-squares slopes),
    next to the floor of one pass over the data (``lowrank_sparse.timing``, the
    measurements of ``benchmarks/bench_scale.py``)."""
    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    for ax, sweep, x in ((axes[0], "runtime_t", "t"), (axes[1], "runtime_d", "d")):
        part = results[(results["sweep"] == sweep)]
        series = {"per iteration": part.groupby(x)["iteration_seconds"].median(),
                  "one pass over X": part.groupby(x)["one_pass_seconds"].median()}
        for label, values in series.items():
            try:
                slope = f"slope {loglog_slope(values.index, values.values)[0]:.2f}"
            except TooFewPoints:  # e.g. a test grid with two sizes
                slope = f"no slope (fewer than {MIN_FIT_POINTS} points)"
            ax.plot(values.index, values.values, "o-", label=f"{label}: {slope}")
        ratio = series["per iteration"] / series["one pass over X"]
        ax.set(xscale="log", yscale="log", xlabel=x, ylabel="seconds",
               title=f"iteration / pass: {ratio.min():.0f}-{ratio.max():.0f}x")
        _plain_log(ax.xaxis)
        ax.set_xticks(values.index)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
