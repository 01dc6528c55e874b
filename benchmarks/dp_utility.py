"""Utility of DP-AMHT-LRS against epsilon (the table of issue 11's notes).

d=50, t=2000, n=32, r=k=2, noise 0.1, 5 seeds: mean subspace distance and median test
MSE of DP-AMHT-LRS for epsilon 0.5 ... 8 (delta 1e-5), and of the non-private AMHT-LRS.

    python benchmarks/dp_utility.py
"""

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import lowrank_sparse as ls
from lowrank_sparse import metrics

EPSILONS = [0.5, 1.0, 2.0, 4.0, 8.0]


def main(seeds=5):
    rows = []
    for seed in range(seeds):
        problem = ls.make_problem(50, 2000, 2, 2, rng=np.random.default_rng([seed, 0]))
        data = ls.sample_data(problem, 32, noise=0.1, n_test=100,
                              rng=np.random.default_rng([seed, 1]))
        fits = {"AMHT-LRS (non-private)": ls.AMHTLRS(2, 2)}
        fits.update({f"DP-AMHT-LRS eps={eps:g}": ls.DPAMHTLRS(2, 2, eps, 1e-5, rng=[seed, 9])
                     for eps in EPSILONS})
        for name, model in fits.items():
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                model.fit(data.X, data.y)
            rows.append({"method": name, "seed": seed,
                         "subspace_distance": metrics.subspace_distance(problem.U, model.U_),
                         "median_test_mse": float(np.median(metrics.per_user_test_mse(
                             model.theta_, data.X_test, data.y_test))),
                         "noise_dominated": bool(getattr(getattr(model, "privacy_", None),
                                                         "noise_dominated", False)),
                         "seconds": time.perf_counter() - start})
            print(rows[-1], flush=True)
    table = (pd.DataFrame(rows).groupby("method", sort=False)
             .agg(subspace_distance=("subspace_distance", "mean"),
                  median_test_mse=("median_test_mse", "mean"),
                  noise_dominated=("noise_dominated", "sum"), seconds=("seconds", "mean")))
    public = table.loc["AMHT-LRS (non-private)", "subspace_distance"]
    table["distance / non-private"] = table["subspace_distance"] / public
    out = Path(__file__).parent / "results" / "dp_utility.md"
    out.write_text(table.to_markdown(floatfmt=".4g") + "\n")
    print(table.to_string())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
