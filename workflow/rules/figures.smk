# Figures and tables as registered in lowrank_sparse.figures (name, function, caption,
# sweeps read); each job first checks the tidy table holds every row it needs.


rule figure:
    """One figure of paper_figures/ from the tidy results table."""
    input:
        results=rules.aggregate.output.results,
        traces=lambda wildcards: (rules.aggregate.output.traces
                                  if FIGURES[wildcards.name].traces else []),
    output:
        pdf="paper_figures/fig_{name}.pdf",
        png=report("paper_figures/fig_{name}.png", caption="../report/figure.rst",
                   category="Figures", labels={"figure": "{name}"}),
    log:
        f"{RESULTS}/logs/figures/fig_{{name}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/fig_{{name}}.tsv"
    params:
        caption=lambda wildcards: FIGURES[wildcards.name].caption,
        expected=lambda wildcards: expected_for(FIGURES[wildcards.name]),
        code_version=CODE_VERSION["present"],
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
        traces=lambda wildcards: (rules.aggregate.output.traces
                                  if TABLES[wildcards.name].traces else []),
    output:
        csv="paper_figures/table_{name}.csv",
        md="paper_figures/table_{name}.md",
    log:
        f"{RESULTS}/logs/figures/table_{{name}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/table_{{name}}.tsv"
    params:
        expected=lambda wildcards: expected_for(TABLES[wildcards.name]),
        code_version=CODE_VERSION["present"],
    wildcard_constraints:
        name="|".join(TABLES),
    conda:
        "../envs/lowrank_sparse.yaml"
    script:
        "../scripts/table.py"
