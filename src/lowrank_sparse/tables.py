"""Summary tables of the tidy results table (one row per sweep, cell, replicate, method)."""

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


def loglog_slope(x, y) -> tuple[float, float, float]:
    """Least-squares line of log y on log x: (slope, intercept, R^2)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(intercept), _r2(lx, ly, slope, intercept)


def linear_fit(x, y) -> tuple[float, float, float]:
    """Least-squares line y = slope x + intercept: (slope, intercept, R^2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    slope, intercept = np.polyfit(x[keep], y[keep], 1)
    return float(slope), float(intercept), _r2(x[keep], y[keep], slope, intercept)


def _r2(x, y, slope, intercept):
    resid = y - (slope * x + intercept)
    total = np.sum((y - y.mean()) ** 2)
    return float(1 - np.sum(resid ** 2) / total) if total > 0 else 1.0


TABLES = {"n50": n50_table, "privacy": privacy_table, "methods": methods_table}
