"""The claims table and the bootstrap behind the n_50 intervals, on small synthetic
results tables: a claim PASSes for a method that behaves as claimed and FAILs for a
deliberately weak one; a claim whose sweep is absent is NOT RUN."""

import numpy as np
import pandas as pd
import pytest

from lowrank_sparse import claims, figures
from lowrank_sparse.tables import claims_table, interval, n50_by_setting, n50_draws

SIGMA, R, K = 0.1, 2, 2


def _row(sweep, method, replicate, **values):
    cell = dict(d=50, t=400, n=16, r=R, k=K, noise=0.0, epsilon=np.inf)
    cell.update({key: values.pop(key) for key in list(values) if key in cell})
    return {"sweep": sweep, "method": method, "replicate": replicate, **cell, **values}


def noise_results(weakness=1.0, replicates=3):
    """Excess risk of the Oracle at its closed form, AMHT-LRS ``weakness`` times it (with
    a 1% spread between replicates)."""
    rows = []
    rng = np.random.default_rng(0)
    for n in (8, 16, 24, 32, 48, 64):
        oracle = SIGMA ** 2 * (R + K) / (n - R - K - 1)
        for rep in range(replicates):
            for method, factor in (("oracle", 1.0), ("known_subspace", 1.02),
                                   ("amht_lrs", weakness)):
                rows.append(_row("noise", method, rep, n=n, noise=SIGMA, mean_excess_risk=
                                 oracle * factor * (1 + 0.01 * rng.standard_normal())))
    return pd.DataFrame(rows)


def dimension_results(shift=1.0, replicates=3):
    """Success curves against n per d for t n = 60 d r: KnownSubspace's threshold at
    5 + log d, AMHT-LRS's ``shift`` times it; Oracle at r + k."""
    rows = []
    for d in (25, 50, 100, 200, 400):
        for n in range(4, 40):
            t = int(np.ceil(60 * d * R / n))
            for method, center in (("known_subspace", 5 + np.log(d)),
                                   ("amht_lrs", shift * (5 + np.log(d))),
                                   ("oracle", R + K + 0.5)):
                success = 1 / (1 + np.exp(-(n - center) * 2))
                for rep in range(replicates):
                    rows.append(_row("dimension", method, rep, d=d, t=t, n=n,
                                     success_rate=float(success)))
    return pd.DataFrame(rows)


def verdicts(results, name):
    table = claims_table(results)
    return table.set_index("claim").loc[name]


def test_noisy_risk_claim_passes_for_an_oracle_like_method_and_fails_for_a_weak_one():
    name = "noisy excess risk within 1.2x the Oracle"
    good = verdicts(noise_results(weakness=1.05), name)
    assert good["verdict"] == "PASS" and good["value"] == pytest.approx(1.05, abs=0.03)
    assert good["low"] <= good["value"] <= good["high"]
    weak = verdicts(noise_results(weakness=1.6), name)
    assert weak["verdict"] == "FAIL" and weak["value"] == pytest.approx(1.6, abs=0.05)
    slope = verdicts(noise_results(weakness=1.05), "noisy excess risk slope about -1 in n")
    assert slope["verdict"] == "PASS" and slope["value"] == pytest.approx(-1, abs=0.05)


def test_n50_claims_pass_for_a_method_at_the_floor_and_fail_for_a_weak_one():
    name = "n_50 within 1.1x KnownSubspace given enough users"
    good = verdicts(dimension_results(shift=1.0), name)
    assert good["verdict"] == "PASS" and good["value"] == pytest.approx(1.0, abs=0.02)
    weak = verdicts(dimension_results(shift=1.3), name)
    assert weak["verdict"] == "FAIL" and weak["value"] == pytest.approx(1.3, abs=0.05)


def test_a_claim_whose_sweep_is_absent_is_not_run_and_the_others_still_computed():
    table = claims_table(noise_results())
    by_name = table.set_index("claim")["verdict"]
    assert by_name["noisy excess risk within 1.2x the Oracle"] == "PASS"
    assert by_name["DP: epsilon spent <= target"] == "NOT RUN"
    assert (table["verdict"] == "NOT RUN").sum() == len(claims.CLAIMS) - 2
    assert list(table.columns) == list(claims.CLAIM_COLUMNS)


def test_claims_table_is_deterministic():
    results = pd.concat([noise_results(), dimension_results()], ignore_index=True)
    pd.testing.assert_frame_equal(claims_table(results), claims_table(results))


def test_the_registry_lists_every_sweep_a_claim_reads():
    assert set(figures.CLAIM_SWEEPS) == set(claims.CLAIM_SWEEPS)


def test_n50_interval_covers_the_truth_and_shrinks_with_replicates():
    """Replicates whose threshold varies around 10 (s.d. 1): the 95% interval of the
    mean curve's n_50 holds 10 and narrows as replicates are added."""
    rng = np.random.default_rng(3)
    widths = []
    for replicates in (4, 32):
        centers = 10 + rng.standard_normal(replicates)
        rows = [_row("phase_transition", "amht_lrs", rep, n=n, t=1000,
                     success_rate=float(1 / (1 + np.exp(-(n - centers[rep]) * 3))))
                for rep in range(replicates) for n in range(4, 17)]
        table = n50_by_setting(pd.DataFrame(rows))
        low, high = table.loc[0, ["n_50_low", "n_50_high"]]
        assert low <= 10 <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_n50_draws_count_few_users_as_uncertain_and_never_reached_as_inf():
    rows = [_row("phase_transition", method, rep, n=n, t=t, success_rate=rate)
            for rep in range(3)
            for method, t, rates in (("amht_lrs", 20, (0.0, 0.45, 0.6, 1.0)),
                                     ("oracle", 20000, (0.0, 0.45, 0.6, 1.0)),
                                     ("known_subspace", 20, (0.0, 0.1, 0.2, 0.3)))
            for n, rate in zip((4, 6, 8, 10), rates)]
    draws = n50_draws(pd.DataFrame(rows)).set_index("method")["draws"]
    few, many = (np.subtract(*interval(draws[m])[::-1]) for m in ("amht_lrs", "oracle"))
    assert few > 3 * many  # 20 users per replicate: the binomial spread shows
    assert np.isinf(draws["known_subspace"]).all()


def test_readme_shows_the_claims_table_at_the_top():
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    top = readme[:readme.index("## Install")]
    assert "paper_figures/table_claims.md" in top
    for claim in claims.CLAIMS:
        assert f"| {claim.name} " in top, claim.name
