"""profiles/slurm: its choice of status command (always run), and config/test.yaml
through it on a one-node SLURM cluster brought up on this machine (cluster/local_slurm.py)
against a local run of the same config.

The cluster run is opt-in, as it takes longer than CI allows (see README, "On a cluster"):
    LOWRANK_SPARSE_SLURM_TEST=1 python -m pytest -q tests/test_slurm.py
It is skipped, with the reason, where SLURM cannot be brought up (no root, no apt-get, ...).
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lowrank_sparse.claims import TIMED_CLAIMS
from lowrank_sparse.experiment import TIMING_COLUMNS
from lowrank_sparse.figures import OUTPUTS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_pipeline import ROOT, SNAKEMAKE, checkout  # noqa: E402

sys.path.insert(0, str(ROOT / "cluster"))
import local_slurm  # noqa: E402

PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
OPT_IN = "LOWRANK_SPARSE_SLURM_TEST"
on_slurm = pytest.mark.skipif(os.environ.get(OPT_IN) != "1",
                              reason=f"the run on SLURM is opt-in: set {OPT_IN}=1 (57 min on the shared 2-core machine)")
# fig_runtime plots measured times; every other figure is drawn from columns that are
# bit-reproducible, so it must come out byte-identical (PNG and PDF).
TIMED_FIGURES = {"runtime"}
RUN_TIMEOUT = 90 * 60  # seconds: a run that lost its jobs fails the test instead of hanging it


def fake_scontrol(directory, monkeypatch, **settings):
    """Put first on PATH an `scontrol` that shows ``settings`` as `show config` would."""
    script = directory / "scontrol"
    lines = "\n".join(f"{name:<24}= {value}" for name, value in settings.items())
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\nConfiguration data as of now\n{lines}\nEOF\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")


def parse_profile():
    from snakemake.profiles import ProfileConfigFileParser
    with open(PROFILE) as stream:
        return ProfileConfigFileParser().parse(stream)


@pytest.mark.parametrize("accounting,min_job_age,expected", [
    ("accounting_storage/slurmdbd", "2 sec", "sacct"),
    ("accounting_storage/none", "300 sec", "squeue"),
    ("accounting_storage/none", "86400 sec", "squeue"),
])
def test_profile_reads_job_states_the_cluster_can_give(tmp_path, monkeypatch, accounting,
                                                       min_job_age, expected):
    fake_scontrol(tmp_path, monkeypatch, AccountingStorageType=accounting, MinJobAge=min_job_age)
    assert parse_profile()["slurm-status-command"] == expected


def test_profile_leaves_the_choice_to_the_plugin_without_slurm(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol at all
    assert "slurm-status-command" not in parse_profile()


def test_profile_stops_at_start_where_job_states_would_be_lost(tmp_path, monkeypatch):
    """No accounting and a MinJobAge under the plugin's longest wait: a run would lose
    finished jobs and wait forever, so `snakemake --profile` fails at once, saying why."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    fake_scontrol(tmp_path, monkeypatch, AccountingStorageType="accounting_storage/none",
                  MinJobAge="60 sec")
    with pytest.raises(Exception, match="MinJobAge=60 sec"):
        parse_profile()
    (tmp_path / "run").mkdir()
    workdir = checkout(tmp_path / "run")
    start = time.perf_counter()
    result = snakemake(workdir, "--profile", "profiles/slurm", "-n", timeout=300)
    assert result.returncode != 0
    assert "MinJobAge >= 300 s" in result.stderr + result.stdout
    assert time.perf_counter() - start < 120


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    one_node = local_slurm.LocalCluster(tmp_path_factory.mktemp("slurm"))
    try:
        one_node.start()
    except local_slurm.Unavailable as error:
        pytest.skip(f"cannot bring up SLURM here: {error}")
    yield one_node
    one_node.stop()


def edit_profile(workdir, partition, account):
    """The two edits README asks for."""
    path = workdir / "profiles" / "slurm" / "config.yaml"
    text = path.read_text()
    text, n_partition = re.subn(r'slurm_partition: "normal"', f'slurm_partition: "{partition}"', text)
    text, n_account = re.subn(r'slurm_account: "myaccount"', f'slurm_account: "{account}"', text)
    assert n_partition == n_account == 1, "profiles/slurm no longer has the two lines README names"
    path.write_text(text)


def snakemake(workdir, *args, env=None, timeout=RUN_TIMEOUT):
    """Snakemake on config/test.yaml in ``workdir``; a run still going after ``timeout``
    raises TimeoutExpired, so a run that lost its jobs fails the test instead of hanging."""
    return subprocess.run(SNAKEMAKE + ["--configfile", "config/test.yaml", *args], cwd=workdir,
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """config/test.yaml run locally and through profiles/slurm side by side (the run on
    SLURM mostly waits for status queries): (local workdir, SLURM workdir, SLURM log)."""
    local = checkout(tmp_path_factory.mktemp("local"))
    on_slurm = checkout(tmp_path_factory.mktemp("on_slurm"))
    edit_profile(on_slurm, local_slurm.PARTITION, "lowrank")
    with open(local / "run.log", "w") as log:
        local_process = subprocess.Popen(SNAKEMAKE + ["--configfile", "config/test.yaml",
                                                      "--cores", "2"],
                                         cwd=local, stdout=log, stderr=subprocess.STDOUT)
    try:
        start = time.perf_counter()
        result = snakemake(on_slurm, "--profile", "profiles/slurm", env=cluster.env)
        print(f"\nconfig/test.yaml on SLURM: {time.perf_counter() - start:.0f} s")
        assert result.returncode == 0, result.stderr[-5000:]
        assert local_process.wait(timeout=RUN_TIMEOUT) == 0, (local / "run.log").read_text()[-3000:]
    finally:
        if local_process.poll() is None:
            local_process.kill()
    return local, on_slurm, result.stdout + result.stderr


@on_slurm
def test_every_job_ran_as_a_slurm_job(runs):
    _, _, log = runs
    submitted = len(re.findall(r"has been submitted with SLURM jobid \d+", log))
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", log)
    assert done, log[-3000:]
    total = int(done[-1][1])
    assert submitted == total - 1, f"{submitted} SLURM jobs for {total} jobs (all but `all`)"


@on_slurm
def test_tables_equal_the_local_run(runs):
    local, on_slurm, _ = runs
    for rel in ["results/results.csv", "results/traces.csv",
                *(f"paper_figures/{output.stem}.csv" for output in OUTPUTS.values()
                  if output.kind == "table")]:
        expected, got = (_reproducible(run / rel) for run in (local, on_slurm))
        pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=rel)


def _reproducible(path):
    """A table without wall times: timing columns and the claims measured in wall time."""
    table = pd.read_csv(path).drop(columns=list(TIMING_COLUMNS), errors="ignore")
    if "claim" in table:
        table = table[~table["claim"].isin(TIMED_CLAIMS)].reset_index(drop=True)
    return table


@on_slurm
def test_figures_equal_the_local_run(runs):
    local, on_slurm, _ = runs
    produced = sorted(path.name for path in (on_slurm / "paper_figures").iterdir())
    assert produced == sorted(path.name for path in (local / "paper_figures").iterdir())
    for output in OUTPUTS.values():
        if output.kind != "figure":
            continue
        for ext in output.extensions:
            rel = f"paper_figures/{output.stem}.{ext}"
            data = (on_slurm / rel).read_bytes()
            assert data[:4] == {"png": b"\x89PNG", "pdf": b"%PDF"}[ext], rel
            if output.name not in TIMED_FIGURES:
                assert data == (local / rel).read_bytes(), f"{rel} differs from the local run's"
