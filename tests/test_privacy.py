"""DP-AMHT-LRS: accounting, sensitivity, noise, limits and utility."""

import warnings

import dp_accounting
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import lowrank_sparse as ls
from lowrank_sparse import metrics, privacy
from lowrank_sparse.dp_amht import _user_gradients, _user_grams, _user_moments
from lowrank_sparse.local import local_step

from conftest import make_instance


@pytest.mark.parametrize("s,T", [(1.0, 1), (5.0, 21), (20.0, 41), (3.0, 7)])
def test_accounting_matches_gaussian_closed_form(s, T):
    spent = privacy.epsilon_spent([s] * T, 1e-5)
    exact = dp_accounting.get_epsilon_gaussian(s / np.sqrt(T), 1e-5)
    assert spent == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 10.0])
def test_calibration_hits_target_from_below(epsilon):
    T = 21
    s = privacy.calibrate_noise_multiplier(epsilon, 1e-5, T)
    spent = privacy.epsilon_spent([s] * T, 1e-5)
    assert spent <= epsilon
    assert spent >= epsilon * (1 - 1e-4)  # not wastefully noisy
    assert privacy.calibrate_noise_multiplier(np.inf, 1e-5, T) == 0.0


def test_fit_reports_what_it_spent():
    problem, data = make_instance(d=20, t=200, r=2, k=1, n=20, noise=0.1, seed=1)
    model = ls.DPAMHTLRS(2, 1, epsilon=1.0, delta=1e-5, n_iter=5, rng=0).fit(data.X, data.y)
    report = model.privacy_
    assert report.epsilon_target == 1.0 and report.delta == 1e-5
    assert report.epsilon_spent <= 1.0
    assert len(report.releases) == 1 + 2 * 5
    assert report.epsilon_spent == pytest.approx(privacy.epsilon_spent(
        [r.noise_multiplier for r in report.releases], 1e-5))
    assert "add or remove one user" in report.neighbouring_relation
    assert set(report.clip) == {"init", "grad", "gram"}
    assert np.all(np.isfinite(model.theta_))


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e150, max_value=1e150)


@settings(max_examples=60, deadline=None)
@given(V=hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 5)), elements=finite),
       bound=st.floats(1e-3, 1e3))
def test_clipping_bounds_every_contribution(V, bound):
    clipped, _ = privacy.clip_rows(V, bound)
    assert np.all(np.isfinite(clipped))
    assert np.all(np.linalg.norm(clipped, axis=1) <= bound)
    # Rows already inside the bound are untouched.
    inside = np.linalg.norm(V, axis=1) <= bound * (1 - 1e-9)
    np.testing.assert_array_equal(clipped[inside], V[inside])


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1e-3, 1e100), seed=st.integers(0, 2**16))
def test_one_user_moves_every_presum_by_at_most_its_clip(scale, seed):
    """Replace user 0's data by arbitrary (huge, adversarial) values: each pre-noise sum
    of every release changes by at most the clip bound the accountant assumes (add/
    remove: the sum without the user differs by at most C, so the sum with either
    version of the user differs from that by at most C each)."""
    rng = np.random.default_rng(seed)
    t, n, d, r, k = 6, 8, 5, 2, 1
    X = rng.standard_normal((t, n, d))
    y = rng.standard_normal((t, n))
    U = np.linalg.qr(rng.standard_normal((d, r)))[0]
    X_adv, y_adv = X.copy(), y.copy()
    X_adv[0] = scale * rng.standard_normal((n, d))
    y_adv[0] = scale * rng.standard_normal(n) * rng.choice([-1, 1])
    clip = {"init": 2.0, "grad": 1.5, "gram": 0.7}
    for XX, yy in ((X, y), (X_adv, y_adv)):
        with np.errstate(all="ignore"):
            fit = local_step(XX, yy, U, k)
            parts = {"init": _user_moments(XX, yy), "grad": _user_gradients(fit),
                     "gram": _user_grams(fit)}
        for name, contrib in parts.items():
            clipped, _ = privacy.clip_rows(contrib, clip[name])
            without = clipped[1:].sum(axis=0)
            assert np.linalg.norm(clipped.sum(axis=0) - without) <= clip[name] * (1 + 1e-12)


