rule compile_kernels:
    """Compile the numba kernels once before the fits: jobs running side by side then
    load them from numba's cache (next to the library) instead of each compiling them."""
    output:
        f"{RESULTS}/kernels_compiled.txt",
    log:
        f"{RESULTS}/logs/compile_kernels.log",
    benchmark:
        f"{RESULTS}/benchmarks/compile_kernels.tsv"
    params:
        code_version=CODE_VERSION["fit"],
    # before any fit: the fits of most methods wait for it
    priority: 1_000_000
    threads: compile_threads
    conda:
        "../envs/lowrank_sparse.yaml"
    script:
        "../scripts/compile_kernels.py"


rule fit:
    """Fit one method on a batch of one sweep's cells (config: batch_size), every
    replicate, drawing each cell's data from its seeds: one JSON record of rows and traces."""
    input:
        kernels=kernels_for,
    output:
        fit=f"{RESULTS}/fits/{{sweep}}/{{method}}/batch~{{batch}}.json",
    log:
        f"{RESULTS}/logs/fit/{{sweep}}/{{method}}/batch~{{batch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fit/{{sweep}}/{{method}}/batch~{{batch}}.tsv"
    params:
        cells=lambda wildcards: list(batch_of(wildcards).cells),
        replicates=config["replicates"],
        root_seed=config["root_seed"],
        n_test=lambda wildcards: sweep_n_test(wildcards.sweep),
        # only the private methods use delta: changing it reruns only their fits
        delta=lambda wildcards: config["delta"] if METHODS[wildcards.method].private else None,
        success_tol=config["success_tol"],
        code_version=CODE_VERSION["fit"],
        compute_threads=1,
    wildcard_constraints:
        sweep="[A-Za-z0-9_]+",
        method="|".join(METHODS),
        batch="[0-9]+",
    # A timed sweep's job holds every core of the run, so that nothing runs beside it
    # and its wall times measure its own work; it computes in one thread like the
    # others, so that its times do not depend on --cores either.
    threads: fit_threads
    priority: fit_priority
    conda:
        "../envs/lowrank_sparse.yaml"
    script:
        "../scripts/fit.py"
