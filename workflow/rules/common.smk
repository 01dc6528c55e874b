# The plan (fits, jobs, rows every table must have) and helpers shared by the rule files.
from pathlib import Path

from snakemake.exceptions import WorkflowError

from lowrank_sparse.config import batch_sizes, expand_sweeps, plan_batches
from lowrank_sparse.experiment import METHODS, code_version, estimated_seconds
from lowrank_sparse.figures import OUTPUTS, by_kind
from lowrank_sparse.results import expected_rows

RESULTS = "results"
FITS = expand_sweeps(config)  # one dict per (sweep, cell, method), in the config's order
BATCHES = {(batch.sweep, batch.method, batch.index): batch
           for batch in plan_batches(FITS, batch_sizes(config))}
EXPECTED_ROWS = expected_rows(FITS, config["replicates"])
# Hash of the library code each stage runs: editing it reruns that stage and what follows.
LIBRARY = Path(workflow.basedir) / "src" / "lowrank_sparse"
CODE_VERSION = {stage: code_version(LIBRARY, stage=stage)
                for stage in ("fit", "aggregate", "present")}


def batch_path(batch):
    return f"{RESULTS}/fits/{batch.sweep}/{batch.method}/batch~{batch.index}.json"


def cores_of_run():
    """--cores; on a cluster, where every job has its own allocation and no --cores is
    set, 1."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def fit_threads(wildcards):
    """Cores a fit job holds: all of the run's for a sweep marked ``timed``, else 1."""
    return cores_of_run() if config["sweeps"][wildcards.sweep].get("timed", False) else 1


def compile_threads(wildcards):
    """Cores compile_kernels holds (it compiles in one): all of the run's but one, so that
    one fit of a method without kernels runs beside it and no more slow it down (every
    other fit waits for it)."""
    return max(1, cores_of_run() - 1)


def batch_of(wildcards):
    return BATCHES[(wildcards.sweep, wildcards.method, int(wildcards.batch))]


def sweep_n_test(sweep):
    # a sweep may hold out fewer samples (noiseless n_50 sweeps with t d in the 1e6)
    return config["sweeps"][sweep].get("n_test", config["n_test"])


def fit_priority(wildcards):
    """Longest jobs first (their estimated CPU time, in tenths of a second), so that the
    run does not end with one long job on one core while the others wait."""
    batch = batch_of(wildcards)
    return round(10 * estimated_seconds(batch.method, batch.cells, sweep_n_test(batch.sweep)))


def kernels_for(wildcards):
    """The compiled kernels, for the methods that run them; the others start at once."""
    return [rules.compile_kernels.output[0]] if METHODS[wildcards.method].compiled else []


FIT_FILES = [batch_path(batch) for batch in BATCHES.values()]
FIGURES, TABLES = by_kind("figure"), by_kind("table")
OUTPUT_FILES = [f"paper_figures/{output.stem}.{ext}"
                for output in OUTPUTS.values() for ext in output.extensions]


def expected_for(output):
    """Rows per method of the sweeps an output reads: what its job checks first."""
    return {sweep: EXPECTED_ROWS[sweep] for sweep in output.reads(EXPECTED_ROWS)}
