"""The checked hand-offs of the pipeline (lowrank_sparse.results): fit records and the
tidy tables, each damaged in the ways a failed or edited job leaves them (fast: no fits
and no Snakemake run; the end-to-end checks are in test_pipeline.py)."""

import json
import math
import re

import numpy as np
import pytest

from lowrank_sparse.experiment import METRICS, TIMING_COLUMNS
from lowrank_sparse.results import (RESULT_COLUMNS, expected_rows, read_fit_record,
                                    read_results, read_traces, tidy_results)

CELLS = [{"d": 12, "t": 40, "n": n, "r": 1, "k": 1, "noise": 0.0, "epsilon": math.inf}
         for n in (1, 8)]  # n = 1 < r + k: not fitted
REPLICATES = 2


def row(replicate, fitted=True, iterations=3):
    if not fitted:
        return {"replicate": replicate, **dict.fromkeys(METRICS, math.nan),
                "success_rate": 0.0, "fitted": False}
    values = dict.fromkeys(METRICS, 0.5)
    values.update(iterations=iterations, epsilon_spent=math.inf, noise_multiplier=0.0)
    return {"replicate": replicate, **values, "fitted": True}


def record(method="amht_lrs"):
    fits = [{"cell": cell, "rows": [row(rep, cell["n"] > 1) for rep in range(REPLICATES)],
             "traces": [[0.5, 0.1, 0.01] if cell["n"] > 1 else [] for _ in range(REPLICATES)]}
            for cell in CELLS]
    return {"sweep": "convergence", "method": method, "batch": 0, "fits": fits,
            "work_seconds": 1.0, "versions": {"numpy": "2"}, "code_version": "abc"}


def write(tmp_path, content, name="batch~0.json"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def read(path):
    return read_fit_record(path, sweep="convergence", method="amht_lrs", cells=CELLS,
                           replicates=REPLICATES)


def test_a_good_record_reads_and_makes_tidy_tables(tmp_path):
    path = write(tmp_path, record())
    loaded = read(path)
    plan = [{"sweep": "convergence", "method": "amht_lrs", **cell} for cell in CELLS]
    results, traces = tidy_results(plan, [loaded])
    assert list(results.columns[:len(RESULT_COLUMNS)]) == [
        *RESULT_COLUMNS[:10], *METRICS, "fitted", "code_version"]
    assert len(results) == 4 and len(traces) == 6 and results["version_numpy"].eq("2").all()
    results.to_csv(tmp_path / "results.csv", index=False)
    traces.to_csv(tmp_path / "traces.csv", index=False)
    back = read_results(tmp_path / "results.csv", expected_rows(plan, REPLICATES))
    read_traces(tmp_path / "traces.csv", back, ["convergence"])


def damaged(change):
    bad = record()
    change(bad)
    return bad


@pytest.mark.parametrize("content,message", [
    (json.dumps(record())[:300], "not a complete JSON file"),
    ("", "not a complete JSON file"),
    ({"rows": []}, "not a fit record"),
    (damaged(lambda r: r.update(method="oracle")), "holds sweep 'convergence', method 'oracle'"),
    (damaged(lambda r: r["fits"].pop()), "not the 2 cells the config plans"),
    (damaged(lambda r: r["fits"][1]["rows"].pop()), "needs 2 rows and 2 traces"),
    (damaged(lambda r: r["fits"][1]["rows"][0].pop("seconds")), "missing ['seconds']"),
    (damaged(lambda r: r["fits"][1]["rows"][0].update(extra=1)), "unknown ['extra']"),
    (damaged(lambda r: r["fits"][1]["rows"][1].update(replicate=0)), "row 1 is replicate 0"),
    (damaged(lambda r: r["fits"][1]["rows"][1].update(relative_error=math.nan)),
     "relative_error = nan in the row d=12, t=40, n=8, r=1, k=1, noise=0.0, epsilon=inf, "
     "replicate=1; expected a number in [0, inf]"),
    (damaged(lambda r: r["fits"][1]["rows"][1].update(median_test_mse=math.inf)),
     "median_test_mse = inf"),
    (damaged(lambda r: r["fits"][1]["rows"][0].update(success_rate=1.5)), "success_rate = 1.5"),
    (damaged(lambda r: r["fits"][1]["rows"][0].update(subspace_distance=-0.1)),
     "subspace_distance = -0.1"),
    (damaged(lambda r: r["fits"][1]["rows"][0].update(iterations=2.5)), "iterations = 2.5"),
    (damaged(lambda r: r["fits"][1]["rows"][0].update(seconds="fast")), "seconds = 'fast'"),
    (damaged(lambda r: r["fits"][0]["rows"][0].update(success_rate=0.5)),
     "expected 0 (the fit could not be attempted)"),
    (damaged(lambda r: r["fits"][1]["traces"][0].pop()), "the trace must hold 3 subspace"),
    (damaged(lambda r: r["fits"][1]["traces"][0].__setitem__(0, math.nan)), "the trace must"),
])
def test_a_damaged_record_is_named(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        read(path)
    assert str(path) in str(error.value)


def test_nan_is_allowed_only_where_a_metric_can_be_undefined(tmp_path):
    fine = damaged(lambda r: r["fits"][1]["rows"][0].update(subspace_distance=math.nan,
                                                            iteration_seconds=math.nan))
    read(write(tmp_path, fine))


@pytest.fixture
def tables(tmp_path):
    plan = [{"sweep": "convergence", "method": "amht_lrs", **cell} for cell in CELLS]
    results, traces = tidy_results(plan, [read(write(tmp_path, record()))])
    results.to_csv(tmp_path / "results.csv", index=False, float_format="%.10g")
    traces.to_csv(tmp_path / "traces.csv", index=False, float_format="%.10g")
    return tmp_path / "results.csv", tmp_path / "traces.csv", expected_rows(plan, REPLICATES)


def cut(path, keep_lines, extra_chars=0):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:keep_lines]) + lines[keep_lines][:extra_chars])


