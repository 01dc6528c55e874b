"""The U step at d=500, r=10: matrix-free preconditioned CG against the exact dense solve
of the (d r) x (d r) normal equations, per iteration and over a whole fit.

    python benchmarks/bench_ustep.py [--t 4000] [--n 40]
"""

import argparse
import time

import numpy as np

import lowrank_sparse as ls
from lowrank_sparse import metrics
from lowrank_sparse.global_step import normal_rhs, solve_cg, solve_direct
from lowrank_sparse.local import local_step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t", type=int, default=4000)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--k", type=int, default=2)
    args = parser.parse_args()
    d, r, k = 500, 10, args.k
    problem = ls.make_problem(d, args.t, r, k, rng=0)
    data = ls.sample_data(problem, args.n, n_test=0, rng=1)
    X, y = data.X, data.y
    # One U step from a perturbed subspace, with the users' local fits at that subspace.
    U0 = np.linalg.qr(problem.U + 0.05 * np.random.default_rng(2).standard_normal((d, r)))[0]
    fit = local_step(X, y, U0, k)
    Z = y - np.einsum("tnd,td->tn", X, fit.sparse(d))
    omega = np.ones(args.t)
    start = time.perf_counter()
    U_cg, its, _ = solve_cg(X, fit.W, omega, U0, rhs=normal_rhs(X, Z, fit.W, omega),
                            tol=1e-12)
    t_cg = time.perf_counter() - start
    start = time.perf_counter()
    U_direct = solve_direct(X, Z, fit.W, omega, chunk_size=args.t)
    t_direct = time.perf_counter() - start
    print(f"one U step (t={args.t}, n={args.n}, d={d}, r={r}): CG {t_cg:.2f} s ({its} "
          f"iterations, to 1e-12), dense {t_direct:.2f} s; max |difference| "
          f"{np.abs(U_cg - U_direct).max():.1e}")
    for solver in ("cg", "direct"):
        start = time.perf_counter()
        res = ls.amht_lrs(X, y, r, k, solver=solver)
        seconds = time.perf_counter() - start
        print(f"fit with {solver}: {seconds:.1f} s, {res.n_iter} iterations "
              f"({seconds / res.n_iter:.2f} s each), distance "
              f"{metrics.subspace_distance(problem.U, res.U):.1e}")


if __name__ == "__main__":
    main()
