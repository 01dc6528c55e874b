"""Summary tables of the tidy results table (one row per sweep, cell, replicate, method),
the bootstrap behind their intervals, the claims table, and the least-squares lines the
figures and notebooks fit.

Which tables exist, their captions and the sweeps they read: ``lowrank_sparse.figures``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .metrics import n_50

#: Bootstrap draws behind every interval, and the interval's quantiles (95%).
BOOTSTRAP_DRAWS = 400
INTERVAL = (0.025, 0.975)
#: How the n_50 of each sweep is grouped: every column of a setting but n (in the
#: dimension sweeps t changes with n, t n = 60 d r, so t is not part of the setting).
N50_SETTING = {"phase_transition": ("method", "d", "t", "r", "k"),
               "phase_diagram": ("method", "d", "t", "r", "k"),
               "phase_diagram_large": ("method", "d", "t", "r", "k"),
               "dimension": ("method", "d", "r", "k"),
               "dimension_least_squares": ("method", "d", "r", "k")}


def _rng(*key) -> np.random.Generator:
    """A generator seeded from ``key`` (never from hash(), which changes per process):
    every bootstrap is deterministic and independent of the order tables are made in."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(np.frombuffer(digest[:16], dtype=np.uint32).tolist())


def n50_draws(results: pd.DataFrame, sweep: str = "phase_transition") -> pd.DataFrame:
    """n_50 per setting of a sweep (``N50_SETTING``) with its bootstrap draws.

    The point estimate is the n at which the mean success rate over replicates reaches
    one half, interpolated on the grid (``metrics.n_50``). Each bootstrap draw resamples,
    at every n, the replicates with replacement and then the t users of each resampled
    replicate (its number of users recovered ~ Binomial(t, success rate)): the
    interval covers both the spread between problems and the finite number of users.
    A draw that never reaches one half is +inf.

    Returns
    -------
    DataFrame
        One row per setting: the setting's columns, ``n_50``, ``at_grid_start`` (half the
        users were recovered at the smallest n of the grid already: the n_50 is at most
        that, e.g. the Oracle's, which is r + k) and ``draws`` (an array of
        ``BOOTSTRAP_DRAWS`` n_50 values).
    """
    by = list(N50_SETTING.get(sweep, ("method", "d", "t", "r", "k")))
    part = results[results["sweep"] == sweep]
    out = []
    for key, group in part.groupby(by, sort=True):
        rates = group.pivot_table(index="n", columns="replicate", values="success_rate")
        users = group.groupby("n")["t"].first().reindex(rates.index).to_numpy()
        S = rates.to_numpy(dtype=float)  # (grid points, replicates)
        grid = rates.index.to_numpy(dtype=float)
        rng = _rng("n50", sweep, key)
        pick = rng.integers(0, S.shape[1], size=(BOOTSTRAP_DRAWS, *S.shape))
        resampled = np.take_along_axis(np.broadcast_to(S, pick.shape), pick, axis=2)
        recovered = rng.binomial(users[None, :, None], resampled) / users[None, :, None]
        draws = _n50_of_curves(grid, recovered.mean(axis=2))
        point = n_50(grid, S.mean(axis=1))
        out.append({**dict(zip(by, key)), "n_50": point, "at_grid_start": point == grid[0],
                    "draws": np.where(np.isnan(draws), np.inf, draws)})
    return pd.DataFrame(out, columns=[*by, "n_50", "at_grid_start", "draws"])


