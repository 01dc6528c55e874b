"""The pipeline's config check, its strict YAML reader, the expansion into fits and jobs,
and the registry of figures and tables (fast: no Snakemake run; the end-to-end checks
are in test_pipeline.py)."""

import copy
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lowrank_sparse import figures
from lowrank_sparse.config import (DEFAULT_BATCH_SIZE, MAX_EPSILON, ConfigError, batch_sizes,
                                   check_config, expand_sweeps, load_config_file,
                                   plan_batches)
from lowrank_sparse.experiment import METHODS, estimated_seconds

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "config" / "config.yaml", ROOT / "config" / "test.yaml"]


@pytest.fixture
def config():
    return load_config_file(ROOT / "config" / "test.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_committed_configs_pass(path):
    check_config(load_config_file(path))


def set_in(config, dotted, value):
    """config with the entry at a dotted path (sweeps.privacy.grid.t) replaced."""
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node[key]
    node[last] = value
    return config


# Every bad value is rejected, and the message names where it is and what it got.
@pytest.mark.parametrize("dotted,value,named", [
    ("sweeps.phase_transition.grid.n", ["abc", 4, 8], "sweeps.phase_transition.grid.n: 'abc'"),
    ("sweeps.phase_transition.grid.n", [0, 4], "sweeps.phase_transition.grid.n: 0"),
    ("sweeps.phase_transition.grid.n", [-3], "sweeps.phase_transition.grid.n: -3"),
    ("sweeps.phase_transition.grid.n", [4.5], "sweeps.phase_transition.grid.n: 4.5"),
    ("sweeps.phase_transition.grid.n", [8.0], "sweeps.phase_transition.grid.n: 8.0"),
    ("sweeps.phase_transition.grid.n", [True], "sweeps.phase_transition.grid.n: True"),
    ("sweeps.phase_transition.grid.n", [None], "sweeps.phase_transition.grid.n: None"),
    ("sweeps.phase_transition.grid.n", [2, 4, 2], "sweeps.phase_transition.grid.n: 2 is listed twice"),
    ("sweeps.phase_transition.grid.n", [], "sweeps.phase_transition.grid.n: must be a non-empty list"),
    ("sweeps.phase_transition.grid.n", 4, "sweeps.phase_transition.grid.n: must be a non-empty list"),
    ("sweeps.total_samples.grid.t", [0, 10], "sweeps.total_samples.grid.t: 0"),
    ("sweeps.total_samples.grid.d", [1], "sweeps.total_samples.grid.d: 1"),
    ("sweeps.phase_transition.grid.r,k", [[1, 1], [8, 8]], "needs r + k <= d"),
    ("sweeps.phase_transition.grid.r,k", [[1, 1], [12, 0]], "needs r < d"),
    ("sweeps.phase_transition.grid.r,k", [[1, 1], [0, 1]], "sweeps.phase_transition.grid.r,k (r): 0"),
    ("sweeps.phase_transition.grid.r,k", [[1, 1], [1, -1]], "sweeps.phase_transition.grid.r,k (k): -1"),
    ("sweeps.phase_transition.grid.r,k", [[1, 1], [2]], "every item must be a list of 2 values"),
    ("sweeps.phase_transition.grid.r,k", [[1, 1], 2], "every item must be a list of 2 values"),
    ("sweeps.privacy.grid.epsilon", [0.0, 1.0], "sweeps.privacy.grid.epsilon: 0.0"),
    ("sweeps.privacy.grid.epsilon", [-1.0], "sweeps.privacy.grid.epsilon: -1.0"),
    ("sweeps.privacy.grid.epsilon", [1e6], "sweeps.privacy.grid.epsilon: 1000000.0"),
    ("sweeps.privacy.grid.epsilon", [math.nan], "sweeps.privacy.grid.epsilon: nan"),
    ("sweeps.privacy.grid.epsilon", [math.inf], "private methods ['dp_amht_lrs', "
                                                "'private_low_rank_only'] need a finite epsilon"),
    ("sweeps.privacy.grid.epsilon", ["1.0"], "sweeps.privacy.grid.epsilon: '1.0' is a string"),
    ("sweeps.privacy.grid.noise", [-0.1], "sweeps.privacy.grid.noise: -0.1"),
    ("sweeps.privacy.grid.noise", [math.inf], "sweeps.privacy.grid.noise: inf"),
    ("sweeps.privacy.grid.noise", [math.nan], "sweeps.privacy.grid.noise: nan"),
    ("sweeps.convergence.grid.sigma", [0.1], "sweeps.convergence.grid.sigma: 'sigma' is not a parameter"),
    ("sweeps.convergence.grid.r, k", [[1, 1]], "' k' is not a parameter"),
    ("sweeps.convergence.grid", {}, "sweeps.convergence.grid: must be a non-empty mapping"),
    ("sweeps.convergence.methods", ["amht_lrs", "magic"], "sweeps.convergence.methods: unknown method 'magic'"),
    ("sweeps.convergence.methods", ["amht_lrs", "amht_lrs"], "'amht_lrs' is listed twice"),
    ("sweeps.convergence.methods", [], "sweeps.convergence.methods: must be a non-empty list"),
    ("sweeps.methods.grid.epsilon", [math.inf], "sweeps.methods: private methods"),
    ("base.n", "abc", "base.n: 'abc'"),
    ("base.d", 1, "base.d: 1"),
    ("base.k", -1, "base.k: -1"),
    ("base.epsilon", 2e3, "base.epsilon: 2000.0"),
    ("base.noise", -1.0, "base.noise: -1.0"),
    ("base", {"d": 12, "t": 40, "n": 12, "r": 1, "k": 1, "noise": 0.0}, "base: must set exactly"),
])
def test_bad_values_are_named(config, dotted, value, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        check_config(set_in(config, dotted, value))


def test_grid_keys_set_twice_in_a_sweep_are_rejected(config):
    config["sweeps"]["phase_transition"]["grid"]["r"] = [1]
    with pytest.raises(ConfigError, match=r"grid\.r: 'r' is set by two grid entries"):
        check_config(config)


def test_sweeps_and_methods_the_registry_reads_are_required(config):
    del config["sweeps"]["privacy"]
    with pytest.raises(ConfigError, match="sweep 'privacy' is missing"):
        check_config(config)
    config = load_config_file(ROOT / "config" / "test.yaml")
    config["sweeps"]["runtime_t"]["methods"] = ["low_rank_only"]
    with pytest.raises(ConfigError, match=re.escape("sweeps.runtime_t.methods: must list "
                                                    "['amht_lrs']")):
        check_config(config)


def test_required_sweeps_follow_from_the_registry(config):
    needed = figures.sweeps_needed()
    assert set(needed) == {sweep for output in figures.OUTPUTS.values()
                           for sweep in output.sweeps}
    # a sweep no registered output reads may go
    config["sweeps"]["extra"] = copy.deepcopy(config["sweeps"]["convergence"])
    check_config(config)
    del config["sweeps"]["extra"]
    check_config(config, needs={})
    with pytest.raises(ConfigError, match="sweep 'new_sweep' is missing"):
        check_config(config, needs={**needed, "new_sweep": ()})


def test_epsilon_bound_is_inclusive(config):
    check_config(set_in(config, "sweeps.privacy.grid.epsilon", [MAX_EPSILON]))


# The strict reader: duplicated keys and YAML errors with their lines.
@pytest.mark.parametrize("text,named", [
    ("root_seed: 1\nsweeps:\n  a: {grid: {n: [1]}, methods: [oracle]}\n"
     "  a: {grid: {n: [2]}, methods: [oracle]}\n",
     "line 4: duplicated key 'a' (first at line 3)"),
    ("base: {d: 5, d: 6}\n", "line 1: duplicated key 'd' (first at line 1)"),
    ("sweeps:\n  s:\n    grid:\n      n: [1]\n      n: [2]\n", "line 5: duplicated key 'n' (first at line 4)"),
    ("root_seed: 1\nroot_seed: 2\n", "line 2: duplicated key 'root_seed'"),
    ("a: 1\nb: [1, 2\nc: 3\n", "line 3, column 2: YAML syntax error"),
    ("a: 1\n  b: 2\n", "line 2, column 4: YAML syntax error"),
    ("- 1\n- 2\n", "the top level must be a mapping"),
])
def test_strict_reader_names_the_line(tmp_path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(named)) as error:
        load_config_file(path)
    assert str(path) in str(error.value)


def test_strict_reader_reads_what_yaml_reads():
    for path in CONFIGS:
        assert load_config_file(path) == yaml.safe_load(path.read_text())


# Expansion and batching.
def test_expansion_follows_the_config_and_normalizes_types(config):
    config["sweeps"]["convergence"]["grid"]["noise"] = [0, 0.1]  # int 0: seeded as 0.0
    fits = expand_sweeps(config)
    convergence = [fit for fit in fits if fit["sweep"] == "convergence"]
    assert [(fit["method"], fit["noise"]) for fit in convergence] == [
        ("amht_lrs", 0.0), ("low_rank_only", 0.0), ("amht_lrs", 0.1), ("low_rank_only", 0.1)]
    assert all(type(fit["noise"]) is float and type(fit["d"]) is int for fit in fits)
    privacy = [fit for fit in fits if fit["sweep"] == "privacy"]
    # non-private methods do not depend on epsilon: fitted once per t, at epsilon = inf
    assert sum(fit["method"] == "amht_lrs" for fit in privacy) == 2
    assert all(math.isinf(fit["epsilon"]) != METHODS[fit["method"]].private for fit in privacy)


def test_batches_cover_every_fit_once_and_keep_jobs_apart():
    config = load_config_file(ROOT / "config" / "config.yaml")
    fits = expand_sweeps(config)
    for size in (1, 7, 24, 1000):
        batches = plan_batches(fits, size)
        assert all(1 <= len(batch.cells) <= size for batch in batches)
        planned = [fit for batch in batches for fit in batch.fits]
        key = lambda fit: tuple(sorted(fit.items()))  # noqa: E731
        assert sorted(map(key, planned)) == sorted(map(key, fits))
    # adding a method to one sweep, or a value at the end of one grid, leaves every other
    # job's cells as they were (so Snakemake reruns only the jobs it affects)
    before = {(b.sweep, b.method, b.index): b.cells for b in plan_batches(fits, 24)}
    config["sweeps"]["privacy"]["methods"].append("per_user_sparse")
    config["sweeps"]["phase_transition"]["grid"]["r,k"].append([7, 7])
    after = {(b.sweep, b.method, b.index): b.cells
             for b in plan_batches(expand_sweeps(config), 24)}
    changed = {key for key in after if before.get(key) != after[key]}
    assert {key[:2] for key in changed} <= {("privacy", "per_user_sparse")} | {
        ("phase_transition", m) for m in config["sweeps"]["phase_transition"]["methods"]}
    assert ("privacy", "per_user_sparse", 0) in changed
    with pytest.raises(ValueError, match="batch_size of sweep 'phase_transition' must be an "
                                         "integer >= 1; got 0"):
        plan_batches(fits, 0)


def test_a_sweep_may_set_its_own_batch_size(config):
    sizes = batch_sizes(config)
    assert sizes["privacy"] == config["sweeps"]["privacy"]["batch_size"] == 2
    assert sizes["phase_transition"] == config["batch_size"]
    del config["batch_size"]
    assert batch_sizes(config)["phase_transition"] == DEFAULT_BATCH_SIZE
    batches = plan_batches(expand_sweeps(config), batch_sizes(config))
    assert max(len(b.cells) for b in batches if b.sweep == "privacy") == 2


def test_job_cost_estimate_grows_with_the_data_and_the_method():
    cells = [{"d": 50, "t": 400, "n": 16, "r": 2, "k": 2}]
    base = estimated_seconds("amht_lrs", cells, n_test=100)
    for key in ("d", "t", "n"):
        assert estimated_seconds("amht_lrs", [{**cells[0], key: 2 * cells[0][key]}], 100) > base
    assert estimated_seconds("amht_lrs", cells, n_test=10) < base
    assert estimated_seconds("amht_lrs", 2 * cells, n_test=100) > base
    assert (estimated_seconds("oracle", cells, 100) < base
            < estimated_seconds("convex_low_rank_sparse", cells, 100))


def test_methods_not_marked_compiled_run_no_numba_kernel(tmp_path):
    """The pipeline starts their jobs before compile_kernels has run: fitting them, in a
    fresh process with an empty numba cache, must neither compile nor load a kernel."""
    script = """
from numba.core.registry import CPUDispatcher
from lowrank_sparse import _kernels
from lowrank_sparse.experiment import METHODS, fit_cell
names = [name for name, method in METHODS.items() if not method.compiled]
cell = {"d": 8, "t": 30, "n": 6, "r": 1, "k": 1, "noise": 0.1, "epsilon": float("inf")}
for name in names:
    rows = fit_cell(name, cell, replicates=1, root_seed=0, n_test=5, delta=1e-5)["rows"]
    assert rows[0]["fitted"], name
used = [key for key, value in vars(_kernels).items()
        if isinstance(value, CPUDispatcher) and value.signatures]
assert len(names) >= 3 and not used, (names, used)
"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)


def test_importing_the_library_leaves_heavy_modules_until_used():
    """Every pipeline job imports the library (~100 jobs per grid): scipy.linalg,
    scipy.special (0.25-0.5 s each), pandas and numba load only where they are used."""
    heavy = ("scipy.linalg", "scipy.special", "scipy.stats", "pandas", "numba")
    script = (f"import sys, lowrank_sparse.experiment; "
              f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"


# The registry of figures and tables.
def test_registry_functions_exist_and_names_are_unique():
    for output in figures.OUTPUTS.values():
        assert callable(output.function_object), output.name
        assert output.caption.endswith("."), output.name
        assert all(method in METHODS for methods in output.sweeps.values()
                   for method in methods)
    for kind in figures.KINDS:
        names = [output.name for output in figures.OUTPUTS.values() if output.kind == kind]
        assert len(names) == len(set(names)) and names


def test_readme_lists_every_registered_output_with_its_caption():
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+?) \|$", readme, flags=re.M))
    expected = {output.stem: output.caption for output in figures.OUTPUTS.values()}
    assert rows == expected
    for name in figures.by_kind("figure"):  # and shows every figure
        assert f"(paper_figures/fig_{name}.png)" in readme, name
