rule aggregate:
    """One tidy table of all fits (a row per cell, replicate and method) and the traces."""
    input:
        fits=FIT_FILES,
    output:
        results=f"{RESULTS}/results.csv",
        traces=f"{RESULTS}/traces.csv",
    log:
        f"{RESULTS}/logs/aggregate.log",
    params:
        fits=FITS.to_dict("records"),
        fit_paths=[fit_path(row) for row in FITS.to_dict("records")],
    conda:
        "../envs/lowrank_sparse.yaml"
    script:
        "../scripts/aggregate.py"