def _n50_of_curves(grid, curves, level=0.5):
    """``metrics.n_50`` of every row of ``curves`` (draws, grid points) on the increasing
    ``grid``, vectorized (the same arithmetic, so the same numbers)."""
    above = curves >= level
    j = np.argmax(above, axis=1)
    rows = np.arange(curves.shape[0])
    before = np.maximum(j - 1, 0)
    n0, n1, s0, s1 = grid[before], grid[j], curves[rows, before], curves[rows, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = n0 + (level - s0) * (n1 - n0) / (s1 - s0)
    return np.where(~above.any(axis=1), np.nan, np.where(j == 0, grid[0], between))


def interval(draws) -> tuple[float, float]:
    """The bootstrap interval (``INTERVAL``) of an array of draws; +inf draws (a level
    never reached) count as the largest values, so an upper end can be inf."""
    draws = np.asarray(draws, dtype=float)
    draws = draws[~np.isnan(draws)]
    if draws.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(draws, INTERVAL, method="inverted_cdf")
    return float(low), float(high)


def _with_interval(table: pd.DataFrame, column="n_50") -> pd.DataFrame:
    """``table`` with its ``draws`` replaced by ``<column>_low`` and ``<column>_high``."""
    bounds = np.array([interval(d) for d in table["draws"]]).reshape(-1, 2)
    return table.drop(columns="draws").assign(**{f"{column}_low": bounds[:, 0],
                                                 f"{column}_high": bounds[:, 1]})


def n50_by_setting(results: pd.DataFrame, sweep: str = "phase_transition") -> pd.DataFrame:
    """n_50 per setting of a sweep (``N50_SETTING``, by default the phase-transition
    sweep's (method, d, t, r, k)) with its 95% bootstrap interval (``n50_draws``):
    columns n_50, n_50_low, n_50_high and r_plus_k."""
    table = _with_interval(n50_draws(results, sweep))
    table["r_plus_k"] = table["r"] + table["k"]
    return table


def _wide_n50(table: pd.DataFrame, index) -> pd.DataFrame:
    """One row per setting, per method ``n50_<method>`` and its interval
    ``n50_<method>_low``/``_high``, methods in the order amht_lrs first."""
    methods = sorted(table["method"].unique(), key=lambda m: (m != "amht_lrs", m))
    out = table[list(index)].drop_duplicates().set_index(list(index))
    for method in methods:
        rows = table[table["method"] == method].set_index(list(index))
        for suffix in ("", "_low", "_high"):
            out[f"n50_{method}{suffix}"] = rows[f"n_50{suffix}"]
    return out.reset_index()


def n50_table(results: pd.DataFrame) -> pd.DataFrame:
    """n_50 of every method per (r, k) with 95% bootstrap intervals, AMHT-LRS's ratio
    to r + k and to KnownSubspace's n_50."""
    out = _wide_n50(n50_by_setting(results), ["d", "t", "r", "k", "r_plus_k"])
    out["ratio_to_r_plus_k"] = out["n50_amht_lrs"] / out["r_plus_k"]
    if "n50_known_subspace" in out:
        out["ratio_to_known_subspace"] = out["n50_amht_lrs"] / out["n50_known_subspace"]
    return out.sort_values(["r_plus_k", "r"]).reset_index(drop=True)


def dimension_table(results: pd.DataFrame) -> pd.DataFrame:
    """n_50 against d (t n = 60 d r): every method of the dimension sweeps with 95%
    bootstrap intervals, and AMHT-LRS's ratio to KnownSubspace's n_50."""
    table = pd.concat([n50_by_setting(results, sweep) for sweep in
                       ("dimension", "dimension_least_squares")
                       if (results["sweep"] == sweep).any()], ignore_index=True)
    out = _wide_n50(table, ["d", "r", "k"])
    if {"n50_amht_lrs", "n50_known_subspace"} <= set(out):
        out["ratio_to_known_subspace"] = out["n50_amht_lrs"] / out["n50_known_subspace"]
    return out.sort_values("d").reset_index(drop=True)


def users_table(results: pd.DataFrame) -> pd.DataFrame:
    """n_50 against the number of users t (phase-diagram sweep) with 95% bootstrap
    intervals, and AMHT-LRS's ratio to KnownSubspace's n_50."""
    out = _wide_n50(n50_by_setting(results, "phase_diagram"), ["d", "r", "k", "t"])
    if {"n50_amht_lrs", "n50_known_subspace"} <= set(out):
        out["ratio_to_known_subspace"] = out["n50_amht_lrs"] / out["n50_known_subspace"]
    return out.sort_values("t").reset_index(drop=True)


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
    """Every method at the setting of the ``methods`` sweep (mean over replicates)."""
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


def claims_table(results: pd.DataFrame, traces: pd.DataFrame | None = None) -> pd.DataFrame:
    """The claims table (``lowrank_sparse.claims``): a row per claim with its statistic,
    95% interval, threshold and verdict."""
    from .claims import claims_table as make  # claims.py uses this module's helpers
    return make(results, traces)