def test_noise_has_the_accounted_standard_deviation():
    # 20,000 noise draws; the sample std of a Gaussian has relative sd 1/sqrt(2 m) =
    # 0.005, so a 5 sigma band (0.025) fails by chance with probability < 1e-6.
    rng = np.random.default_rng(123)
    contributions = np.zeros((10, 20_000))
    bound, s = 3.0, 2.5
    noisy, _ = privacy.gaussian_sum([contributions], bound, s, rng)
    assert np.std(noisy) == pytest.approx(s * bound, rel=0.025)
    assert abs(np.mean(noisy)) <= 5 * s * bound / np.sqrt(noisy.size)


def test_infinite_epsilon_reproduces_the_non_private_fit():
    problem, data = make_instance(d=30, t=400, r=2, k=2, n=25, seed=2)
    private = ls.DPAMHTLRS(2, 2, epsilon=np.inf, delta=1e-5, n_iter=40).fit(data.X, data.y)
    public = ls.AMHTLRS(2, 2).fit(data.X, data.y)
    assert private.privacy_.noise_multiplier == 0 and private.privacy_.epsilon_spent == np.inf
    assert metrics.subspace_distance(problem.U, private.U_) <= 1e-8
    np.testing.assert_allclose(private.theta_, public.theta_, atol=1e-7)


def test_same_noise_seed_same_bits_and_different_seed_different_noise():
    problem, data = make_instance(d=20, t=150, r=2, k=1, n=15, noise=0.1, seed=3)
    a = ls.DPAMHTLRS(2, 1, 2.0, 1e-5, n_iter=4, rng=5).fit(data.X, data.y)
    b = ls.DPAMHTLRS(2, 1, 2.0, 1e-5, n_iter=4, rng=5).fit(data.X, data.y)
    c = ls.DPAMHTLRS(2, 1, 2.0, 1e-5, n_iter=4, rng=6).fit(data.X, data.y)
    assert np.array_equal(a.theta_, b.theta_)
    assert not np.array_equal(a.U_, c.U_)


@pytest.mark.slow
def test_utility_improves_with_epsilon_and_approaches_non_private():
    epsilons = [0.5, 1, 2, 4, 8, np.inf]
    dist = {eps: [] for eps in epsilons}
    baseline = []
    for seed in range(5):
        problem, data = make_instance(d=50, t=2000, r=2, k=2, n=32, noise=0.1, seed=seed,
                                      n_test=0)
        baseline.append(metrics.subspace_distance(
            problem.U, ls.AMHTLRS(2, 2).fit(data.X, data.y).U_))
        for eps in epsilons:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                fit = ls.DPAMHTLRS(2, 2, eps, 1e-5, rng=[seed, 9]).fit(data.X, data.y)
            dist[eps].append(metrics.subspace_distance(problem.U, fit.U_))
    means = [np.mean(dist[eps]) for eps in epsilons]
    assert all(a > b for a, b in zip(means, means[1:])), means
    assert means[epsilons.index(8)] <= 2 * np.mean(baseline)


@pytest.mark.parametrize("kwargs,message", [
    ({"epsilon": 0.0}, "epsilon must be > 0; got 0.0"),
    ({"epsilon": -1.0}, "epsilon must be > 0; got -1.0"),
    ({"delta": 0.0}, "delta must be in \\(0, 1\\); got 0.0"),
    ({"delta": 1.0}, "delta must be in \\(0, 1\\); got 1.0"),
    ({"clip_grad": 0.0}, "clip_grad must be > 0; got 0.0"),
    ({"clip_init": -2.0}, "clip_init must be > 0; got -2.0"),
    ({"clip_gram": np.inf}, "clip_gram must be finite; got inf"),
])
def test_bad_privacy_parameters(kwargs, message):
    problem, data = make_instance(d=10, t=20, r=2, k=1, n=8, seed=4)
    args = {"epsilon": 1.0, "delta": 1e-5, **kwargs}
    with pytest.raises(ValueError, match=message):
        ls.DPAMHTLRS(2, 1, args.pop("epsilon"), args.pop("delta"), **args).fit(data.X, data.y)


def test_noise_swamping_the_signal_is_reported_never_nan():
    problem, data = make_instance(d=20, t=30, r=2, k=1, n=10, noise=0.1, seed=5)
    with pytest.warns(RuntimeWarning, match="privacy noise dominates"):
        model = ls.DPAMHTLRS(2, 1, 0.01, 1e-6, n_iter=5, rng=1).fit(data.X, data.y)
    assert model.privacy_.noise_dominated and model.privacy_.warnings
    assert np.all(np.isfinite(model.theta_)) and np.all(np.isfinite(model.U_))
    np.testing.assert_allclose(model.U_.T @ model.U_, np.eye(2), atol=1e-10)
