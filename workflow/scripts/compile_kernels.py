"""Rule compile_kernels: compile the library's numba kernels into numba's on-disk cache
once, so that the fit jobs running side by side load them instead of each compiling."""

import sys
import time

sys.path.insert(0, snakemake.scriptdir)
from _common import atomic_outputs, setup_logging  # noqa: E402

from lowrank_sparse.local import precompile  # noqa: E402

log = setup_logging(snakemake, threads=1)  # it holds more cores only to keep others off
start = time.perf_counter()
precompile()
log.info("numba kernels compiled (or loaded from the cache) in %.1f s",
         time.perf_counter() - start)
with atomic_outputs(snakemake.output[0]) as (tmp,), open(tmp, "w") as fh:
    fh.write(f"{snakemake.params.code_version}\n")
