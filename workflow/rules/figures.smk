CAPTIONS = {
    "phase_transition": "Per-user success rate against samples per user n for several (r, k); "
                        "dashed: KnownSubspace (true U), dotted line: n = r + k (Oracle threshold).",
    "thresholds": "n_50 (half the users succeed) against r + k, with a least-squares line.",
    "total_samples": "Subspace distance against total samples t n / (d r) for several d.",
    "convergence": "Subspace distance to U* against outer iteration (noise levels).",
    "privacy": "Subspace distance and median test MSE against epsilon for several t: "
               "DP-AMHT-LRS and private low-rank only; horizontal lines: non-private fits.",
    "runtime": "AMHT-LRS time per outer iteration against t and d (log-log, fitted slopes) "
               "next to the time of one pass over X, as in benchmarks/bench_scale.py.",
}


rule figure:
    """One figure of paper_figures/ from the tidy results table."""
    input:
        results=rules.aggregate.output.results,
        traces=rules.aggregate.output.traces,
    output:
        pdf="paper_figures/fig_{name}.pdf",
        png=report("paper_figures/fig_{name}.png", caption="../report/figure.rst",
                   category="Figures", labels={"figure": "{name}"}),
    log:
        f"{RESULTS}/logs/figures/fig_{{name}}.log",
    params:
        caption=lambda wildcards: CAPTIONS[wildcards.name],
        code_version=PLOT_VERSION,
    wildcard_constraints:
        name="|".join(FIGURES),
    conda:
        "../envs/lowrank_sparse.yaml"
    script:
        "../scripts/figure.py"


rule table:
    """One table of paper_figures/ (CSV and Markdown) from the tidy results table."""
    input:
        results=rules.aggregate.output.results,
    output:
        csv="paper_figures/table_{name}.csv",
        md="paper_figures/table_{name}.md",
    log:
        f"{RESULTS}/logs/figures/table_{{name}}.log",
    params:
        code_version=PLOT_VERSION,
    wildcard_constraints:
        name="|".join(TABLES),
    conda:
        "../envs/lowrank_sparse.yaml"
    script:
        "../scripts/table.py"
