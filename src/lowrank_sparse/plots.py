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

#: Bands on curves: the range over replicates (deterministic, no resampling).
BAND = ("pi", 100)

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
            by_n = group.groupby("n")["success_rate"]
            curve = by_n.mean()
            line, = ax.plot(curve.index, curve.values, styles.get(method, "-"), marker="o",
                            ms=2.5, label=_label(method))
            ax.fill_between(curve.index, by_n.min(), by_n.max(), color=line.get_color(),
                            alpha=0.2, lw=0)
        ax.axvline(r + k, color="grey", ls=":", lw=1)
        ax.set(title=f"r={r}, k={k}", xlabel="samples per user n")
    for ax in axes.flat[len(settings):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of users recovered")
    axes.flat[0].legend(fontsize="x-small", loc="lower right")
    fig.tight_layout()
    return fig


def _yerr(table):
    """Error bars of n_50 from its bootstrap interval (an infinite end drawn to the
    top of the axis is not drawable: clipped to the point)."""
    low = (table["n_50"] - table["n_50_low"]).clip(lower=0)
    high = (table["n_50_high"] - table["n_50"]).clip(lower=0)
    return np.vstack([low.fillna(0), high.where(np.isfinite(high), 0).fillna(0)])


def thresholds(results: pd.DataFrame, traces=None):
    """n_50 against r + k (left) and against k log(d/k) + r (right), with 95% bootstrap
    intervals and fitted lines."""
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
                ax.errorbar(group[xcol], group["n_50"], yerr=_yerr(group), fmt="o", ms=3.5,
                            color=f"C{i}", capsize=2,
                            label=f"{_label(method)} (no line: < {MIN_FIT_POINTS} points)")
                continue
            ax.errorbar(group[xcol], group["n_50"], yerr=_yerr(group), fmt="o", ms=3.5,
                        color=f"C{i}", label=_label(method), capsize=2)
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
    sns.lineplot(data=sweep, x="samples_ratio", y="distance", hue="d", style="r",
                 marker="o", palette="viridis", ax=ax, errorbar=BAND)
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
                     errorbar=BAND)
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


def _cell_edges(values, log=False):
    """Edges of heatmap cells centred on the sorted grid ``values``."""
    v = np.log(values) if log else np.asarray(values, float)
    mid = (v[1:] + v[:-1]) / 2
    edges = np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])
    return np.exp(edges) if log else edges


def global_threshold(sweep: pd.DataFrame, ratio=0.9) -> tuple[float, pd.Series]:
    """C in t n = C d r from the phase-diagram sweep: per n, the smallest t n / (d r) at
    which AMHT-LRS recovers at least ``ratio`` times as many users as KnownSubspace
    (counted where KnownSubspace recovers some); C is their median over n. Returns
    (C, the per-n values)."""
    mean = sweep.groupby(["method", "n", "t"])["success_rate"].mean()
    amht, known = mean["amht_lrs"], mean["known_subspace"]
    d, r = sweep["d"].iloc[0], sweep["r"].iloc[0]
    found = {}
    for n, row in (amht / known.where(known > 0.05)).unstack("t").iterrows():
        ok = row.index[(row >= ratio).to_numpy()]
        if len(ok):
            found[n] = ok.min() * n / (d * r)
    found = pd.Series(found, dtype=float)
    return (float(found.median()) if len(found) else float("nan")), found


#: The sweeps drawn by ``phase_diagram``, one panel each: d=50, r=k=2 and a larger setting.
PHASE_DIAGRAM_SWEEPS = ("phase_diagram", "phase_diagram_large")


