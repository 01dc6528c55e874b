# Regenerate every figure and table in paper_figures/:  snakemake --cores 8
# (profiles/default/ is picked up automatically; see README.md for single rules.)
from snakemake.utils import min_version, validate

min_version("8.10")


# The full grid, unless --configfile names another (a merge would leak full-grid keys).
if not config:

    configfile: "config/config.yaml"


validate(config, schema="workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        FIGURE_FILES,
        TABLE_FILES,
    default_target: True
