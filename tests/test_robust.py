"""The robust U-step weights: planted clusters of residuals and a regime where most users
are mis-fitted."""

import numpy as np
import pytest

import lowrank_sparse as ls
from lowrank_sparse import metrics


def test_trimmed_keeps_the_well_fitted_cluster_and_drops_the_rest():
    rng = np.random.default_rng(0)
    t, dof = 20_000, 8
    well = rng.random(t) < 0.1
    residual = np.where(well, 1e-4 * rng.chisquare(dof, t), 1.0 + rng.exponential(size=t))
    omega = ls.Trimmed(fraction=0.05).weights(residual, dof)
    assert set(np.unique(omega)) <= {0.0, 1.0}
    assert np.all(omega[~well] == 0)
    assert omega[well].mean() >= 0.99


def test_trimmed_keeps_nearly_everyone_when_everyone_is_well_fitted():
    rng = np.random.default_rng(1)
    residual = 0.01 * rng.chisquare(5, 50_000)
    omega = ls.Trimmed().weights(residual, 5)
    assert 0.99 <= omega.mean() < 1.0


def test_trimmed_keeps_everyone_without_residual_degrees_of_freedom():
    assert np.all(ls.Trimmed().weights(np.array([0.0, 1e-30, 5.0]), 0) == 1)


def test_huber_bounds_influence_at_c_times_the_median():
    residual = np.array([1.0, 1.0, 1.0, 36.0])  # norms 1, 1, 1, 6; cut = 3 * median = 3
    np.testing.assert_allclose(ls.Huber(3.0).weights(residual, 4), [1, 1, 1, 0.5])


@pytest.mark.parametrize("make,message", [
    (lambda: ls.Huber(-1.0), r"Huber c must be a finite number > 0; got -1.0"),
    (lambda: ls.Trimmed(fraction=1.5), r"Trimmed fraction must be in \(0, 1\); got 1.5"),
    (lambda: ls.Trimmed(keep=0), r"Trimmed keep must be in \(0, 1\); got 0"),
])
def test_bad_rules(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_trimmed_recovers_u_where_most_users_are_misfitted_and_huber_stalls():
    # d=40, r=2, k=3, n=10: even with the true U the local step fits only ~21% of users,
    # so the median residual is a mis-fitted user's and Huber's bound does not
    # separate them.
    problem = ls.make_problem(40, 5000, 2, 3, rng=0)
    data = ls.sample_data(problem, 10, n_test=0, rng=1)
    known = ls.KnownSubspace(problem.U, 3).fit(data.X, data.y)
    assert metrics.success_rate(problem.theta, known.theta_) <= 0.3
    huber = ls.amht_lrs(data.X, data.y, 2, 3, robust=ls.Huber(), n_iter=60)
    trimmed = ls.amht_lrs(data.X, data.y, 2, 3, robust=ls.Trimmed(), n_iter=150)
    assert metrics.subspace_distance(problem.U, huber.U) >= 1e-2
    assert metrics.subspace_distance(problem.U, trimmed.U) <= 1e-8


def test_iteration_seconds_is_the_median_after_the_first_iteration():
    from types import SimpleNamespace
    from lowrank_sparse import timing
    history = SimpleNamespace(seconds=np.array([5.0, 6.0, 8.0, 9.0]))  # 5, 1, 2, 1
    assert timing.iteration_seconds(history) == 1.0
    assert timing.iteration_seconds(SimpleNamespace(seconds=np.array([2.5]))) == 2.5
    assert np.isnan(timing.iteration_seconds(SimpleNamespace(seconds=np.array([]))))
