"""Summary tables of the tidy results table (one row per sweep, cell, replicate, method),
and the least-squares lines the figures and notebooks fit.

Which tables exist, their captions and the sweeps they read: ``lowrank_sparse.figures``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import n_50


def n50_by_setting(results: pd.DataFrame) -> pd.DataFrame:
    """n_50 per (method, d, t, r, k) from the phase-transition sweep: the n at which
    the mean success rate over replicates reaches one half, interpolated on the grid."""
    phase = results[results["sweep"] == "phase_transition"]
    curves = phase.groupby(["method", "d", "t", "r", "k", "n"], as_index=False)["success_rate"].mean()
    out = []
    for key, curve in curves.groupby(["method", "d", "t", "r", "k"]):
        out.append(dict(zip(["method", "d", "t", "r", "k"], key),
                        n_50=n_50(curve["n"], curve["success_rate"])))
    table = pd.DataFrame(out)
    table["r_plus_k"] = table["r"] + table["k"]
    return table


def n50_table(results: pd.DataFrame) -> pd.DataFrame:
    """n_50 of AMHT-LRS per (r, k), its ratio to r + k and to KnownSubspace's n_50."""
    table = n50_by_setting(results)
    wide = table.pivot_table(index=["d", "t", "r", "k", "r_plus_k"], columns="method",
                             values="n_50").reset_index()
    wide.columns.name = None
    methods = [c for c in wide.columns if c not in ("d", "t", "r", "k", "r_plus_k")]
    out = wide.rename(columns={m: f"n50_{m}" for m in methods})
    out["ratio_to_r_plus_k"] = out["n50_amht_lrs"] / out["r_plus_k"]
    if "n50_known_subspace" in out:
        out["ratio_to_known_subspace"] = out["n50_amht_lrs"] / out["n50_known_subspace"]
    return out.sort_values(["r_plus_k", "r"]).reset_index(drop=True)


def privacy_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean subspace distance and median test MSE by method, t and epsilon."""
    priv = results[results["sweep"] == "privacy"]
    return (priv.groupby(["method", "t", "epsilon"], as_index=False)
            .agg(subspace_distance=("subspace_distance", "mean"),
                 median_test_mse=("median_test_mse", "mean"),
                 epsilon_spent=("epsilon_spent", "max"),
                 noise_multiplier=("noise_multiplier", "mean"),
                 replicates=("replicate", "nunique"))
            .sort_values(["t", "method", "epsilon"]).reset_index(drop=True))


def methods_table(results: pd.DataFrame) -> pd.DataFrame:
    """Every method at the setting of the ``methods`` sweep."""
    sweep = results[results["sweep"] == "methods"]
    return (sweep.groupby(["method", "d", "t", "n", "r", "k", "noise", "epsilon"], as_index=False)
            .agg(subspace_distance=("subspace_distance", "mean"),
                 median_test_mse=("median_test_mse", "mean"),
                 median_user_error=("median_user_error", "mean"),
                 support_recall=("support_recall", "mean"),
                 seconds=("seconds", "mean"))
            .sort_values("median_test_mse").reset_index(drop=True))


#: Fewest points a fitted line is reported for: through two points any line fits exactly
#: (R^2 = 1 says nothing), so a slope needs at least one point more than it has unknowns.
MIN_FIT_POINTS = 3


class TooFewPoints(ValueError):
    """A line was asked for through fewer than ``MIN_FIT_POINTS`` points."""


def loglog_slope(x, y) -> tuple[float, float, float]:
    """Least-squares line of log y on log x: (slope, intercept, R^2).

    Points with a non-finite or non-positive x or y are left out; raises
    ``TooFewPoints`` (a ValueError) when fewer than ``MIN_FIT_POINTS`` remain."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        lx, ly = np.log(x), np.log(y)
    return _line(lx, ly, "log-log slope")


def linear_fit(x, y) -> tuple[float, float, float]:
    """Least-squares line y = slope x + intercept: (slope, intercept, R^2).

    Points with a non-finite x or y (e.g. an n_50 that was never reached) are left out;
    raises ``TooFewPoints`` (a ValueError) when fewer than ``MIN_FIT_POINTS`` remain."""
    return _line(np.asarray(x, float), np.asarray(y, float), "line")


def _line(x, y, what):
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d of the same length; got shapes {x.shape} "
                         f"and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < MIN_FIT_POINTS or np.unique(x).size < 2:
        raise TooFewPoints(f"a {what} needs at least {MIN_FIT_POINTS} points with finite "
                           f"values (and two distinct x); got {x.size} "
                           f"(of {keep.size} given)")
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    total = np.sum((y - y.mean()) ** 2)
    r2 = float(1 - np.sum(resid ** 2) / total) if total > 0 else 1.0
    return float(slope), float(intercept), r2
