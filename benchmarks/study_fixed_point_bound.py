"""How often a cheap sufficient test would find HTP's fixed point without the top k and
the line search (a lead for issue 15, not used by the library).

At a user's warm refit on support S, with residual e, g = X_i^T e and P the projection
off range(A_i): P e = e, so by Cauchy-Schwarz ||P X_T g_T||^2 >= ||g_T||^4 / ||e||^2 and
HTP's step eta = ||g_T||^2 / ||P X_T g_T||^2 <= ||e||^2 / ||g_T||^2 <= ||e||^2 / max_j g_j^2
=: etabar. S is then a fixed point if min_S |b| - etabar max_S |g| > etabar max_{j off S}
|g| (a strict margin, so no ties). This counts the users for which that holds after one
warm local step at a fit's final U.

    python benchmarks/study_fixed_point_bound.py [--t 10000]
"""

from __future__ import annotations

import argparse

import numpy as np

import lowrank_sparse as ls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t", type=int, default=10_000)
    args = parser.parse_args()
    d, r, k = 100, 5, 5
    for noise in (0.0, 0.1):
        for n in (20, 40):
            problem = ls.make_problem(d, args.t, r, k, rng=0)
            data = ls.sample_data(problem, n, noise=noise, n_test=0, rng=1)
            fit = ls.amht_lrs(data.X, data.y, r, k, robust=ls.Trimmed(), n_iter=60)
            support = np.sort(np.argsort(fit.B == 0, axis=1, kind="stable")[:, :k], axis=1)
            local = ls.local.local_step(data.X, data.y, fit.U, k, support_init=support,
                                        n_starts=0)
            e2 = np.sum(local.residual_vectors ** 2, axis=1)
            g = np.abs(local.residual_correlations)
            g_max = g.max(axis=1)
            g_on_S = np.take_along_axis(g, local.support, axis=1).max(axis=1)
            b_min = np.abs(local.values).min(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                eta_bar = np.where(g_max > 0, e2 / g_max ** 2, 0.0)
            holds = b_min - eta_bar * g_on_S > eta_bar * g_max * (1 + 1e-6)
            print(f"t={args.t:,}, d={d}, r=k={k}, n={n}, noise {noise}: the bound finds the "
                  f"fixed point for {holds.mean():.1%} of users")


if __name__ == "__main__":
    main()