@pytest.mark.parametrize("damage,message", [
    (lambda p: cut(p, 1), "sweep 'convergence', method 'amht_lrs' has 0 rows; the config "
                          "plans 4"),
    (lambda p: cut(p, 3), "has 2 rows; the config plans 4"),
    (lambda p: cut(p, 4, 30), "line 5: no value for 'k'"),  # the last row cut short
    (lambda p: cut(p, 4, len(p.read_text().splitlines()[4]) - 3),
     "line 5: no value for 'version_numpy'"),
    (lambda p: p.write_text(p.read_text().replace("True", "yes", 1)),
     "fitted = 'yes' in the row sweep='convergence'"),
    (lambda p: p.write_text(""), "not a readable table"),
    (lambda p: p.write_text(p.read_text().replace("median_test_mse", "mse")),
     "columns ['median_test_mse'] are missing"),
    (lambda p: p.write_text(p.read_text() + p.read_text().splitlines()[-1] + "\n"),
     "has 5 rows"),
])
def test_a_damaged_results_table_is_named(tables, damage, message):
    results, _, expected = tables
    damage(results)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        read_results(results, expected)
    assert str(results) in str(error.value)


def test_rows_of_another_config_are_named(tables):
    results, _, expected = tables
    with pytest.raises(ValueError, match="has 4 rows; the config plans 6"):
        read_results(results, {"convergence": {"amht_lrs": 6}})
    with pytest.raises(ValueError, match=re.escape("rows of methods ['amht_lrs'] that the "
                                                   "config does not plan")):
        read_results(results, {"convergence": {}})
    with pytest.raises(ValueError, match="sweep 'privacy', method 'dp_amht_lrs' has 0 rows"):
        read_results(results, {**expected, "privacy": {"dp_amht_lrs": 2}})


def test_a_truncated_traces_table_is_named(tables):
    results_path, traces_path, expected = tables
    results = read_results(results_path, expected)
    cut(traces_path, 5)
    with pytest.raises(ValueError, match=r"has 1 trace rows, not one per iteration \(3\)"):
        read_traces(traces_path, results, ["convergence"])
    cut(traces_path, 3, 20)
    with pytest.raises(ValueError, match=str(traces_path)):
        read_traces(traces_path, results, ["convergence"])


def test_timing_columns_are_metrics():
    assert set(TIMING_COLUMNS) <= set(METRICS)
    assert not np.isin(["sweep", "fitted"], list(METRICS)).any()
