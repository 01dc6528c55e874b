"""Rule fit: one method on a batch of cells, every replicate -> one JSON record."""

import json
import sys
import time

sys.path.insert(0, snakemake.scriptdir)
from _common import atomic_outputs, setup_logging  # noqa: E402

from lowrank_sparse.local import precompile  # noqa: E402
from lowrank_sparse.experiment import METHODS, fit_cell, versions  # noqa: E402

log = setup_logging(snakemake, threads=snakemake.params.compute_threads)
method, params = snakemake.wildcards.method, snakemake.params
# The first call of a numba kernel in a process loads it from numba's cache (~0.3 s):
# done here, so that it is not counted in the first fit's time.
if METHODS[method].compiled:
    precompile()
fits = []
# Drawing, fitting and scoring (wall and CPU): the job's time minus its start-up.
work_seconds = work_cpu_seconds = 0.0
for cell in params.cells:
    log.info("%s on %s: fitting %d replicates", method, cell, params.replicates)
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fit_cell(method, cell, replicates=params.replicates, root_seed=params.root_seed,
                      n_test=params.n_test, delta=params.delta,
                      success_tol=params.success_tol, progress=log.info)
    work_seconds += time.perf_counter() - start
    work_cpu_seconds += time.process_time() - start_cpu
    fits.append({"cell": cell, **result})
    log.info("%s on %s: distances %s, success %s, %.2f s", method, cell,
             [row["subspace_distance"] for row in result["rows"]],
             [row["success_rate"] for row in result["rows"]], time.perf_counter() - start)
record = {"sweep": snakemake.wildcards.sweep, "method": method,
          "batch": int(snakemake.wildcards.batch), "fits": fits, "work_seconds": work_seconds,
          "work_cpu_seconds": work_cpu_seconds,
          # all CPU time of this process so far, start-up included (every thread; the
          # benchmark file's cpu_time samples the process now and then and can miss some)
          "process_cpu_seconds": time.process_time(),
          "versions": versions(), "code_version": params.code_version}
with atomic_outputs(snakemake.output.fit) as (tmp,), open(tmp, "w") as handle:
    json.dump(record, handle, indent=1, allow_nan=True)
