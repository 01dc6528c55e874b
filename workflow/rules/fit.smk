rule compile_kernels:
    """Compile the numba kernels once before the fits: jobs running side by side then
    load them from numba's cache (next to the library) instead of each compiling them."""
    output:
        f"{RESULTS}/kernels_compiled.txt",
    log:
        f"{RESULTS}/logs/compile_kernels.log",
    params:
        code_version=CODE_VERSION,
    conda:
        "../envs/lowrank_sparse.yaml"
    script:
        "../scripts/compile_kernels.py"


rule fit:
    """Fit one method on every replicate of one cell; one JSON of rows and traces."""
    input:
        data=f"{RESULTS}/data/{DATA_SPACE.wildcard_pattern}.npz",
        kernels=rules.compile_kernels.output[0],
    output:
        fit=f"{RESULTS}/fits/{{method}}/{DATA_SPACE.wildcard_pattern}_eps~{{epsilon}}.json",
    log:
        f"{RESULTS}/logs/fit/{{method}}/{DATA_SPACE.wildcard_pattern}_eps~{{epsilon}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fit/{{method}}/{DATA_SPACE.wildcard_pattern}_eps~{{epsilon}}.tsv"
    params:
        cell=lambda wildcards: {**cell_of(wildcards),
                                "epsilon": float(wildcards.epsilon), "delta": config["delta"]},
        root_seed=config["root_seed"],
        success_tol=config["success_tol"],
        code_version=CODE_VERSION,
    threads: 1
    conda:
        "../envs/lowrank_sparse.yaml"
    script:
        "../scripts/fit.py"
