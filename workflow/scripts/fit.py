"""Rule fit: one method on every replicate of one cell -> JSON rows and traces."""

import json
import sys
import time

import numpy as np

sys.path.insert(0, snakemake.scriptdir)
from _common import atomic_path, setup_logging  # noqa: E402

from lowrank_sparse._kernels import precompile  # noqa: E402
from lowrank_sparse.data import Data, Problem  # noqa: E402
from lowrank_sparse.experiment import cell_seed, fit_and_score, versions  # noqa: E402

log = setup_logging(snakemake)
# The first call of a numba kernel in a process loads it from numba's cache (~0.3 s):
# done here, so that it is not counted in the first replicate's fit time.
precompile()
method, cell = snakemake.wildcards.method, snakemake.params.cell
stored = np.load(snakemake.input.data)
rows, traces = [], []
for rep in range(int(stored["replicates"])):
    log.info("%s replicate %d of %s: fitting", method, rep, cell)
    problem = Problem(*(stored[f"{key}_{rep}"] for key in ("U", "W", "B")))
    data = Data(*(stored[f"{key}_{rep}"] for key in ("X", "y", "X_test", "y_test")))
    start = time.perf_counter()
    row, trace = fit_and_score(method, problem, data, cell,
                               privacy_rng=cell_seed(snakemake.params.root_seed, cell, rep, "privacy"),
                               success_tol=snakemake.params.success_tol, progress=log.info)
    rows.append({"replicate": rep, **row})
    traces.append(trace)
    log.info("%s replicate %d: distance %.3g, success %.3f, %.2f s", method, rep,
             row["subspace_distance"], row["success_rate"], time.perf_counter() - start)
result = {"method": method, "cell": cell, "rows": rows, "traces": traces,
          "versions": versions(), "code_version": snakemake.params.code_version}
with atomic_path(snakemake.output.fit) as tmp:
    with open(tmp, "w") as handle:
        json.dump(result, handle, indent=1, allow_nan=True)
