"""Where the local step's compiled kernel spends its time, function by function, from a
sampling profile (Linux ``perf``, Debian's package linux-perf; this VM has no hardware
counters, so the software clock ``cpu-clock``).

    perf record -e cpu-clock -o /tmp/kernels.data python benchmarks/profile_kernels.py
    python benchmarks/profile_kernels.py --report /tmp/kernels.data

    python benchmarks/profile_kernels.py --cached     # X_i in cache: the arithmetic alone

perf cannot name code that numba compiled at run time: this script writes
``/tmp/perf-<pid>.map`` (perf's map of JIT code: start, size, name), with the address of
every function compiled into the local step's kernel, so samples land on ``_refit``,
``_cholesky``, ``NRT_incref`` ... The addresses are only known for code compiled in this
process: the script compiles into a new, empty ``NUMBA_CACHE_DIR`` (~30 s). Helpers that
numba inlines (``inline="always"``) count as their caller, ``_fit_tasks``. The setting of
bench_passes.py per user, in the steady state (the true U, each user's true support):
t = 1e5, d=100, n=20, r=k=5, on numba's threads (``NUMBA_NUM_THREADS=1`` for a profile of
one core).

A share of samples is not a saving: removing all the reference counting that the profile
put at 14% of the kernel's samples (NRT_incref / NRT_decref; borrowed views of the work
arrays, 2026-11-29) changed the kernel's time by -5% to +2% in runs of 31 to 201
alternating pairs, +1-2% in the longest (``benchmarks/results/lanes.md``). Measure a
change by timing it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time


def _short_name(symbol):
    """A numba symbol's function name: _ZN14lowrank_sparse8_kernels6_refitB3v..."""
    match = re.search(r"_kernels\d+(_\w+?)B\d", symbol)
    return match.group(1) if match else symbol[:60]


def write_perf_map(dispatcher):
    """/tmp/perf-<pid>.map for every function linked into ``dispatcher``'s first
    compiled signature; returns how many."""
    library = dispatcher.overloads[dispatcher.signatures[0]].library
    engine = library._codegen._engine
    entries = sorted((engine.get_function_address(fn.name), fn.name)
                     for fn in library._final_module.functions if not fn.is_declaration)
    entries = [(address, name) for address, name in entries if address]
    if not entries:
        raise RuntimeError("no function addresses: was the kernel loaded from numba's "
                           "cache? (run with an empty NUMBA_CACHE_DIR)")
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as out:
        for (address, name), (following, _) in zip(entries, entries[1:] + [(0, None)]):
            size = following - address if following else 4096
            out.write(f"{address:x} {size:x} {_short_name(name)}\n")
    return len(entries)


def report(data):
    """The kernel's functions' shares of the samples in ``data`` (perf's output file)."""
    text = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", "sym"],
                          capture_output=True, text=True, check=True).stdout
    from numba.core.registry import CPUDispatcher

    from lowrank_sparse import _kernels

    kernel_names = {name for name, value in vars(_kernels).items()
                    if isinstance(value, CPUDispatcher)} | {"NRT_incref", "NRT_decref"}
    shares = {}
    for line in text.splitlines():
        match = re.match(r"\s+([\d.]+)%\s+\[\.\]\s+(\S+)", line)
        if match and match.group(2) in kernel_names:
            shares[match.group(2)] = shares.get(match.group(2), 0.0) + float(match.group(1))
    total = sum(shares.values())
    print("| function | share of the kernel's samples |\n|---|---:|")
    for name, share in sorted(shares.items(), key=lambda item: -item[1]):
        if share >= 0.005 * total:
            print(f"| {name} | {share / total:.1%} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", metavar="PERF_DATA",
                        help="print the shares from a recorded profile and exit")
    parser.add_argument("--cached", action="store_true",
                        help="32 users over and over (X_i in cache), not all in order")
    parser.add_argument("--t", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return
    if os.environ.get("LOWRANK_SPARSE_PROFILE_CHILD") is None:
        # numba reads NUMBA_CACHE_DIR at import: run again in a process that sees a new one
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache, LOWRANK_SPARSE_PROFILE_CHILD="1")
            sys.exit(subprocess.run([sys.executable, *sys.argv], env=env).returncode)

    import numpy as np

    import lowrank_sparse as ls
    from lowrank_sparse import _kernels

    t, d, n, r, k = args.t, 100, 20, 5, 5
    problem = ls.make_problem(d, t, r, k, rng=0)
    data = ls.sample_data(problem, n, n_test=0, rng=1)
    support = np.sort(np.argsort(problem.B == 0, axis=1, kind="stable")[:, :k], axis=1)
    Ut = np.ascontiguousarray(problem.U.T)
    users = (np.tile(np.random.default_rng(0).choice(t, 32, replace=False), t // 32)
             if args.cached else np.arange(t))
    out = _kernels.LocalOutputs(np.empty((t, k), dtype=np.intp), np.empty((t, r + k)),
                                np.empty(t), np.empty((t, n)), np.empty((t, n)),
                                np.empty((t, d)))
    settings = _kernels.LocalSettings(k, 0, 20, True, False)
    _kernels.fit_users(data.X, data.y, Ut, users, support, settings, out)  # compiles
    print(f"{write_perf_map(_kernels._fit_tasks)} functions in /tmp/perf-{os.getpid()}.map")
    start = time.perf_counter()
    for _ in range(args.repeats):
        _kernels.fit_users(data.X, data.y, Ut, users, support, settings, out)
    seconds = (time.perf_counter() - start) / args.repeats
    print(f"the kernel over {users.size:,} users: {seconds * 1e9 / users.size:.0f} ns per user "
          f"(mean of {args.repeats})")


if __name__ == "__main__":
    main()
