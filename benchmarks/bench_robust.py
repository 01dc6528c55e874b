"""Does AMHT-LRS follow the per-user floor? Success against n for several d, with
t n = 60 d r users' samples, against KnownSubspace (the local step with the true U).

    python benchmarks/bench_robust.py                 # d = 25, 50; 2 seeds (minutes)
    python benchmarks/bench_robust.py --full          # d = 25 ... 400; 5 seeds (hours)
    python benchmarks/bench_robust.py --robust huber  # another U-step rule
    python benchmarks/bench_robust.py --cost          # time per iteration of each rule
    python benchmarks/bench_robust.py --headline 4000 16000 --seeds 3   # d=50, n=8
    python benchmarks/bench_robust.py --regression --seeds 5 --repeat 5 # above the threshold
    python benchmarks/bench_robust.py --warmup-cost --repeat 5          # cost of the warm-up

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

RULES = ("default", "adaptive", "huber", "trimmed")  # default: amht_lrs's own


def rule(name):
    """The U-step rule called ``name``; None for amht_lrs's own default (looked up
    lazily, so ``--regression`` also runs against a package without some rules)."""
    return None if name == "default" else getattr(ls, name.capitalize())()


def fit_kwargs(name):
    return {} if name == "default" else {"robust": rule(name)}
FULL_D = (25, 50, 100, 200, 400)
FULL_N = (8, 9, 10, 11, 12, 13, 14, 16, 24)  # and n = 7 at d = 25, below its threshold


def fit_cell(d, n, seed, r, k, samples_per_unknown, robust, t=None):
    """One problem, one dataset; AMHT-LRS and KnownSubspace fitted on it. t users
    (default: t n = samples_per_unknown d r)."""
    rng = np.random.default_rng([d, n, seed] if t is None else [d, n, t, seed])
    t = t or math.ceil(samples_per_unknown * d * r / n)
    problem = ls.make_problem(d, t, r, k, rng=rng)
    data = ls.sample_data(problem, n, n_test=0, rng=rng)
    start = time.perf_counter()
    fit = ls.amht_lrs(data.X, data.y, r, k, **fit_kwargs(robust))
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
    names = [name for name in RULES if name != "default"]
    per_iter = {name: [] for name in names}
    for rep in range(repeat):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            fit = ls.amht_lrs(data.X, data.y, r, k, n_iter=8, tol=0.0, init=init,
                              robust=rule(name))
            per_iter[name].append(timing.iteration_seconds(fit.history))
    residual = ls.local_step(data.X, data.y, fit.U, k, support_init=_support(fit.B, k)).residual
    lines = [f"t={t}, d={d}, n={n}, r=k={r}: {repeat} fits of 8 iterations per rule", "",
             "| rule | s / iteration (median) | weights() ms (median of 21) |",
             "|---|---:|---:|"]
    for name in names:
        calls = []
        for _ in range(21):
            start = time.perf_counter()
            rule(name).weights(residual, n - r - k, k / d)
            calls.append(time.perf_counter() - start)
        lines.append(f"| {name} | {np.median(per_iter[name]):.3f} | "
                     f"{1e3 * np.median(calls):.2f} |")
    return "\n".join(lines)


def headline(ts, seeds, robust):
    """Rows of fit_cell at d=50, n=8, r=k=2 (KnownSubspace fits ~37% of users) for each
    t in ``ts``: where most users are mis-fitted whatever the number of users."""
    return [fit_cell(50, 8, seed, 2, 2, None, robust, t=t) for t in ts for seed in range(seeds)]


def regression(label, robust, seeds, repeat):
    """Rows above the threshold (d=50, n=32, r=k=2): accuracy at t=400, noiseless and with
    noise 0.1 (median over users of the test MSE, 100 test samples each), ``seeds`` seeds;
    fit time at t=20000, noiseless, ``repeat`` fits: wall and CPU seconds (the latter
    less sensitive to other load; run with NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1). ``label`` names the code measured
    (e.g. run once with PYTHONPATH pointing at main's package)."""
    import warnings

    rows = []
    settings = [("accuracy", 400, noise, seed) for noise in (0.0, 0.1) for seed in range(seeds)]
    settings += [("time", 20_000, 0.0, rep) for rep in range(repeat)]
    for kind, t, noise, seed in settings:
        d, n, r, k = 50, 32, 2, 2
        rng = np.random.default_rng([d, n, t, seed if kind == "accuracy" else 0])
        problem = ls.make_problem(d, t, r, k, rng=rng)
        data = ls.sample_data(problem, n, noise=noise, n_test=100 if kind == "accuracy" else 0,
                              rng=rng)
        start, cpu_start = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():  # noisy fits may stop at n_iter: recorded below
            warnings.simplefilter("ignore")
            fit = ls.amht_lrs(data.X, data.y, r, k, **fit_kwargs(robust))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        mse = (float(np.median(metrics.per_user_test_mse(fit.theta, data.X_test, data.y_test)))
               if kind == "accuracy" else float("nan"))
        rows.append({"code": label, "robust": robust, "kind": kind, "t": t, "noise": noise,
                     "seed": seed, "distance": metrics.subspace_distance(problem.U, fit.U),
                     "success": metrics.success_rate(problem.theta, fit.theta),
                     "median_test_mse": mse, "iterations": fit.n_iter, "seconds": seconds,
                     "cpu_seconds": cpu_seconds})
        print(rows[-1], flush=True)
    return rows


def warmup_cost(repeat):
    """Markdown: median CPU seconds of a fit at d=50, n=32, t=20000, r=k=2 (noiseless)
    for Adaptive and Huber, with and without the low-rank warm-up, interleaved in one
    process (``repeat`` rounds) so that other load affects all alike."""
    import warnings
    from lowrank_sparse import amht

    d, n, t = 50, 32, 20_000
    rng = np.random.default_rng([d, n, t, 0])
    problem = ls.make_problem(d, t, 2, 2, rng=rng)
    data = ls.sample_data(problem, n, n_test=0, rng=rng)
    variants = [(name, warm) for name in ("adaptive", "huber")
                for warm in (amht.LOWRANK_WARMUP_ITERATIONS, 0)]
    cpu = {variant: [] for variant in variants}
    iterations = {}
    default_warmup = amht.LOWRANK_WARMUP_ITERATIONS
    try:
        for _ in range(repeat):
            for name, warm in variants:
                amht.LOWRANK_WARMUP_ITERATIONS = warm
                start = time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fit = ls.amht_lrs(data.X, data.y, 2, 2, robust=rule(name))
                cpu[(name, warm)].append(time.process_time() - start)
                iterations[(name, warm)] = fit.n_iter
    finally:
        amht.LOWRANK_WARMUP_ITERATIONS = default_warmup
    lines = [f"d={d}, n={n}, t={t}, r=k=2, noiseless; {repeat} interleaved rounds", "",
             "| rule | warm-up iterations | CPU s (median) | iterations |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {warm} | {np.median(cpu[(name, warm)]):.2f} | "
              f"{iterations[(name, warm)]} |" for name, warm in variants]
    return "\n".join(lines)


def summarize_regression(table):
    """Markdown: per code, exact noiseless fits, median test MSE (median over seeds) with
    noise 0.1, and the median fit time at t=20000."""
    lines = ["| code | rule | noiseless t=400: distance <= 1e-8 | noise 0.1 t=400: "
             "median test MSE (median of seeds) | t=20000: fit s (median) | CPU s (median) | "
             "iterations |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for (code, robust), part in table.groupby(["code", "robust"], sort=False):
        acc = part[part["kind"] == "accuracy"]
        exact = acc[acc["noise"] == 0]
        noisy = acc[acc["noise"] > 0]
        timed = part[part["kind"] == "time"]
        lines.append(f"| {code} | {robust} | {(exact['distance'] <= 1e-8).sum()}/{len(exact)} | "
                     f"{noisy['median_test_mse'].median():.5f} | "
                     f"{timed['seconds'].median():.2f} | {timed['cpu_seconds'].median():.2f} | "
                     f"{int(timed['iterations'].median())} |")
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


def _replace_rows(path, new, keys):
    """The table at ``path`` with its rows matching ``new`` on ``keys`` replaced by
    ``new`` (so runs of other rules or codes accumulate); written back to ``path``."""
    import pandas as pd

    table = new
    if path.exists():
        old = pd.read_csv(path)
        stale = old[keys].apply(tuple, axis=1).isin(set(new[keys].apply(tuple, axis=1)))
        table = pd.concat([old[~stale], new], ignore_index=True)
    table.to_csv(path, index=False)
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help=f"d in {FULL_D}, n in {FULL_N}, 5 seeds")
    parser.add_argument("--d", type=int, nargs="+", default=[25, 50])
    parser.add_argument("--n", type=int, nargs="+", default=[7, 8, 9, 10, 11, 12, 16])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--samples-per-unknown", type=float, default=60.0,
                        help="t n / (d r)")
    parser.add_argument("--robust", choices=RULES, default="default")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--cost", action="store_true",
                        help="time each rule per iteration at d=100, n=20, r=k=5 instead")
    parser.add_argument("--t", type=int, default=100_000, help="users for --cost")
    parser.add_argument("--repeat", type=int, default=3,
                        help="fits per rule for --cost, timed fits for --regression")
    parser.add_argument("--headline", type=int, nargs="*", metavar="T",
                        help="d=50, n=8 with these t instead (default 4000 16000)")
    parser.add_argument("--regression", action="store_true",
                        help="accuracy and fit time above the threshold instead")
    parser.add_argument("--label", default="branch",
                        help="names the code measured by --regression (rows of another "
                             "label in robust_regression.csv are kept)")
    parser.add_argument("--warmup-cost", action="store_true",
                        help="CPU time with and without the low-rank warm-up instead")
    args = parser.parse_args()
    if args.warmup_cost:
        text = warmup_cost(args.repeat)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "robust_warmup_cost.md").write_text(text + "\n")
        print(text)
        return
    if args.cost:
        print(measure_cost(args.t, args.repeat))
        return
    import pandas as pd

    args.out.mkdir(parents=True, exist_ok=True)
    if args.regression:
        new = pd.DataFrame(regression(args.label, args.robust, args.seeds, args.repeat))
        table = _replace_rows(args.out / "robust_regression.csv", new, ["code", "robust"])
        text = summarize_regression(table)
        (args.out / "robust_regression.md").write_text(text + "\n")
        print(text)
        return
    if args.headline is not None:
        new = pd.DataFrame(headline(args.headline or [4000, 16000], args.seeds, args.robust))
        table = _replace_rows(args.out / "robust_headline.csv", new, ["robust", "t"])
        text = table.to_markdown(index=False, floatfmt=".3g")
        (args.out / "robust_headline.md").write_text(text + "\n")
        print(text)
        return

    if args.full:
        cells = [(d, n) for d in FULL_D for n in ((7,) if d == 25 else ()) + FULL_N]
        seeds = 5
    else:
        cells, seeds = [(d, n) for d in args.d for n in args.n], args.seeds
    rows = []
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
