rule aggregate:
    """One tidy table of all fits (a row per sweep, cell, replicate and method) and the
    traces, after checking every fit record against the plan."""
    input:
        fits=FIT_FILES,
    output:
        results=f"{RESULTS}/results.csv",
        traces=f"{RESULTS}/traces.csv",
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    params:
        batches=[{"path": batch_path(batch), "sweep": batch.sweep, "method": batch.method,
                  "cells": list(batch.cells)} for batch in BATCHES.values()],
        fits=FITS,
        replicates=config["replicates"],
        code_version=CODE_VERSION["aggregate"],
    conda:
        "../envs/lowrank_sparse.yaml"
    script:
        "../scripts/aggregate.py"
