"""Rule figure: one registered figure of paper_figures/ (PDF and PNG)."""

import sys

sys.path.insert(0, snakemake.scriptdir)
from _common import atomic_outputs, read_tables, setup_logging  # noqa: E402

from lowrank_sparse.figures import by_kind  # noqa: E402

log = setup_logging(snakemake)
output = by_kind("figure")[snakemake.wildcards.name]
fig = output.make(*read_tables(snakemake, output))
with atomic_outputs(snakemake.output.pdf, snakemake.output.png) as (pdf, png):
    fig.savefig(pdf, format="pdf", dpi=150, bbox_inches="tight", metadata={"CreationDate": None})
    fig.savefig(png, format="png", dpi=150, bbox_inches="tight", metadata={"Software": None})
log.info("wrote %s", snakemake.output.png)
