"""Rule table: one table of paper_figures/ (CSV and Markdown)."""

import sys

import pandas as pd

sys.path.insert(0, snakemake.scriptdir)
from _common import atomic_path, setup_logging  # noqa: E402

from lowrank_sparse import tables  # noqa: E402

log = setup_logging(snakemake)
table = tables.TABLES[snakemake.wildcards.name](pd.read_csv(snakemake.input.results))
with atomic_path(snakemake.output.csv) as tmp:
    table.to_csv(tmp, index=False, float_format="%.6g")
with atomic_path(snakemake.output.md) as tmp:
    with open(tmp, "w") as handle:
        handle.write(table.to_markdown(index=False, floatfmt=".4g") + "\n")
log.info("%d rows", len(table))
