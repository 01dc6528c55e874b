"""A full AMHT-LRS fit with a million users on one machine (noiseless).

    python benchmarks/bench_million.py [--t 1000000] [--k 5] [--robust adaptive]
    python benchmarks/bench_million.py --k 2 --epsilon 4     # DP-AMHT-LRS, delta 1e-6

d=100, n=20, r=5: X is t * n * d * 8 bytes = 16 GB in float64 at t = 1e6. Prints the
time to draw the data, the fit time, iterations, subspace distance and peak memory.
With k=5, n=20 is below the local step's sample complexity (the true U lets it fit
~9% of users), so the U step must drop mis-fitted users: the default ``Adaptive`` rule
does, as does ``--robust trimmed``; ``--robust huber`` (the former default) stalls.
"""

import argparse
import resource
import time

import lowrank_sparse as ls
from lowrank_sparse import metrics

RULES = {"adaptive": ls.Adaptive(), "huber": ls.Huber(), "trimmed": ls.Trimmed()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--r", type=int, default=5)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--robust", choices=sorted(RULES), default="adaptive",
                        help="U-step rule (adaptive: the library default)")
    parser.add_argument("--epsilon", type=float, default=None,
                        help="fit DP-AMHT-LRS at this epsilon (delta 1e-6) instead")
    args = parser.parse_args()
    start = time.perf_counter()
    problem = ls.make_problem(args.d, args.t, args.r, args.k, rng=0)
    data = ls.sample_data(problem, args.n, n_test=0, rng=1)
    print(f"data: X {data.X.nbytes / 2**30:.1f} GiB drawn in {time.perf_counter() - start:.0f} s",
          flush=True)

    def progress(it, U):
        print(f"iteration {it + 1}: distance {metrics.subspace_distance(problem.U, U):.2e} "
              f"at {time.perf_counter() - fit_start:.0f} s", flush=True)

    fit_start = time.perf_counter()
    if args.epsilon is None:
        fit = ls.amht_lrs(data.X, data.y, args.r, args.k, robust=RULES[args.robust],
                          callback=progress)
    else:
        fit = ls.dp_amht_lrs(data.X, data.y, args.r, args.k, args.epsilon, 1e-6, rng=2)
    seconds = time.perf_counter() - fit_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"fit: {seconds:.0f} s, {fit.n_iter} iterations "
          f"({seconds / fit.n_iter:.1f} s each incl. final local step), "
          f"distance {metrics.subspace_distance(problem.U, fit.U):.2e}, users recovered "
          f"{metrics.success_rate(problem.theta, fit.theta):.3f}, peak RSS {peak:.1f} GiB")
    if args.epsilon is not None:
        report = fit.extra["privacy"]
        print(f"privacy: epsilon spent {report.epsilon_spent:.4g} of {report.epsilon_target}, "
              f"delta {report.delta}, noise multiplier {report.noise_multiplier:.3g}")


if __name__ == "__main__":
    main()