def phase_diagram(results: pd.DataFrame, traces=None):
    """Heatmaps of AMHT-LRS's fraction of users recovered over (n, t), one panel per
    sweep of ``PHASE_DIAGRAM_SWEEPS``, with n = r + k, KnownSubspace's n_50 per t and
    the fitted global threshold t n = C d r."""
    fig, axes = plt.subplots(1, len(PHASE_DIAGRAM_SWEEPS), squeeze=False, layout="constrained",
                             figsize=(4.8 * len(PHASE_DIAGRAM_SWEEPS) + 1, 3.6))
    for ax, name in zip(axes[0], PHASE_DIAGRAM_SWEEPS):
        mesh = _phase_panel(ax, results, name)
    fig.colorbar(mesh, ax=axes[0].tolist(), label="fraction of users recovered (AMHT-LRS)")
    return fig


def _phase_panel(ax, results, name):
    sweep = results[results["sweep"] == name]
    d, r, k = (int(sweep[c].iloc[0]) for c in ("d", "r", "k"))
    grid = (sweep[sweep["method"] == "amht_lrs"].groupby(["t", "n"])["success_rate"].mean()
            .unstack("n").sort_index())
    ns, ts = grid.columns.to_numpy(float), grid.index.to_numpy(float)
    mesh = ax.pcolormesh(_cell_edges(ns), _cell_edges(ts, log=True), grid.to_numpy(),
                         cmap="viridis", vmin=0, vmax=1, shading="flat")
    ax.axvline(r + k, color="0.6", ls=":", lw=1.2, label="n = r + k")
    known = n50_by_setting(results, name)
    known = known[known["method"] == "known_subspace"].sort_values("t")
    ax.errorbar(known["n_50"], known["t"], xerr=_yerr(known), fmt="s--", color="orange",
                ms=3, lw=1, capsize=2, label="KnownSubspace n_50")
    C, _ = global_threshold(sweep)
    if np.isfinite(C):
        n_line = np.linspace(ns.min(), ns.max(), 50)
        ax.plot(n_line, C * d * r / n_line, "r-", lw=1.2, label=f"t n = {C:.0f} d r")
    ax.set(yscale="log", xlabel="samples per user n", ylabel="users t",
           ylim=(_cell_edges(ts, log=True)[0], _cell_edges(ts, log=True)[-1]),
           xlim=(min(_cell_edges(ns)[0], r + k - 0.5), _cell_edges(ns)[-1]),
           title=f"d={d}, r={r}, k={k}")
    _plain_log(ax.yaxis)
    ax.set_yticks(ts)
    ax.legend(fontsize="x-small", loc="upper right", framealpha=0.8)
    return mesh


