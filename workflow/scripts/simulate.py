"""Rule simulate: the problems and datasets of every replicate of one cell."""

import sys

import numpy as np

sys.path.insert(0, snakemake.scriptdir)
from _common import atomic_path, setup_logging  # noqa: E402

from lowrank_sparse.experiment import simulate  # noqa: E402

log = setup_logging(snakemake)
cell, reps = snakemake.params.cell, snakemake.params.replicates
arrays = {}
for rep in range(reps):
    problem, data = simulate(cell, rep, snakemake.params.root_seed, snakemake.params.n_test)
    for name, value in {**vars(problem), **vars(data)}.items():
        arrays[f"{name}_{rep}"] = value
    log.info("replicate %d/%d of %s drawn", rep + 1, reps, cell)
with atomic_path(snakemake.output.data) as tmp:
    with open(tmp, "wb") as handle:
        np.savez(handle, replicates=reps, **arrays)
