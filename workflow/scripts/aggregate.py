"""Rule aggregate: every fit JSON -> one tidy results table and one traces table."""

import json
import sys

sys.path.insert(0, snakemake.scriptdir)
from _common import atomic_path, setup_logging  # noqa: E402

from lowrank_sparse.experiment import tidy_results  # noqa: E402

log = setup_logging(snakemake)
fits = {path: json.load(open(path)) for path in snakemake.input.fits}
results, traces = tidy_results(snakemake.params.fits, snakemake.params.fit_paths, fits)
log.info("%d result rows, %d trace points", len(results), len(traces))
for frame, path in ((results, snakemake.output.results), (traces, snakemake.output.traces)):
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")
