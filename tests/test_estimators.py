"""The estimator classes against the functions they wrap, and scikit-learn's protocol.

As tensorly's ``assert_class_wrapper_correctly_passes_arguments``: every keyword of a
function is a constructor parameter of its class, and each reaches the function."""

import inspect
import warnings

import numpy as np
import pytest

import lowrank_sparse as ls
from lowrank_sparse import baselines, estimators

from conftest import make_instance


class Reached(Exception):
    """Raised by a spy in place of the wrapped function, carrying what it received."""


def spy(monkeypatch, module, name):
    def record(*args, **kwargs):
        raise Reached(args, kwargs)
    monkeypatch.setattr(module, name, record)


#: (class, its positional arguments, module and name of the wrapped function, keywords
#: of the function that are not hyper-parameters: the data, the per-fit observer, and
#: what the class fixes)
WRAPPERS = [
    (ls.AMHTLRS, (2, 1), estimators, "amht_lrs", {"X", "y", "callback"}),
    (ls.LowRankOnly, (2,), estimators, "amht_lrs", {"X", "y", "callback", "sparsity"}),
    (ls.DPAMHTLRS, (2, 1, 1.0, 1e-5), estimators, "dp_amht_lrs", {"X", "y"}),
    (ls.PrivateLowRankOnly, (2, 1.0, 1e-5), estimators, "dp_amht_lrs", {"X", "y", "sparsity"}),
]


@pytest.mark.parametrize("cls,args,module,name,not_params", WRAPPERS)
def test_every_keyword_of_the_function_reaches_it_through_the_class(
        monkeypatch, cls, args, module, name, not_params):
    function = getattr(module, name)
    keywords = [p for p in inspect.signature(function).parameters if p not in not_params]
    positional = [p for p in keywords if inspect.signature(function).parameters[p].kind
                  == inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert sorted(keywords) == cls._param_names()
    sentinels = {key: object() for key in keywords if key not in positional}
    model = cls(*args, **sentinels)
    for key, value in sentinels.items():
        assert getattr(model, key) is value  # stored unchanged
    spy(monkeypatch, module, name)
    X, y = np.zeros((3, 4, 5)), np.zeros((3, 4))
    with pytest.raises(Reached) as reached:
        model.fit(X, y)
    call_args, call_kwargs = reached.value.args
    received = dict(zip(inspect.signature(function).parameters, call_args), **call_kwargs)
    for key, value in sentinels.items():
        assert received[key] is value, key
    for key, value in zip([p for p in positional if p not in ("X", "y")], args):
        assert received[key] == value, key


@pytest.mark.parametrize("make,local_keywords", [
    (lambda: ls.KnownSubspace(np.eye(5, 2), 1, n_starts=3, htp_iter=7, backend="numpy"),
     {"n_starts": 3, "max_iter": 7, "backend": "numpy"}),
    (lambda: ls.PerUserSparse(2, n_starts=4, htp_iter=6, backend="numpy"),
     {"n_starts": 4, "max_iter": 6, "backend": "numpy"}),
])
def test_local_step_options_reach_the_local_step(monkeypatch, make, local_keywords):
    module = estimators if isinstance(make(), ls.KnownSubspace) else baselines
    spy(monkeypatch, module, "local_step")
    _, data = make_instance(d=5, t=6, r=2, k=1, n=6, seed=0, n_test=0)
    with pytest.raises(Reached) as reached:
        make().fit(data.X, data.y)
    assert local_keywords.items() <= reached.value.args[1].items()


def test_convex_options_reach_the_solver(monkeypatch):
    spy(monkeypatch, baselines, "convex_low_rank_sparse")
    _, data = make_instance(d=5, t=6, r=2, k=1, n=6, seed=0, n_test=0)
    X, y = data.X / np.sqrt(np.mean(data.X ** 2)), data.y  # X already O(1)
    model = ls.ConvexLowRankSparse(lam_nuclear=0.5, lam_l1=0.25, n_iter=17, tol=1e-3)
    with pytest.raises(Reached) as reached:
        model.fit(X, y)
    args, kwargs = reached.value.args
    assert kwargs == {"n_iter": 17, "tol": 1e-3}
    assert set(ls.ConvexLowRankSparse._param_names()) == {
        "lam_nuclear", "lam_l1", "grid", "holdout", "n_iter", "tol"}


def test_personalize_uses_the_estimators_local_step_options(monkeypatch):
    problem, data = make_instance(d=12, t=40, r=2, k=1, n=12, seed=1, n_test=0)
    model = ls.AMHTLRS(2, 1, n_starts=3, htp_iter=9).fit(data.X, data.y)
    spy(monkeypatch, estimators, "local_step")
    with pytest.raises(Reached) as reached:
        model.personalize(data.X[:5], data.y[:5])
    assert {"n_starts": 3, "max_iter": 9, "backend": "numba"}.items() <= reached.value.args[1].items()


@pytest.mark.parametrize("make", [
    lambda p: ls.AMHTLRS(2, 2), lambda p: ls.LowRankOnly(2), lambda p: ls.KnownSubspace(p.U, 2),
    lambda p: ls.Oracle(p.U, p.support), lambda p: ls.DPAMHTLRS(2, 2, 4.0, 1e-5, rng=0),
    lambda p: ls.PrivateLowRankOnly(2, 4.0, 1e-5, rng=0), lambda p: ls.PerUserLeastSquares(),
    lambda p: ls.PerUserSparse(3), lambda p: ls.ConvexLowRankSparse(n_iter=20),
])
def test_fit_leaves_the_parameters_as_given(make):
    problem, data = make_instance(d=12, t=40, r=2, k=2, n=14, seed=2, n_test=0)
    model = make(problem)
    before = model.get_params()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the DP fit's noise-dominated warning
        model.fit(data.X, data.y)
    after = model.get_params()
    assert before.keys() == after.keys()
    assert all(after[key] is before[key] for key in before)


def test_scikit_learn_clone_and_params():
    clone = pytest.importorskip("sklearn.base").clone
    model = ls.AMHTLRS(3, 2, n_iter=7, robust=ls.Trimmed(), backend="numpy")
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert copy.set_params(n_iter=9) is copy and copy.n_iter == 9 and model.n_iter == 7
    with pytest.raises(ValueError, match="'n_iters' is not a parameter of AMHTLRS; valid "
                                         "parameters: .*'n_iter'"):
        copy.set_params(n_iters=3)
    private = clone(ls.DPAMHTLRS(2, 1, 1.0, 1e-6, clip_grad=3.0))
    assert private.get_params()["clip_grad"] == 3.0 and "sparsity" in private.get_params()
    assert "sparsity" not in ls.LowRankOnly(2).get_params()
    assert repr(ls.PerUserSparse(2)) == "PerUserSparse(backend='numba', htp_iter=20, n_starts=1, sparsity=2)"


def test_oracle_learns_its_sparsity_without_changing_its_parameters():
    problem, data = make_instance(d=12, t=40, r=2, k=3, n=14, seed=3, n_test=0)
    model = ls.Oracle(problem.U, problem.support).fit(data.X, data.y)
    assert model.sparsity_ == 3 and not hasattr(model, "sparsity")
    new = model.personalize(data.X[:4], data.y[:4])
    assert new.support.shape == (4, 3)
