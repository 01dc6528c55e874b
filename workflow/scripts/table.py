"""Rule table: one registered table of paper_figures/ (CSV and Markdown)."""

import sys

sys.path.insert(0, snakemake.scriptdir)
from _common import atomic_outputs, read_tables, setup_logging  # noqa: E402

from lowrank_sparse.figures import by_kind  # noqa: E402

log = setup_logging(snakemake)
output = by_kind("table")[snakemake.wildcards.name]
table = output.make(*read_tables(snakemake, output))
with atomic_outputs(snakemake.output.csv, snakemake.output.md) as (csv, md):
    table.to_csv(csv, index=False, float_format="%.6g")
    with open(md, "w") as handle:
        handle.write(table.to_markdown(index=False, floatfmt=".4g") + "\n")
log.info("%d rows", len(table))
