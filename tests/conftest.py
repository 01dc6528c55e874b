import numpy as np
import pytest

import lowrank_sparse as ls


def make_instance(d=50, t=400, r=2, k=2, n=32, noise=0.0, seed=0, n_test=50):
    """A problem and its data, drawn from two streams derived from ``seed``."""
    problem = ls.make_problem(d, t, r, k, rng=np.random.default_rng([seed, 0]))
    data = ls.sample_data(problem, n, noise=noise, n_test=n_test,
                          rng=np.random.default_rng([seed, 1]))
    return problem, data


@pytest.fixture
def small_instance():
    return make_instance(d=20, t=60, r=2, k=2, n=20, seed=7)
