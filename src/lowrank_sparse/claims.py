"""The claims table: every claim the figures support, as a statistic computed from the
results, its 95% bootstrap interval, the threshold it must meet and the verdict.

Each claim is a ``Claim``: the sweeps it reads and a function of the results (and
traces) returning a ``Verdict``. The verdict compares the point estimate with the
threshold; the interval says how sure that is. A claim whose sweeps the config does not
run is reported as ``NOT RUN`` (a config may leave out, say, the privacy sweep), one
whose statistic cannot be computed from the results (e.g. an n_50 never reached) as
``FAIL`` with the reason. Intervals are bootstraps seeded from the claim's name, so the
table is the same bit for bit on every run of the same results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .tables import (BOOTSTRAP_DRAWS, TooFewPoints, _rng, interval, linear_fit,
                     loglog_slope, n50_draws)

#: Columns of the claims table.
CLAIM_COLUMNS = ("claim", "sweeps", "statistic", "value", "low", "high", "threshold",
                 "verdict", "detail")
#: Noiseless fits count as exact at this subspace distance (float64 round-off ~1e-15).
EXACT = 1e-8
#: The claim of exact recovery uses the cells with at least this many samples per
#: unknown (n >= 4 (r + k)): above every method's noiseless threshold.
WELL_ABOVE = 4


@dataclass(frozen=True)
class Verdict:
    """What a claim's check found: the statistic's value, its interval, whether it meets
    the threshold, and a sentence with the numbers behind it."""

    value: float
    low: float
    high: float
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Claim:
    """One claim: a name, the sweeps it reads, what the statistic is, the threshold
    (in words) and the check, ``check(results, traces) -> Verdict``. ``timed``: the
    statistic is a wall-time measurement, so its row differs between runs (every
    other row is the same bit for bit)."""

    name: str
    sweeps: tuple[str, ...]
    statistic: str
    threshold: str
    check: Callable
    timed: bool = False


def _sweep(results, sweep, method=None):
    part = results[results["sweep"] == sweep]
    return part if method is None else part[part["method"] == method]


def _cell_bootstrap(frame, cells, column, statistic, name, reduce="mean"):
    """A statistic of the per-cell ``reduce`` ("mean" or "median") of ``column`` over
    replicates, and its 95% bootstrap interval: each of ``BOOTSTRAP_DRAWS`` draws
    resamples the replicates of every cell (the columns ``cells``) with replacement.

    ``statistic`` takes a Series of the per-cell values indexed by ``cells``.
    Returns (value, low, high)."""
    groups = frame.groupby(list(cells), sort=True)[column]
    point = groups.agg(reduce)
    rng = _rng("claim", name)
    aggregate = np.mean if reduce == "mean" else np.median
    columns = []
    for _, values in groups:
        values = values.to_numpy(dtype=float)
        picked = values[rng.integers(0, values.size, (BOOTSTRAP_DRAWS, values.size))]
        columns.append(aggregate(picked, axis=1))
    draws = []
    for values in np.column_stack(columns):
        try:
            draws.append(statistic(pd.Series(values, index=point.index)))
        except (TooFewPoints, ValueError, ZeroDivisionError):
            draws.append(np.nan)
    return (float(statistic(point)), *interval(draws))


def _n50_of(results, sweep, method) -> pd.DataFrame:
    table = n50_draws(results, sweep)
    return table[table["method"] == method].reset_index(drop=True)


# ------------------------------------------------------------------------------ checks
def _exact_recovery(results, traces):
    phase = _sweep(results, "phase_transition")
    amht = phase[(phase["method"] == "amht_lrs")
                 & (phase["n"] >= WELL_ABOVE * (phase["r"] + phase["k"]))]
    if amht.empty:
        raise ValueError(f"no cell with n >= {WELL_ABOVE} (r + k)")
    distance = amht["subspace_distance"]
    worst = amht.loc[distance.idxmax()]
    inexact = amht[distance > EXACT]
    return Verdict(float(distance.max()), float(distance.min()), float(distance.max()),
                   bool(distance.max() <= EXACT),
                   f"{len(amht)} fits (every (r, k), n >= {WELL_ABOVE}(r + k), t = "
                   f"{sorted(int(t) for t in amht['t'].unique())}); {len(inexact)} above "
                   f"{EXACT:g}, at (r, k) = {sorted(set(zip(inexact['r'], inexact['k'])))}; "
                   f"worst at r={worst['r']}, k={worst['k']}, n={worst['n']}; worst fraction "
                   f"of users recovered {amht['success_rate'].min():.3f}; interval: min-max "
                   f"over the fits")


def _convergence_rate(results, traces):
    part = traces[(traces["sweep"] == "convergence") & (traces["method"] == "amht_lrs")
                  & (traces["noise"] == 0)]
    if part.empty:
        raise ValueError("no noiseless AMHT-LRS trace")
    rates, finals = [], []
    for _, trace in part.groupby("replicate"):
        distance = trace.sort_values("iteration")["subspace_distance"].to_numpy()
        finals.append(distance[-1])
        # the contraction per iteration, from the first iterate below 0.5 (the start of
        # the local regime) to the last one above round-off
        steps = np.flatnonzero((distance < 0.5) & (distance > 1e-13))
        if steps.size < 2:
            rates.append(0.0 if distance[-1] <= EXACT else np.nan)
            continue
        first, last = steps[0], steps[-1]
        rates.append(float((distance[last] / distance[first]) ** (1 / (last - first))))
    rates = np.asarray(rates)
    value = float(np.median(rates))
    return Verdict(value, float(np.min(rates)), float(np.max(rates)),
                   bool(value <= 0.5 and max(finals) <= EXACT),
                   f"{rates.size} noiseless fits; final distance <= {max(finals):.1e}; "
                   f"interval: min-max over replicates")


def _unknowns(table):
    return table["r"] + table["k"] * np.log(table["d"] / table["k"])


def _n50_linear_in_unknowns(results, traces):
    table = _n50_of(results, "phase_transition", "amht_lrs")
    x = _unknowns(table)
    slope, intercept, r2 = linear_fit(x, table["n_50"])
    draws = np.stack(table["draws"].to_numpy())  # (settings, draws)
    r2_draws = []
    for column in draws.T:
        try:
            r2_draws.append(linear_fit(x, column)[2])
        except TooFewPoints:
            r2_draws.append(np.nan)
    low, high = interval(r2_draws)
    return Verdict(r2, low, high, bool(r2 >= 0.9),
                   f"AMHT-LRS n_50 = {slope:.2f} (r + k log(d/k)) + {intercept:.2f} over "
                   f"{np.isfinite(table['n_50']).sum()} settings (r, k)")


def _n50_logarithmic_in_d(results, traces):
    shared = _n50_of(results, "dimension", "amht_lrs").sort_values("d")
    alone = _n50_of(results, "dimension_least_squares", "per_user_least_squares")
    missing = shared.loc[~np.isfinite(shared["n_50"]), "d"].tolist()
    if missing:
        return Verdict(np.nan, np.nan, np.nan, False,
                       f"AMHT-LRS n_50 not reached on the grid at d = {missing}")
    logd = np.log(shared["d"].to_numpy(float))
    b, a, r2_log = linear_fit(logd, shared["n_50"])
    r2_lin = linear_fit(shared["d"], shared["n_50"])[2]
    ls_slope, _, ls_r2 = linear_fit(alone["d"], alone["n_50"])
    draws = np.stack(shared["draws"].to_numpy()).T
    b_draws = [linear_fit(logd, column)[0] if np.isfinite(column).all() else np.inf
               for column in draws]
    low, high = interval(b_draws)
    growth = shared["n_50"].iloc[-1] / shared["n_50"].iloc[0]
    span = shared["d"].iloc[-1] / shared["d"].iloc[0]
    return Verdict(float(b), low, high,
                   bool(r2_log >= 0.9 and r2_log >= r2_lin and ls_r2 >= 0.99 and ls_slope >= 0.9),
                   f"AMHT-LRS n_50 = {a:.2f} + {b:.2f} log d: R² {r2_log:.3f} (linear in d: "
                   f"R² {r2_lin:.3f}); grows {growth:.2f}x while d grows {span:g}x; per-user "
                   f"least squares n_50 = {ls_slope:.3f} d + c, R² {ls_r2:.4f}")


def _n50_vs_known_subspace(results, traces):
    amht = _n50_of(results, "dimension", "amht_lrs").set_index("d")
    known = _n50_of(results, "dimension", "known_subspace").set_index("d")
    ratio = (amht["n_50"] / known["n_50"]).fillna(np.inf)
    draws = (np.stack(amht["draws"].to_numpy()) / np.stack(known.loc[amht.index, "draws"]
                                                              .to_numpy()))
    low, high = interval(np.max(draws, axis=0))
    worst = ratio.idxmax()
    return Verdict(float(ratio.max()), low, high, bool(ratio.max() <= 1.1),
                   "ratio per d: " + ", ".join(f"d={d}: {v:.2f}" for d, v in ratio.items())
                   + f" (t n = 60 d r); worst at d={worst}")


def _threshold_points(log_distance):
    """t n / (d r) at which the mean log10 subspace distance (a Series indexed by d, t,
    n, r) crosses 1e-6, per (d, r), interpolated in log t n; NaN where it never does."""
    frame = log_distance.rename("log_distance").reset_index()
    frame["ratio"] = frame["t"] * frame["n"] / (frame["d"] * frame["r"])
    out = {}
    for key, group in frame.groupby(["d", "r"]):
        curve = group.groupby("ratio")["log_distance"].mean()
        below = np.flatnonzero(curve.to_numpy() <= -6)
        if below.size == 0:
            out[key] = np.nan
        elif below[0] == 0:
            out[key] = float(curve.index[0])
        else:
            j = below[0]
            (x0, x1), (y0, y1) = np.log(curve.index[j - 1:j + 1]), curve.to_numpy()[j - 1:j + 1]
            out[key] = float(np.exp(x0 + (-6 - y0) * (x1 - x0) / (y1 - y0)))
    return pd.Series(out)


def _threshold_constant(results, traces):
    sweep = _sweep(results, "total_samples", "amht_lrs")
    sweep = sweep.assign(log_distance=np.log10(sweep["subspace_distance"].clip(lower=1e-16)))
    cells = ["d", "t", "n", "r"]
    points = _threshold_points(sweep.groupby(cells)["log_distance"].mean())
    if points.isna().any():
        return Verdict(np.nan, np.nan, np.nan, False, "distance 1e-6 never reached at "
                       f"(d, r) = {points.index[points.isna()].tolist()}")

    def spread(log_distance):
        p = _threshold_points(log_distance)
        return float(p.max() / p.min())

    value, low, high = _cell_bootstrap(sweep, cells, "log_distance", spread,
                                       "threshold_constant")
    return Verdict(value, low, high, bool(value <= 2.0),
                   "t n / (d r) at distance 1e-6: " + ", ".join(
                       f"d={d}, r={r}: {v:.0f}" for (d, r), v in points.items()))


def _supports_found(frame):
    """The cells of the noise sweep where the per-user floor is passed: KnownSubspace
    (the true U, supports to find) within 1.2x the Oracle's mean excess risk (true U and
    supports). Below it even the true U leaves users with wrong supports (measured:
    64x the Oracle at n=16, sigma=0.1), which no estimate of U can repair, so the
    comparison with the Oracle is made above it."""
    excess = frame.groupby(["method", "n"])["mean_excess_risk"].mean()
    found = excess["known_subspace"] <= 1.2 * excess["oracle"]
    return frame[frame["n"].isin(found.index[found.to_numpy()])]


def _noisy_risk_ratio(results, traces):
    sweep = _supports_found(_sweep(results, "noise"))
    if sweep.empty:
        raise ValueError("no cell where KnownSubspace is within 1.2x the Oracle")

    def ratios(excess):
        return excess["amht_lrs"] / excess["oracle"]

    value, low, high = _cell_bootstrap(sweep, ["method", "n"], "mean_excess_risk",
                                       lambda e: float(ratios(e).max()), "noisy_risk_ratio")
    per_n = ratios(sweep.groupby(["method", "n"])["mean_excess_risk"].mean())
    return Verdict(value, low, high, bool(value <= 1.2),
                   "AMHT-LRS / Oracle mean excess risk per n where KnownSubspace is within "
                   "1.2x the Oracle: " + ", ".join(f"n={n}: {v:.3f}" for n, v in per_n.items()))


def _noisy_risk_slope(results, traces):
    sweep = _supports_found(_sweep(results, "noise"))
    sweep = sweep[sweep["method"] == "amht_lrs"]
    p = int((sweep["r"] + sweep["k"]).iloc[0]) if len(sweep) else 0

    def slope(excess):
        return loglog_slope(excess.index - p - 1, excess.to_numpy())[0]

    value, low, high = _cell_bootstrap(sweep, ["n"], "mean_excess_risk", slope,
                                       "noisy_risk_slope")
    return Verdict(value, low, high, bool(-1.2 <= value <= -0.8),
                   f"log-log slope of AMHT-LRS's mean excess risk against n - r - k - 1 (the "
                   f"Oracle's sigma^2 (r + k) / (n - r - k - 1) has slope -1 exactly) over n = "
                   f"{sorted(int(n) for n in sweep['n'].unique())}, where KnownSubspace is "
                   f"within 1.2x the Oracle")


def _dp_budget(results, traces):
    private = _sweep(results, "privacy")
    private = private[np.isfinite(private["epsilon"])]
    ratio = private["epsilon_spent"] / private["epsilon"]
    return Verdict(float(ratio.max()), float(ratio.min()), float(ratio.max()),
                   bool(ratio.max() <= 1 + 1e-9),
                   f"{len(private)} private fits; interval: min-max over them")


def _dp_monotone(results, traces):
    sweep = _sweep(results, "privacy", "dp_amht_lrs")

    def largest_rise(distance):
        return float(max(curve.sort_index().pct_change().max()
                         for _, curve in distance.groupby(level="t")))

    value, low, high = _cell_bootstrap(sweep, ["t", "epsilon"], "subspace_distance",
                                       largest_rise, "dp_monotone")
    means = sweep.groupby(["t", "epsilon"])["subspace_distance"].mean()
    return Verdict(value, low, high, bool(value <= 0.1),
                   "DP-AMHT-LRS mean subspace distance per (t, epsilon): " + ", ".join(
                       f"t={t}, eps={e:g}: {v:.3g}" for (t, e), v in means.items()))


def _dp_vs_public(results, traces):
    sweep = _sweep(results, "privacy")
    t = sweep["t"].max()
    eps = 8.0 if (sweep["epsilon"] == 8.0).any() else sweep.loc[
        np.isfinite(sweep["epsilon"]), "epsilon"].max()
    at = sweep[(sweep["t"] == t) & (((sweep["method"] == "dp_amht_lrs")
                                     & (sweep["epsilon"] == eps))
                                    | (sweep["method"] == "amht_lrs"))]
    value, low, high = _cell_bootstrap(
        at, ["method"], "median_test_mse", lambda m: float(m["dp_amht_lrs"] / m["amht_lrs"]),
        "dp_vs_public")
    return Verdict(value, low, high, bool(value <= 2.0 and eps == 8.0 and t >= 2000),
                   f"mean over replicates of the median test MSE of DP-AMHT-LRS at "
                   f"epsilon={eps:g}, t={t}, over AMHT-LRS's")


def _runtime_linear(results, traces):
    sweep = _sweep(results, "runtime_t", "amht_lrs")

    def slope(seconds):
        return loglog_slope(seconds.index, seconds.to_numpy())[0]

    value, low, high = _cell_bootstrap(sweep, ["t"], "iteration_seconds", slope,
                                       "runtime_linear", reduce="median")
    return Verdict(value, low, high, bool(0.8 <= value <= 1.2),
                   f"log-log slope of the median time per outer iteration over t = "
                   f"{[int(t) for t in sorted(sweep['t'].unique())]} (wall times of fits "
                   f"run alone, in one thread; they vary between runs)")


#: Every claim, in the order of the table.
CLAIMS = (
    Claim("exact noiseless recovery above the threshold", ("phase_transition",),
          f"largest subspace distance of AMHT-LRS, n >= {WELL_ABOVE}(r + k)",
          f"<= {EXACT:g}", _exact_recovery),
    Claim("geometric convergence", ("convergence",),
          "median contraction of the subspace distance per iteration, noiseless",
          "<= 0.5 (and final distance <= 1e-8)", _convergence_rate),
    Claim("n_50 linear in r + k log(d/k)", ("phase_transition",),
          "R² of AMHT-LRS's n_50 against r + k log(d/k)", ">= 0.9",
          _n50_linear_in_unknowns),
    Claim("n_50 logarithmic in d, per-user least squares linear", (
        "dimension", "dimension_least_squares"),
          "b in AMHT-LRS's n_50 = a + b log d (t n = 60 d r)",
          "R² of the log fit >= 0.9 and >= the linear fit's; least squares: slope >= 0.9 "
          "in d with R² >= 0.99", _n50_logarithmic_in_d),
    Claim("n_50 within 1.1x KnownSubspace given enough users", ("dimension",),
          "largest n_50 ratio AMHT-LRS / KnownSubspace over d (t n = 60 d r)", "<= 1.1",
          _n50_vs_known_subspace),
    Claim("threshold t n / (d r) roughly constant across d and r", ("total_samples",),
          "largest / smallest t n / (d r) at which the distance reaches 1e-6", "<= 2",
          _threshold_constant),
    Claim("noisy excess risk within 1.2x the Oracle", ("noise",),
          "largest excess-risk ratio AMHT-LRS / Oracle over the n where KnownSubspace is "
          "within 1.2x the Oracle (supports found)", "<= 1.2", _noisy_risk_ratio),
    Claim("noisy excess risk slope about -1 in n", ("noise",),
          "log-log slope of AMHT-LRS's excess risk against n - r - k - 1, same n",
          "in [-1.2, -0.8]",
          _noisy_risk_slope),
    Claim("DP: epsilon spent <= target", ("privacy",),
          "largest epsilon spent / epsilon target", "<= 1", _dp_budget),
    Claim("DP: error monotone in epsilon", ("privacy",),
          "largest relative rise of DP-AMHT-LRS's mean subspace distance from one epsilon "
          "to the next", "<= 0.1", _dp_monotone),
    Claim("DP: within 2x non-private at epsilon=8, t=2000", ("privacy",),
          "median test MSE ratio DP-AMHT-LRS / AMHT-LRS", "<= 2 (at epsilon = 8, t >= 2000)",
          _dp_vs_public),
    Claim("cost per iteration linear in t", ("runtime_t",),
          "log-log slope of the time per outer iteration against t", "in [0.8, 1.2]",
          _runtime_linear, timed=True),
)
#: Names of the claims measured in wall time (their rows vary between runs).
TIMED_CLAIMS = tuple(claim.name for claim in CLAIMS if claim.timed)

#: Every sweep some claim reads (the registry lists them as optional for the table).
CLAIM_SWEEPS = tuple(dict.fromkeys(s for claim in CLAIMS for s in claim.sweeps))


def claims_table(results: pd.DataFrame, traces: pd.DataFrame | None = None,
                 claims=CLAIMS) -> pd.DataFrame:
    """One row per claim: statistic, value, 95% interval, threshold, verdict (PASS,
    FAIL, or NOT RUN when the results hold none of a sweep it reads) and detail."""
    if traces is None:
        traces = pd.DataFrame(columns=["sweep", "method", "noise", "replicate", "iteration",
                                       "subspace_distance"])
    present = set(results["sweep"].unique())
    rows = []
    for claim in claims:
        row = {"claim": claim.name, "sweeps": ", ".join(claim.sweeps),
               "statistic": claim.statistic, "threshold": claim.threshold}
        absent = [sweep for sweep in claim.sweeps if sweep not in present]
        if absent:
            rows.append({**row, "value": np.nan, "low": np.nan, "high": np.nan,
                         "verdict": "NOT RUN",
                         "detail": f"sweep {', '.join(absent)} not in the config"})
            continue
        try:
            verdict = claim.check(results, traces)
        except (TooFewPoints, ValueError, KeyError) as error:
            verdict = Verdict(np.nan, np.nan, np.nan, False, f"not computable: {error}")
        rows.append({**row, "value": verdict.value, "low": verdict.low, "high": verdict.high,
                     "verdict": "PASS" if verdict.passed else "FAIL",
                     "detail": verdict.detail})
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))
