"""The Snakemake pipeline on config/test.yaml: every output, sane values, no rework,
bit-identical reruns, config validation, lint and report. Also executes the notebooks."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lowrank_sparse.experiment import TIMING_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
FIGURES = ["phase_transition", "thresholds", "total_samples", "convergence", "privacy", "runtime"]
TABLES = ["n50", "privacy", "methods"]

pytestmark = pytest.mark.slow


def checkout(tmp: Path) -> Path:
    """A copy of what the pipeline needs, as on a fresh clone."""
    for name in ("Snakefile", "config", "workflow", "profiles", "src", "notebooks"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp / name)
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


def test_every_figure_and_table_exists(pipeline):
    for name in FIGURES:
        for ext in ("pdf", "png"):
            path = pipeline / "paper_figures" / f"fig_{name}.{ext}"
            assert path.stat().st_size > 1000, path
    for name in TABLES:
        assert (pipeline / "paper_figures" / f"table_{name}.md").read_text().startswith("|")
        assert len(pd.read_csv(pipeline / "paper_figures" / f"table_{name}.csv")) > 0


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


def test_editing_the_library_reruns_the_fits(pipeline, tmp_path):
    workdir = checkout(tmp_path)
    shutil.copytree(pipeline / "results", workdir / "results")
    shutil.copytree(pipeline / ".snakemake", workdir / ".snakemake")
    shutil.copytree(pipeline / "paper_figures", workdir / "paper_figures")
    assert "Nothing to be done" in run(workdir, "-n").stdout
    with open(workdir / "src" / "lowrank_sparse" / "local.py", "a") as handle:
        handle.write("\n# an edit\n")
    dry = run(workdir, "-n").stdout
    assert "fit" in dry and "Nothing to be done" not in dry


def test_two_runs_give_identical_tables(pipeline, tmp_path):
    workdir = checkout(tmp_path)
    run(workdir)
    timing = list(TIMING_COLUMNS)
    for rel in ["results/results.csv", "paper_figures/table_n50.csv",
                "paper_figures/table_privacy.csv", "paper_figures/table_methods.csv"]:
        a = pd.read_csv(pipeline / rel)
        b = pd.read_csv(workdir / rel)
        a, b = a.drop(columns=timing, errors="ignore"), b.drop(columns=timing, errors="ignore")
        pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.parametrize("original,replacement,named", [
    ("replicates: 2", "replicates: 0", "replicates"),
    ("root_seed: 7", "root_seed: 7\nunknown_key: 1", "unknown_key"),
    ("n_test: 20", "n_test: twenty", "twenty"),
    ("methods: [amht_lrs, known_subspace, oracle, per_user_least_squares]",
     "methods: [amht_lrs, magic]", "magic"),
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


def test_slurm_profile_plans_the_grid(pipeline):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    result = subprocess.run(SNAKEMAKE + ["--profile", "profiles/slurm", "--configfile",
                                         "config/test.yaml", "-n", "-R", "aggregate"],
                            cwd=pipeline, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "aggregate" in result.stdout
