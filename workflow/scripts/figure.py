"""Rule figure: one figure of paper_figures/ (PDF and PNG)."""

import sys

import pandas as pd

sys.path.insert(0, snakemake.scriptdir)
from _common import atomic_path, setup_logging  # noqa: E402

from lowrank_sparse import plots  # noqa: E402

log = setup_logging(snakemake)
results = pd.read_csv(snakemake.input.results)
traces = pd.read_csv(snakemake.input.traces)
fig = plots.FIGURES[snakemake.wildcards.name](results, traces)
for key in ("pdf", "png"):
    with atomic_path(snakemake.output[key]) as tmp:
        fig.savefig(tmp, format=key, dpi=150, bbox_inches="tight",
                    metadata={"CreationDate": None} if key == "pdf" else {"Software": None})
log.info("wrote %s", snakemake.output.png)
