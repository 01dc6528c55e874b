"""Rule aggregate: every fit record, checked -> one tidy results table and one traces table."""

import sys

sys.path.insert(0, snakemake.scriptdir)
from _common import atomic_outputs, setup_logging  # noqa: E402

from lowrank_sparse.results import read_fit_record, tidy_results  # noqa: E402

log = setup_logging(snakemake)
params = snakemake.params
records = [read_fit_record(batch["path"], sweep=batch["sweep"], method=batch["method"],
                           cells=batch["cells"], replicates=params.replicates)
           for batch in params.batches]
results, traces = tidy_results(params.fits, records)
log.info("%d fit records: %d result rows, %d trace points", len(records), len(results),
         len(traces))
with atomic_outputs(snakemake.output.results, snakemake.output.traces) as (res, tra):
    results.to_csv(res, index=False, float_format="%.10g")
    traces.to_csv(tra, index=False, float_format="%.10g")
