# Regenerate every figure and table in paper_figures/:  snakemake --cores 8
# (profiles/default/ is picked up automatically; see README.md for single rules.)
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("8.10")

# The library is used from src/ of this checkout (installed or not).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from lowrank_sparse.config import check_config, load_config_file  # noqa: E402

# The full grid, unless --configfile names another (a merge would leak full-grid keys).
# Every config file is first read strictly: a duplicated key or a YAML error is reported
# with its line (snakemake's reader keeps the last of two equal keys; it rejects a YAML
# error in a --configfile before this runs, with the line only under --verbose).
DEFAULT_CONFIG = "config/config.yaml"
for path in workflow.configfiles or [DEFAULT_CONFIG]:
    load_config_file(path)
if not workflow.configfiles:

    configfile: DEFAULT_CONFIG


# The shape and the settings (schema), then every cell value and the sweeps the
# registered figures and tables read (lowrank_sparse.config), before anything runs.
validate(config, schema="workflow/schemas/config.schema.yaml")
check_config(config)


include: "workflow/rules/common.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"


rule all:
    """Every figure and table, and the intermediates they come from (so that a missing
    or stale fit record or tidy table is rebuilt)."""
    input:
        OUTPUT_FILES,
        FIT_FILES,
        rules.aggregate.output,
    default_target: True
