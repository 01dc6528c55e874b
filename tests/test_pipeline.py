"""The Snakemake pipeline on config/test.yaml: every output, sane values, reruns of what
an edit affects and nothing else, bit-identical reruns, intermediates rebuilt, damaged
hand-offs named, configs checked before anything runs, lint and report. Also executes
the notebooks. (Each value the config check rejects: tests/test_config.py.)"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lowrank_sparse.config import load_config_file
from lowrank_sparse.claims import TIMED_CLAIMS
from lowrank_sparse.experiment import TIMING_COLUMNS
from lowrank_sparse.figures import OUTPUTS

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
OUTPUT_FILES = [f"{output.stem}.{ext}" for output in OUTPUTS.values()
                for ext in output.extensions]

pytestmark = pytest.mark.slow


def checkout(tmp: Path, source: Path = ROOT) -> Path:
    """A copy of what the pipeline needs, as on a fresh clone, but with numba's cache of
    compiled kernels (copied with the sources' times, so it stays valid) when ``source``
    has one: each pipeline run would otherwise take a minute to compile them."""
    for name in ("Snakefile", "config", "workflow", "profiles", "src", "notebooks"):
        if (source / name).is_dir():
            shutil.copytree(source / name, tmp / name)
        else:
            shutil.copy(source / name, tmp / name)
    return tmp


def run(workdir, *args, check=True):
    return subprocess.run(SNAKEMAKE + ["--configfile", "config/test.yaml", "--cores", "2", *args],
                          cwd=workdir, capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    workdir = checkout(tmp_path_factory.mktemp("run1"))
    result = run(workdir, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def copy_run(pipeline, workdir):
    """A copy of the fixture's checkout with its outputs and run records."""
    checkout(workdir, source=pipeline)
    for name in ("results", ".snakemake", "paper_figures"):
        shutil.copytree(pipeline / name, workdir / name)
    return workdir


def planned_jobs(dry_run_stdout):
    """The output files of the jobs a dry run plans, e.g. results/fits/privacy/...json."""
    return {path for line in re.findall(r"^    output: (.+)$", dry_run_stdout, flags=re.M)
            for path in line.split(", ")}


def without_timing(path):
    """A table without its wall-time columns, and without the claims measured in wall
    time (the rows of ``lowrank_sparse.claims.TIMED_CLAIMS``)."""
    table = pd.read_csv(path).drop(columns=list(TIMING_COLUMNS), errors="ignore")
    if "claim" in table:
        table = table[~table["claim"].isin(TIMED_CLAIMS)].reset_index(drop=True)
    return table


def test_every_registered_figure_and_table_exists(pipeline):
    for name in OUTPUT_FILES:
        path = pipeline / "paper_figures" / name
        assert path.stat().st_size > 1000 or name.endswith((".csv", ".md")), path
        if name.endswith(".md"):
            assert path.read_text().startswith("|")
        if name.endswith(".csv"):
            assert len(pd.read_csv(path)) > 0


def test_every_job_keeps_its_log_and_benchmark(pipeline):
    fits = sorted((pipeline / "results" / "fits").rglob("*.json"))
    config = load_config_file(pipeline / "config" / "test.yaml")
    # sweeps split into several jobs of at most batch_size cells, one method each
    assert len(fits) > len(config["sweeps"]) and config["batch_size"] < 6
    for fit in fits:
        job = fit.relative_to(pipeline / "results" / "fits").with_suffix("")
        assert (pipeline / "results" / "logs" / "fit" / f"{job}.log").stat().st_size > 0
        benchmark = pd.read_csv(pipeline / "results" / "benchmarks" / "fit" / f"{job}.tsv",
                                sep="\t")
        assert benchmark["s"].iloc[0] > 0
    for job in ["aggregate", "compile_kernels"] + [
            f"figures/{output.stem}" for output in OUTPUTS.values()]:
        assert (pipeline / "results" / "benchmarks" / f"{job}.tsv").exists(), job


def jobs_running_beside(log_text, sweeps):
    """For each job of the given sweeps, the ids of the jobs that ran while it ran: from
    the order of the start ("rule fit:" ... "jobid: N") and end ("Finished jobid: N")
    entries of snakemake's log, so no clock resolution is involved."""
    running, beside = set(), {}
    for entry in re.split(r"^\[\w{3} \w{3} +\d+ [\d:]+ \d{4}\]\n", log_text, flags=re.M):
        finished = re.match(r"Finished jobid: (\d+)", entry)
        started = re.match(r"(?:local)?rule \w+:\n(?:.*\n)*?    jobid: (\d+)", entry)
        if finished:
            running.discard(finished.group(1))
        elif started:
            job = started.group(1)
            for other in running & set(beside):
                beside[other].add(job)
            sweep = re.search(r"wildcards: sweep=(\w+)", entry)
            if sweep and sweep.group(1) in sweeps:
                beside[job] = set(running)
            running.add(job)
    return beside


def test_timed_fits_run_alone(pipeline):
    """The fit jobs of a ``timed`` sweep hold every core: no job runs beside them."""
    config = load_config_file(pipeline / "config" / "test.yaml")
    timed = {sweep for sweep, spec in config["sweeps"].items() if spec.get("timed")}
    assert timed == {"runtime_t", "runtime_d"}
    log = next(text for path in sorted((pipeline / ".snakemake" / "log").glob("*.log"))
               if "rule fit:" in (text := path.read_text()))
    beside = jobs_running_beside(log, timed)
    assert len(beside) == 2 and not any(beside.values()), beside


def test_results_table_is_tidy_and_sane(pipeline):
    results = pd.read_csv(pipeline / "results" / "results.csv")
    expected = {"sweep", "method", "d", "t", "n", "r", "k", "noise", "epsilon", "replicate",
                "subspace_distance", "relative_error", "success_rate", "median_test_mse",
                "seconds", "iteration_seconds", "one_pass_seconds", "iterations",
                "epsilon_spent", "code_version", "version_numpy"}
    assert expected <= set(results.columns)
    assert not results.duplicated(["sweep", "method", "d", "t", "n", "r", "k", "noise",
                                   "epsilon", "replicate"]).any()
    fitted = results[results["fitted"]]
    assert fitted["subspace_distance"].dropna().between(0, 1 + 1e-9).all()
    assert results["success_rate"].between(0, 1).all()
    assert (fitted["median_test_mse"] >= 0).all() and (fitted["seconds"] > 0).all()
    private = fitted[np.isfinite(fitted["epsilon"])]
    assert len(private) and (private["epsilon_spent"] <= private["epsilon"]).all()
    # The Oracle recovers exactly from n = r + k on (noiseless phase sweep).
    oracle = results[(results["sweep"] == "phase_transition") & (results["method"] == "oracle")]
    assert (oracle[oracle["n"] >= oracle["r"] + oracle["k"]]["success_rate"] == 1).all()
    n50 = pd.read_csv(pipeline / "paper_figures" / "table_n50.csv")
    assert {"r", "k", "n50_amht_lrs", "n50_known_subspace", "ratio_to_r_plus_k"} <= set(n50.columns)


def test_second_run_has_nothing_to_do(pipeline):
    assert "Nothing to be done" in run(pipeline, "-n").stdout


def test_edits_rerun_only_what_they_affect(pipeline, tmp_path):
    workdir = copy_run(pipeline, tmp_path)
    assert "Nothing to be done" in run(workdir, "-n").stdout
    # a method added to one sweep: that method's jobs, the tables and the figures
    config = workdir / "config" / "test.yaml"
    text = config.read_text()
    config.write_text(text.replace("methods: [amht_lrs, low_rank_only]\n",
                                   "methods: [amht_lrs, low_rank_only, oracle]\n", 1))
    fits = {job for job in planned_jobs(run(workdir, "-n").stdout) if "/fits/" in job}
    assert fits == {"results/fits/convergence/oracle/batch~0.json"}
    # a value appended to one grid: the last job of each of that sweep's methods
    config.write_text(text.replace("t: [20, 40, 80]", "t: [20, 40, 80, 160]"))
    fits = {job for job in planned_jobs(run(workdir, "-n").stdout) if "/fits/" in job}
    assert fits == {"results/fits/runtime_t/amht_lrs/batch~0.json"}
    config.write_text(text)
    # the presentation code: figures and tables, not the fits or the aggregate
    with open(workdir / "src" / "lowrank_sparse" / "plots.py", "a") as handle:
        handle.write("\n# an edit\n")
    planned = planned_jobs(run(workdir, "-n").stdout)
    assert planned == {f"paper_figures/{name}" for name in OUTPUT_FILES}
    # the fitting code: every fit
    with open(workdir / "src" / "lowrank_sparse" / "local.py", "a") as handle:
        handle.write("\n# an edit\n")
    planned = planned_jobs(run(workdir, "-n").stdout)
    assert {str(path.relative_to(workdir)) for path in
            (workdir / "results" / "fits").rglob("*.json")} <= planned


def test_missing_intermediates_are_rebuilt_bit_for_bit(pipeline, tmp_path):
    """A plain run rebuilds a deleted fit record and results table, and only those; one
    fit job of every method rerun in a fresh process gives the same tables, bit for bit
    (the tables are functions of the fit records, so one job per method covers every
    fitting code path without rerunning the whole grid)."""
    workdir = copy_run(pipeline, tmp_path)
    fits = (workdir / "results" / "fits")
    one_per_method = {path.parent.name: path for path in sorted(fits.rglob("batch~0.json"))}
    assert len(one_per_method) >= 9
    deleted = {str(path.relative_to(workdir)) for path in one_per_method.values()}
    for path in one_per_method.values():
        path.unlink()
    (workdir / "results" / "results.csv").unlink()
    planned = planned_jobs(run(workdir, "-n").stdout)
    assert deleted | {"results/results.csv"} <= planned
    assert {job for job in planned if "/fits/" in job} == deleted
    tables = ["results/results.csv", "results/traces.csv"] + [
        f"paper_figures/{name}" for name in OUTPUT_FILES if name.endswith(".csv")]
    result = run(workdir, *tables, check=False)  # the figures are not redrawn: too slow
    assert result.returncode == 0, result.stderr[-3000:]
    for rel in tables:
        pd.testing.assert_frame_equal(without_timing(pipeline / rel),
                                      without_timing(workdir / rel), check_exact=True)
    assert "Nothing to be done" in run(workdir, "-n", *tables).stdout


def test_a_truncated_fit_record_is_named_and_nothing_is_written(pipeline, tmp_path):
    workdir = copy_run(pipeline, tmp_path)
    fit = workdir / "results" / "fits" / "convergence" / "amht_lrs" / "batch~0.json"
    fit.write_text(fit.read_text()[:500])
    result = run(workdir, check=False)
    assert result.returncode != 0
    message = "results/fits/convergence/amht_lrs/batch~0.json: not a complete JSON file"
    assert message in result.stderr
    assert message in (workdir / "results" / "logs" / "aggregate.log").read_text()
    assert not list((workdir / "results").glob("*.csv"))
    assert not list((workdir / "results").glob(".*"))  # no temporary files left


def test_a_truncated_results_table_is_named_and_nothing_is_drawn(pipeline, tmp_path):
    """One figure and one table (every output reads the table through the same check,
    ``_common.read_tables``; each damage it names: tests/test_results.py)."""
    workdir = copy_run(pipeline, tmp_path)
    some = [output for output in OUTPUTS.values() if output.kind == "figure"][:1] + [
        output for output in OUTPUTS.values() if output.kind == "table"][:1]
    targets = [f"paper_figures/{output.stem}.{output.extensions[0]}" for output in some]
    table = workdir / "results" / "results.csv"
    lines = table.read_text().splitlines(keepends=True)
    for damaged, message in [
            # cut in a row
            ("".join(lines[:3]) + lines[3][:len(lines[3]) // 2],
             r"ValueError: results/results\.csv, line 4: no value for 'fitted': the table is "
             r"truncated or damaged"),
            # cut at the end of a row: the output names the sweep that lacks rows
            ("".join(lines[:3]),
             r"ValueError: results/results\.csv: sweep '\w+', method '\w+' has \d+ rows; "
             r"the config plans \d+")]:
        table.write_text(damaged)
        result = run(workdir, "--keep-going", *targets, check=False)
        assert result.returncode != 0
        for output in some:
            log = (workdir / "results" / "logs" / "figures" / f"{output.stem}.log").read_text()
            assert re.search(message, log), log[-2000:]
            assert not list(workdir.glob(f"paper_figures/{output.stem}.*"))  # nothing drawn


@pytest.mark.parametrize("original,replacement,named", [  # (every value: test_config.py)
    ("n: [2, 4, 8]", 'n: ["abc", 4, 8]', "sweeps.phase_transition.grid.n: 'abc' is a string"),
    ("  total_samples:", "  runtime_d:\n    grid: {d: [8]}\n    methods: [amht_lrs]\n"
     "  total_samples:", "test.yaml, line 42: duplicated key 'runtime_d' (first at line 17)"),
])
def test_bad_config_fails_at_start_naming_the_problem(tmp_path, original, replacement, named):
    workdir = checkout(tmp_path)
    path = workdir / "config" / "test.yaml"
    config = path.read_text()
    assert original in config
    path.write_text(config.replace(original, replacement, 1))
    result = run(workdir, "-n", check=False)
    assert result.returncode != 0
    assert named in result.stderr + result.stdout


def test_yaml_errors_in_the_default_config_give_the_line(tmp_path):
    workdir = checkout(tmp_path)
    path = workdir / "config" / "config.yaml"
    path.write_text(path.read_text().replace("n_test: 100", "n_test: [100", 1))
    result = subprocess.run(SNAKEMAKE + ["-n"], cwd=workdir, capture_output=True, text=True)
    assert result.returncode != 0
    assert ("config/config.yaml, line 5, column 1: YAML syntax error: while parsing a flow "
            "sequence (from line 4, column 9)") in result.stdout + result.stderr


def test_lint_is_clean_and_report_builds(pipeline):
    lint = subprocess.run(SNAKEMAKE + ["--lint"], cwd=pipeline, capture_output=True, text=True)
    assert "Congratulations, your workflow is in a good condition" in lint.stdout + lint.stderr
    run(pipeline, "--report", "report.zip")
    assert (pipeline / "report.zip").stat().st_size > 10_000


def test_notebooks_run_on_the_test_results(pipeline):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebooks = sorted((pipeline / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 3
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(pipeline / "notebooks")}}
                                ).execute()
        if path.name.startswith("02"):  # two (r, k) settings: no line, and it says so
            printed = "".join(output.get("text", "") for cell in notebook.cells
                              for output in cell.get("outputs", []))
            assert "no line fitted: a line needs at least 3 points" in printed
            assert "R^2" not in printed


def test_slurm_profile_plans_the_grid(pipeline):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    result = subprocess.run(SNAKEMAKE + ["--profile", "profiles/slurm", "--configfile",
                                         "config/test.yaml", "-n", "-R", "aggregate"],
                            cwd=pipeline, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "aggregate" in result.stdout
