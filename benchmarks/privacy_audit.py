"""Empirical privacy audit of DP-AMHT-LRS: canary distinguishing tests.

An auditor who knows the dataset D tries to tell, from what is released, whether a
canary user z was added (D' = D + z). Any test's false-positive and false-negative rates
bound epsilon from below (``lowrank_sparse.privacy.epsilon_lower_bound``, with 95%
Clopper-Pearson confidence); for a correct mechanism the bound must stay below the
budget. The same audit run on a deliberately broken mechanism (no clipping, an extreme
canary) must exceed the budget: that is what shows the audit has power.

Two tests:
- **one release**: one Gaussian sum of clipped contributions calibrated to spend the
  whole budget alone; the canary's contribution has the clip's norm along a known
  direction v, and the test thresholds <noisy sum - sum over D, v>;
- **end-to-end fit**: the whole private fit (d=10, t=60, n=10, r=k=1, 5 iterations,
  11 releases); the canary's responses follow a direction v orthogonal to the true
  subspace with a large gain, and the test thresholds ||U^T v|| of the released U.
Half of each side's trials choose the threshold, the other half measure its rates; the
two sides draw their noise from separate streams. The "ceiling" column is the largest
bound the trials can certify (a perfect test): a bound below epsilon is a sanity check
that the mechanism is not grossly broken, not evidence that the accounting is tight.

    python benchmarks/privacy_audit.py                     # epsilon 1 and 4, 2000 trials
    python benchmarks/privacy_audit.py --trials 400        # quicker, weaker bounds
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import lowrank_sparse as ls
from lowrank_sparse import privacy
from lowrank_sparse.dp_amht import _private_fit, _settings

DELTA = 1e-5


class UnclippedMechanism(privacy.GaussianSumMechanism):
    """A deliberately broken mechanism: noise scaled to the clip, contributions not
    clipped (so one user's influence is unbounded)."""

    def release(self, name, iteration, contributions, clip):
        contributions = privacy.as_contributions(contributions)
        presum = contributions.weighted_sum(np.ones(contributions.n_users))
        self.releases.append(privacy.Release(name, iteration, float(clip),
                                             self.noise_multiplier))
        return presum + self.rng.normal(0.0, self.noise_multiplier * clip, presum.shape)


def _threshold_test(without, with_canary):
    """Choose on the first halves the threshold (and side) with the best estimated
    epsilon, measure its rates on the second halves: (FP, negatives, FN, positives)."""
    half0, half1 = len(without) // 2, len(with_canary) // 2
    pick0, eval0 = without[:half0], without[half0:]
    pick1, eval1 = with_canary[:half1], with_canary[half1:]
    best, best_score = (np.inf, 1), -np.inf
    for tau in np.quantile(np.concatenate([pick0, pick1]), np.linspace(0.01, 0.99, 99)):
        for sign in (1, -1):  # canary predicted when sign * T > sign * tau
            fp, fn = np.sum(sign * pick0 > sign * tau), np.sum(sign * pick1 <= sign * tau)
            score = privacy.epsilon_lower_bound(fp, half0, fn, half1, DELTA)
            if score > best_score:
                best, best_score = (tau, sign), score
    tau, sign = best
    return (int(np.sum(sign * eval0 > sign * tau)), len(eval0),
            int(np.sum(sign * eval1 <= sign * tau)), len(eval1))


def audit_one_release(epsilon, trials, broken=False, seed=0):
    """Statistics of the one-release test: arrays (without canary, with canary)."""
    rng = np.random.default_rng([seed, 1])
    t, m, clip = 100, 20, 1.0
    rows = rng.standard_normal((t, m)) * 0.3
    v = np.zeros(m)
    v[0] = 1.0
    canary = (1000.0 if broken else 1.0) * clip * v  # at the clip, or far beyond it
    s = privacy.calibrate_noise_multiplier(epsilon, DELTA, 1)
    kind = UnclippedMechanism if broken else privacy.GaussianSumMechanism
    base = privacy.GaussianSumMechanism(0.0).release("sum", 0, rows, clip)  # noiseless
    stats = []
    for dataset in (rows, np.vstack([rows, canary])):
        mechanism = kind(s, np.random.default_rng([seed, 2, len(dataset)]))
        stats.append(np.array([(mechanism.release("sum", 0, dataset, clip) - base) @ v
                               for _ in range(trials)]))
    return stats


def audit_fit(epsilon, trials, broken=False, seed=0):
    """Statistics of the end-to-end test: ||U^T v|| of the released U, (without, with)."""
    rng = np.random.default_rng([seed, 3])
    d, t, n = 10, 60, 10
    problem = ls.make_problem(d, t, 1, 1, rng=rng)
    data = ls.sample_data(problem, n, noise=0.1, n_test=0, rng=rng)
    v = rng.standard_normal(d)
    v -= problem.U @ (problem.U.T @ v)
    v /= np.linalg.norm(v)
    X_z = rng.standard_normal((1, n, d))
    y_z = (1e3 if broken else 10.0) * (X_z @ v)  # far outside the clips either way
    X_with, y_with = np.concatenate([data.X, X_z]), np.concatenate([data.y, y_z])
    settings = _settings(data.X, 1, 1, epsilon, DELTA, n_iter=5)
    kind = UnclippedMechanism if broken else privacy.GaussianSumMechanism
    stats = []
    for X, y in ((data.X, data.y), (X_with, y_with)):
        values = []
        for trial in range(trials):
            mechanism = kind(settings.noise_multiplier,
                             np.random.default_rng([seed, 4, len(X), trial]))  # per side
            run, _ = _private_fit(X, y, settings, mechanism)
            values.append(float(np.linalg.norm(run.U.T @ v)))
        stats.append(np.array(values))
    return stats


def audit(epsilons, trials, seed=0):
    rows = []
    for test, runner in (("one release", audit_one_release), ("end-to-end fit", audit_fit)):
        for broken in (False, True):
            for epsilon in epsilons:
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    without, with_canary = runner(epsilon, trials, broken=broken, seed=seed)
                fp, negatives, fn, positives = _threshold_test(without, with_canary)
                lower = privacy.epsilon_lower_bound(fp, negatives, fn, positives, DELTA)
                interval = "[{:.3g}, {:.3g}]".format
                rows.append({
                    "test": test,
                    "mechanism": ("broken: no clipping, extreme canary" if broken
                                  else "DP-AMHT-LRS"),
                    "epsilon": epsilon, "trials per side": trials,
                    "FPR (95% CP interval)": interval(*privacy.clopper_pearson(fp, negatives)),
                    "FNR (95% CP interval)": interval(*privacy.clopper_pearson(fn, positives)),
                    "epsilon lower bound (95%)": lower,
                    # The largest bound these trials can certify (a perfect test).
                    "ceiling": privacy.epsilon_lower_bound(0, negatives, 0, positives, DELTA),
                    "lower bound <= epsilon": lower <= epsilon,
                    "seconds": time.perf_counter() - start})
                print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--trials", type=int, default=2000, help="runs per side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "privacy_audit"))
    args = parser.parse_args()
    table = audit(args.epsilons, args.trials, args.seed)
    table.to_csv(f"{args.out}.csv", index=False)
    Path(f"{args.out}.md").write_text(
        table.drop(columns="seconds").to_markdown(index=False, floatfmt=".3g") + "\n")
    print(table.to_string())


if __name__ == "__main__":
    main()
