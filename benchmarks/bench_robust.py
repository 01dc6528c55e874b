"""Does AMHT-LRS follow the per-user floor? Success against n for several d, with
t n = 60 d r users' samples, against KnownSubspace (the local step with the true U).

    python benchmarks/bench_robust.py                 # d = 25, 50; 2 seeds (minutes)
    python benchmarks/bench_robust.py --full          # d = 25 ... 400; 5 seeds (hours)
    python benchmarks/bench_robust.py --robust huber  # another U-step rule
    python benchmarks/bench_robust.py --cost          # time per iteration of each rule

Noiseless, r = k = 2, t = ceil(60 d r / n). For every (d, n, seed) one problem and one
dataset; AMHT-LRS with its defaults (or ``--robust``) and KnownSubspace (``local_step``
with the true U, greedy start) fit the same data. Writes ``robust_sweep.csv`` (one row
per fit: success fractions, subspace distance, iterations, seconds; ``amht_restart_all``
is the success of a final local step that restarts every user from greedy supports, the
upper bound of what the final step could recover) and ``robust_sweep.md`` (the table of
mean success fractions AMHT-LRS / KnownSubspace, and n_50 per d with the ratio) to
--out, and prints the Markdown.

``--cost`` instead times each rule inside the fit as ``bench_scale.py`` does (d=100,
n=20, r=k=5, t=1e5, started at distance 0.01 from U*, 8 iterations, tol=0; median
seconds per iteration, ``--repeat`` fits per rule in rotating order) and the rule's
own call on the fit's residuals.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

import lowrank_sparse as ls
from lowrank_sparse import metrics

RULES = {"default": None, "adaptive": ls.Adaptive(), "huber": ls.Huber(),
         "trimmed": ls.Trimmed()}  # None: amht_lrs's own default
FULL_D = (25, 50, 100, 200, 400)
FULL_N = (8, 9, 10, 11, 12, 13, 14, 16, 24)  # and n = 7 at d = 25, below its threshold


def fit_cell(d, n, seed, r, k, samples_per_unknown, robust):
    """One problem, one dataset; AMHT-LRS and KnownSubspace fitted on it."""
    t = math.ceil(samples_per_unknown * d * r / n)
    rng = np.random.default_rng([d, n, seed])
    problem = ls.make_problem(d, t, r, k, rng=rng)
    data = ls.sample_data(problem, n, n_test=0, rng=rng)
    kwargs = {} if RULES[robust] is None else {"robust": RULES[robust]}
    start = time.perf_counter()
    fit = ls.amht_lrs(data.X, data.y, r, k, **kwargs)
    seconds = time.perf_counter() - start
    known = ls.local_step(data.X, data.y, problem.U, k)
    restart_all = ls.local_step(data.X, data.y, fit.U, k,
                                support_init=_support(fit.B, k), restart_above=None)
    success = lambda U, W, B: metrics.success_rate(problem.theta, W @ U.T + B)  # noqa: E731
    return {"d": d, "n": n, "t": t, "seed": seed, "robust": robust,
            "amht": success(fit.U, fit.W, fit.B),
            "known_subspace": success(problem.U, known.W, known.sparse(d)),
            "amht_restart_all": success(fit.U, restart_all.W, restart_all.sparse(d)),
            "distance": metrics.subspace_distance(problem.U, fit.U),
            "iterations": fit.n_iter, "seconds": seconds}


def measure_cost(t, repeat):
    """Markdown: median seconds per outer iteration and per weights() call, per rule."""
    from lowrank_sparse import timing
    from bench_scale import near

    d, n, r, k = 100, 20, 5, 5
    problem = ls.make_problem(d, t, r, k, rng=0)
    data = ls.sample_data(problem, n, n_test=0, rng=1)
    init = near(problem.U, 0.01, np.random.default_rng(2))
    rules = {name: rule for name, rule in RULES.items() if rule is not None}
    per_iter = {name: [] for name in rules}
    for rep in range(repeat):
        names = list(rules)[rep % len(rules):] + list(rules)[:rep % len(rules)]
        for name in names:
            fit = ls.amht_lrs(data.X, data.y, r, k, n_iter=8, tol=0.0, init=init,
                              robust=rules[name])
            per_iter[name].append(timing.iteration_seconds(fit.history))
    residual = ls.local_step(data.X, data.y, fit.U, k, support_init=_support(fit.B, k)).residual
    lines = [f"t={t}, d={d}, n={n}, r=k={r}: {repeat} fits of 8 iterations per rule", "",
             "| rule | s / iteration (median) | weights() ms (median of 21) |",
             "|---|---:|---:|"]
    for name, rule in rules.items():
        calls = []
        for _ in range(21):
            start = time.perf_counter()
            rule.weights(residual, n - r - k, k / d)
            calls.append(time.perf_counter() - start)
        lines.append(f"| {name} | {np.median(per_iter[name]):.3f} | "
                     f"{1e3 * np.median(calls):.2f} |")
    return "\n".join(lines)


def _support(B, k):
    """(t, k) the columns of the k largest |B_ij| per user, the fitted supports."""
    return np.sort(np.argsort(-np.abs(B), axis=1, kind="stable")[:, :k], axis=1)


def summarize(table):
    """Markdown: success AMHT-LRS / KnownSubspace per (n, d), then n_50 per d."""
    mean = table.groupby(["n", "d"])[["amht", "known_subspace", "amht_restart_all"]].mean()
    ds, ns = sorted(table["d"].unique()), sorted(table["n"].unique())
    lines = ["| n | " + " | ".join(f"d={d}" for d in ds) + " |",
             "|---:|" + "---:|" * len(ds)]
    for n in ns:
        cells = [f"{mean.loc[(n, d), 'amht']:.2f} / {mean.loc[(n, d), 'known_subspace']:.2f}"
                 if (n, d) in mean.index else "" for d in ds]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "| d | n_50 AMHT-LRS | n_50 KnownSubspace | ratio | n_50 restart-all final |",
              "|---:|---:|---:|---:|---:|"]
    for d in ds:
        part = mean.xs(d, level="d")
        amht, known, both = (metrics.n_50(part.index, part[c])
                             for c in ("amht", "known_subspace", "amht_restart_all"))
        lines.append(f"| {d} | {amht:.2f} | {known:.2f} | {amht / known:.3f} | {both:.2f} |")
    median_distance = table.loc[table["amht"] >= 0.5, "distance"].max()
    lines += ["", f"largest subspace distance where AMHT-LRS recovers >= 50% of users: "
              f"{median_distance:.1e}; fits: {len(table)}, seeds per cell: "
              f"{table['seed'].nunique()}, rule: {table['robust'].iloc[0]}"]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help=f"d in {FULL_D}, n in {FULL_N}, 5 seeds")
    parser.add_argument("--d", type=int, nargs="+", default=[25, 50])
    parser.add_argument("--n", type=int, nargs="+", default=[7, 8, 9, 10, 11, 12, 16])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--samples-per-unknown", type=float, default=60.0,
                        help="t n / (d r)")
    parser.add_argument("--robust", choices=sorted(RULES), default="default")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--cost", action="store_true",
                        help="time each rule per iteration at d=100, n=20, r=k=5 instead")
    parser.add_argument("--t", type=int, default=100_000, help="users for --cost")
    parser.add_argument("--repeat", type=int, default=3, help="fits per rule for --cost")
    args = parser.parse_args()
    if args.cost:
        print(measure_cost(args.t, args.repeat))
        return
    import pandas as pd

    if args.full:
        cells = [(d, n) for d in FULL_D for n in ((7,) if d == 25 else ()) + FULL_N]
        seeds = 5
    else:
        cells, seeds = [(d, n) for d in args.d for n in args.n], args.seeds
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for d, n in cells:
        for seed in range(seeds):
            rows.append(fit_cell(d, n, seed, 2, 2, args.samples_per_unknown, args.robust))
            print(rows[-1], flush=True)
            pd.DataFrame(rows).to_csv(args.out / "robust_sweep.csv", index=False)
    text = summarize(pd.DataFrame(rows))
    (args.out / "robust_sweep.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
