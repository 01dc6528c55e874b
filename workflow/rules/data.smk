rule simulate:
    """Draw the problems and datasets of every replicate of one cell (regenerable from
    the seeds, so they are temporary)."""
    output:
        data=temp(f"{RESULTS}/data/{DATA_SPACE.wildcard_pattern}.npz"),
    log:
        f"{RESULTS}/logs/simulate/{DATA_SPACE.wildcard_pattern}.log",
    params:
        cell=cell_of,
        replicates=config["replicates"],
        root_seed=config["root_seed"],
        n_test=config["n_test"],
        code_version=CODE_VERSION,
    conda:
        "../envs/lowrank_sparse.yaml"
    script:
        "../scripts/simulate.py"
