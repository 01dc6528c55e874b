"""Shared glue for the pipeline scripts: logging to the rule's log and atomic writes."""

import atexit
import gc
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

# Import the library from src/ of this checkout: the code whose hash is in the params.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

# A job's outputs are written and closed before it exits; the interpreter's last garbage
# collection then walks every object numba and pandas made (~0.5 s of CPU per job, a
# fifth of a short job's start-up): exempt them.
atexit.register(gc.freeze)


def setup_logging(snakemake, threads=None):
    """Send logging and uncaught errors (with traceback) to the rule's log file, and let
    the job compute in ``threads`` threads (default: the rule's threads)."""
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=log_path, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(message)s")
    # The library's progress lines (one per outer iteration of every fit) would swell
    # each job's log and add a write per iteration to timed fits: warnings only.
    logging.getLogger("lowrank_sparse").setLevel(logging.WARNING)
    sys.stderr = open(log_path, "a", buffering=1)

    def excepthook(kind, value, tb):
        logging.getLogger().error("failed", exc_info=(kind, value, tb))
        sys.__excepthook__(kind, value, tb)
        # the message (not the traceback) on the terminal too, next to snakemake's report
        print(f"{kind.__name__}: {value}", file=sys.__stderr__)

    sys.excepthook = excepthook
    # Threads per job as the rule declares (snakemake runs --cores jobs side by side):
    # BLAS through threadpoolctl, numba's kernels through NUMBA_NUM_THREADS (read when
    # numba is first imported) or, if a script imported numba before this, its setter.
    threads = max(1, int(threads if threads is not None else getattr(snakemake, "threads", 1)))
    if "numba" in sys.modules:  # imported already: the variable would come too late
        sys.modules["numba"].set_num_threads(threads)  # (and numba refuses a change)
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=threads)
    return logging.getLogger(snakemake.rule)


@contextmanager
def atomic_outputs(*paths):
    """Yield temporary paths next to ``paths``; move them all into place only when the
    block succeeds, so a failed job leaves no output, partial or from half its files."""
    temps = []
    try:
        for path in map(Path, paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                       suffix=path.suffix)
            os.close(fd)
            temps.append(tmp)
        yield temps
        umask = os.umask(0)
        os.umask(umask)
        for tmp, path in zip(temps, paths):
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual mode
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.remove(tmp)


def read_tables(snakemake, output):
    """The checked results table (and traces, if the registered ``output`` reads them):
    every row the config plans for the sweeps it reads, or a ValueError naming the file."""
    from lowrank_sparse.results import read_results, read_traces

    results = read_results(snakemake.input.results, snakemake.params.expected)
    traces = (read_traces(snakemake.input.traces, results, list(snakemake.params.expected))
              if output.traces else None)
    return results, traces
