"""How often a cheap bound on HTP's step finds the fixed point without the top k and the
line search: the study behind ``_kernels._step_cap`` and ``_kernels._surely_fixed_point``.

At a user's warm refit on support S, with residual e, g = X_i^T e and P the projection
off range(A_i): P e = e, so by Cauchy-Schwarz ||P X_T g_T||^2 >= ||g_T||^4 / ||e||^2 and
HTP's step eta = ||g_T||^2 / ||P X_T g_T||^2 <= ||e||^2 / ||g_T||^2 <= ||e||^2 / lower =:
eta_bar for any lower <= ||g_T||^2. S is then a fixed point if min_S |b| - eta_bar max_S |g|
> eta_bar max_j |g| (a strict margin, so no ties). Two lower bounds on ||g_T||^2: max_j g_j^2
(the first lead), and the sum of the squares of the largest |g| in k disjoint blocks of the
d entries (what the library uses). This counts the users each settles after one warm local
step at a fit's final U, and the median ratio of eta_bar to the exact step.

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
    d, r, k, t = 100, 5, 5, args.t
    for noise in (0.0, 0.1):
        for n in (20, 40):
            problem = ls.make_problem(d, t, r, k, rng=0)
            data = ls.sample_data(problem, n, noise=noise, n_test=0, rng=1)
            fit = ls.amht_lrs(data.X, data.y, r, k, robust=ls.Trimmed(), n_iter=60)
            support = np.sort(np.argsort(fit.B == 0, axis=1, kind="stable")[:, :k], axis=1)
            local = ls.local.local_step(data.X, data.y, fit.U, k, support_init=support,
                                        n_starts=0)
            e2 = np.sum(local.residual_vectors ** 2, axis=1)
            g = local.residual_correlations
            g_abs = np.abs(g)
            g_max = g_abs.max(axis=1)
            g_on_S = np.take_along_axis(g_abs, local.support, axis=1).max(axis=1)
            b_min = np.abs(local.values).min(axis=1)
            # The exact step, as HTP's line search computes it.
            T = np.argsort(-g_abs, axis=1, kind="stable")[:, :k]
            gT = np.take_along_axis(g, T, axis=1)
            v = np.einsum("tnk,tk->tn", np.take_along_axis(data.X, T[:, None, :], axis=2), gT)
            Q = np.linalg.qr(data.X @ fit.U)[0]
            Pv = v - np.einsum("tnr,tr->tn", Q, np.einsum("tnr,tn->tr", Q, v))
            eta = np.sum(gT ** 2, axis=1) / np.sum(Pv ** 2, axis=1)
            lowers = {"max_j g_j^2": g_max ** 2,
                      "k block maxima": np.sum(np.maximum.reduceat(
                          g_abs, np.arange(k) * d // k, axis=1) ** 2, axis=1)}
            report = []
            for name, lower in lowers.items():
                with np.errstate(divide="ignore", invalid="ignore"):
                    eta_bar = e2 / lower
                holds = b_min - eta_bar * g_on_S > eta_bar * g_max * (1 + 1e-6)
                report.append(f"{name} {holds.mean():.1%} (eta_bar / eta median "
                              f"{np.nanmedian(eta_bar / eta):.1f})")
            print(f"t={t:,}, d={d}, r=k={k}, n={n}, noise {noise}: users settled by "
                  + ", by ".join(report))


if __name__ == "__main__":
    main()
