"""A full AMHT-LRS fit with a million users on one machine (noiseless).

    python benchmarks/bench_million.py                      # t=1e6, d=100, n=40, r=k=5, float32
    python benchmarks/bench_million.py --t 100000           # the same at a tenth of the size
    python benchmarks/bench_million.py --dtype float64 --n 20   # 29.8 GiB of X at n=40
    python benchmarks/bench_million.py --k 2 --n 20 --epsilon 4   # DP-AMHT-LRS

X is t * n * d numbers: 14.9 GiB at t=1e6, n=40, d=100 in float32 (29.8 GiB in float64,
more than this 24 GiB machine has). n=40 is enough for the local step to fit nearly
every user at k=5 (at n=20 even the true U lets it fit only ~9% of users, so the U step
must drop mis-fitted users: the default ``Adaptive`` rule does, as does ``--robust
trimmed``; ``--robust huber``, the former default, stalls there). Prints the
time to draw the data, the subspace distance after every outer iteration as it runs,
then the fit time, users recovered (relative error of theta_i below 1e-3), the
distance and the peak resident memory of the process; the library's progress (each
phase before the first iteration, then each outer iteration: wall time, share of users
restarted, change of U) is logged at INFO to stderr as it runs. DP-AMHT-LRS uses
delta = 1 / (10 t) unless --delta is given (delta must be well below 1 / t: a
mechanism that published one whole user's data at random would otherwise satisfy it).
"""

import argparse
import logging
import resource
import time

import lowrank_sparse as ls
from lowrank_sparse import metrics

RULES = {"adaptive": ls.Adaptive(), "huber": ls.Huber(), "trimmed": ls.Trimmed()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--r", type=int, default=5)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="storage of X (arithmetic is float64 either way)")
    parser.add_argument("--robust", choices=sorted(RULES), default="adaptive",
                        help="U-step rule (adaptive: the library default)")
    parser.add_argument("--epsilon", type=float, default=None,
                        help="fit DP-AMHT-LRS at this epsilon instead")
    parser.add_argument("--delta", type=float, default=None,
                        help="DP delta (default 1 / (10 t))")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s",
                        datefmt="%H:%M:%S")
    start = time.perf_counter()
    print(f"drawing X: t={args.t:,}, n={args.n}, d={args.d}, {args.dtype} ...", flush=True)
    problem = ls.make_problem(args.d, args.t, args.r, args.k, rng=0)
    data = ls.sample_data(problem, args.n, n_test=0, rng=1, dtype=args.dtype)
    X, y = data.X, data.y
    del data
    print(f"data: X {X.nbytes / 2**30:.1f} GiB drawn in {time.perf_counter() - start:.0f} s",
          flush=True)

    def progress(it, U):
        print(f"iteration {it + 1}: distance {metrics.subspace_distance(problem.U, U):.2e} "
              f"at {time.perf_counter() - fit_start:.0f} s", flush=True)

    fit_start = time.perf_counter()
    if args.epsilon is None:
        fit = ls.amht_lrs(X, y, args.r, args.k, robust=RULES[args.robust], callback=progress)
    else:
        delta = args.delta if args.delta is not None else 1 / (10 * args.t)
        fit = ls.dp_amht_lrs(X, y, args.r, args.k, args.epsilon, delta, rng=2)
    seconds = time.perf_counter() - fit_start
    del X, y  # room for the (t, d) metrics below
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"fit: {seconds:.0f} s, {fit.n_iter} iterations "
          f"({seconds / fit.n_iter:.1f} s each incl. final local step), "
          f"distance {metrics.subspace_distance(problem.U, fit.U):.2e}, users recovered "
          f"{metrics.success_rate(problem.theta, fit.theta):.3f}, peak RSS {peak:.1f} GiB; "
          f"{time.perf_counter() - start:.0f} s in all with the data draw", flush=True)
    if args.epsilon is not None:
        report = fit.extra["privacy"]
        print(f"privacy: epsilon spent {report.epsilon_spent:.4g} of {report.epsilon_target}, "
              f"delta {report.delta:.1e}, noise multiplier {report.noise_multiplier:.3g}")


if __name__ == "__main__":
    main()