def n50_dimension(results: pd.DataFrame, traces=None):
    """n_50 against d (t n = 60 d r) with bootstrap intervals; a + b log d fitted for the
    methods that share U or know it, a line in d for per-user least squares."""
    table = pd.concat([n50_by_setting(results, sweep) for sweep in
                       ("dimension", "dimension_least_squares")], ignore_index=True)
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for i, (method, group) in enumerate(sorted(table.groupby("method"),
                                               key=lambda item: item[0] != "amht_lrs")):
        group = group.sort_values("d")
        ax.errorbar(group["d"], group["n_50"], yerr=_yerr(group), fmt="o", ms=3.5,
                    color=f"C{i}", capsize=2, label=_label(method))
        start = group[group["at_grid_start"]]
        if len(start):  # reached at the grid's first n: an upper bound, not fitted
            ax.scatter(start["d"], start["n_50"], marker="v", s=40, color=f"C{i}",
                       label=f"{_label(method)}: at most (first n of the grid)")
        group = group[~group["at_grid_start"]]
        linear = method == "per_user_least_squares"
        x = group["d"] if linear else np.log(group["d"])
        try:
            b, a, r2 = linear_fit(x, group["n_50"])
        except TooFewPoints:
            continue
        ds = np.geomspace(group["d"].min(), group["d"].max(), 50)
        ax.plot(ds, a + b * (ds if linear else np.log(ds)), lw=1, color=f"C{i}",
                label=(f"{a:.1f} + {b:.2f} d" if linear else f"{a:.1f} + {b:.2f} log d")
                + f", R² {r2:.3f}")
    r, k = int(table["r"].iloc[0]), int(table["k"].iloc[0])
    ax.axhline(r + k, color="grey", ls=":", lw=1, label="n = r + k (the Oracle's, exact)")
    ax.set(xscale="log", yscale="log", xlabel="dimension d", ylabel="n_50")
    _plain_log(ax.xaxis)
    _plain_log(ax.yaxis)
    ax.set_xticks(sorted(table["d"].unique()))
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def n50_users(results: pd.DataFrame, traces=None):
    """n_50 of AMHT-LRS and KnownSubspace against t (phase-diagram sweep)."""
    table = n50_by_setting(results, "phase_diagram")
    largest_n = results.loc[results["sweep"] == "phase_diagram", "n"].max()
    fig, ax = plt.subplots(figsize=(4.2, 3))
    for i, (method, group) in enumerate(sorted(table.groupby("method"),
                                               key=lambda item: item[0] != "amht_lrs")):
        group = group.sort_values("t")
        reached = group[np.isfinite(group["n_50"])]
        ax.errorbar(reached["t"], reached["n_50"], yerr=_yerr(reached), fmt="o-", ms=3.5,
                    color=f"C{i}", capsize=2, label=_label(method))
        never = group[~np.isfinite(group["n_50"])]
        if len(never):  # n_50 beyond the grid: marked at the grid's largest n
            ax.scatter(never["t"], [largest_n] * len(never), marker="^",
                       color=f"C{i}", label=f"{_label(method)}: n_50 > {largest_n:g}")
    d, r, k = (int(table[c].iloc[0]) for c in ("d", "r", "k"))
    ax.axhline(r + k, color="grey", ls=":", lw=1, label="r + k")
    ax.set(xscale="log", xlabel="users t", ylabel="n_50", title=f"d={d}, r={r}, k={k}")
    _plain_log(ax.xaxis)
    ax.set_xticks(sorted(table["t"].unique()))
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def noise(results: pd.DataFrame, traces=None):
    """Excess risk against n with the Oracle's closed form (left); subspace distance
    against t n with its slope (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    sweep = results[results["sweep"] == "noise"]
    ax = axes[0]
    sns.lineplot(data=sweep, x="n", y="mean_excess_risk", hue=sweep["method"].map(_label),
                 marker="o", errorbar=BAND, ax=ax)
    sigma, p = sweep["noise"].iloc[0], int((sweep["r"] + sweep["k"]).iloc[0])
    ns = np.linspace(max(p + 2, sweep["n"].min()), sweep["n"].max(), 100)
    ax.plot(ns, sigma ** 2 * p / (ns - p - 1), "k:", lw=1.2,
            label="σ² (r + k) / (n - r - k - 1)")
    ax.set(xscale="log", yscale="log", xlabel="samples per user n",
           ylabel="excess test MSE", title=f"σ = {sigma:g}")
    _plain_log(ax.xaxis)
    ax.set_xticks(sorted(sweep["n"].unique()))
    ax.legend(fontsize="x-small")
    ax = axes[1]
    users = results[results["sweep"] == "noise_users"].copy()
    users["samples"] = users["t"] * users["n"]
    sns.lineplot(data=users, x="samples", y="subspace_distance", marker="o", errorbar=BAND,
                 ax=ax, label=_label("amht_lrs"))
    median = users.groupby("samples")["subspace_distance"].median()
    try:
        slope = f"slope {loglog_slope(median.index, median.to_numpy())[0]:.2f}"
    except TooFewPoints:
        slope = f"no slope (fewer than {MIN_FIT_POINTS} points)"
    ax.set(xscale="log", yscale="log", xlabel="total samples t n",
           ylabel="subspace distance", title=f"n = {users['n'].iloc[0]}: {slope}")
    _plain_log(ax.xaxis)
    ax.set_xticks(sorted(users["samples"].unique()))
    ax.tick_params(axis="x", labelrotation=45)
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig
