"""The experiment's config: read strictly, checked before anything runs, expanded into fits.

A config has a ``base`` cell and named ``sweeps``; each sweep is a small grid around the
base with the methods to fit on every cell of it (``config/config.yaml`` explains the
keys). ``load_config_file`` reads a YAML file and refuses duplicated keys, giving line
numbers; ``check_config`` checks every value of a loaded config, naming the sweep and
the key; ``expand_sweeps`` turns a checked config into the list of fits and
``plan_batches`` groups those into jobs. Nothing here knows about Snakemake.

Division of labour with ``workflow/schemas/config.schema.yaml``: the schema checks the
shape of the config and the scalar settings (``replicates``, ``delta``, ...); this module
checks the cells' parameters (in ``base`` and every grid), the relations between them,
the methods, and that every sweep a registered figure or table reads is there.
"""

from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from typing import Iterable, Mapping

import yaml

from .experiment import CELL_KEYS, METHODS

#: Cells per fit job unless the config says otherwise (``batch_size``, globally or per
#: sweep): a job then spends a few seconds fitting for each ~2 s of start-up (interpreter,
#: imports, loading the compiled kernels); see README.md for the measurement.
DEFAULT_BATCH_SIZE = 48

#: Largest privacy budget a grid may ask for. Calibration accepts any epsilon > 0, but a
#: user-level epsilon above ~10 already promises next to nothing (e^10 ~ 2e4), and the
#: noise of the private fits is negligible long before 1e3: a larger value is a typo
#: (1e6 for 1e-6?) rather than an experiment.
MAX_EPSILON = 1e3


class ConfigError(ValueError):
    """A config file or value that the pipeline cannot run: the message names where."""


@dataclass(frozen=True)
class Parameter:
    """What a cell parameter may be: an int or a float in [low, high] (``low_open``:
    low excluded), and whether infinity is allowed (epsilon = inf: not private)."""

    meaning: str
    kind: type
    low: float
    low_open: bool = False
    high: float = math.inf
    allow_inf: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.kind is int else "a number"
        bound = f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high < math.inf:
            bound += f" and <= {self.high:g}"
        return f"{kind} {bound}" + (" (or .inf)" if self.allow_inf else "")

    def check(self, value, where: str):
        """``value`` as this parameter's type, or ConfigError naming ``where``."""
        if isinstance(value, str):
            raise ConfigError(f"{where}: {value!r} is a string, not {self.describe()} "
                              f"({self.meaning})")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
                self.kind is int and not isinstance(value, numbers.Integral)):
            raise ConfigError(f"{where}: {value!r} is not {self.describe()} ({self.meaning})")
        value = self.kind(value)  # float for noise and epsilon: 0 and 0.0 seed alike
        if (math.isnan(value) or value < self.low or (self.low_open and value == self.low)
                or (math.isinf(value) and not self.allow_inf)
                or (math.isfinite(value) and value > self.high)):
            raise ConfigError(f"{where}: {value!r} is out of range: {self.meaning} must be "
                              f"{self.describe()}")
        return value


#: The parameters of a cell (config keys of ``base`` and of the grids).
PARAMETERS = {
    "d": Parameter("feature dimension d", int, 2),
    "t": Parameter("number of users t", int, 1),
    "n": Parameter("training samples per user n", int, 1),
    "r": Parameter("rank r of the shared part", int, 1),
    "k": Parameter("non-zeros per user k of the sparse part", int, 0),
    "noise": Parameter("label-noise standard deviation", float, 0.0),
    "epsilon": Parameter("user-level privacy budget epsilon", float, 0.0, low_open=True,
                         high=MAX_EPSILON, allow_inf=True),
}
assert tuple(PARAMETERS)[:len(CELL_KEYS)] == CELL_KEYS


# ----------------------------------------------------------------------------- loading
class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key that a mapping repeats (plain YAML keeps the
    last one silently: a second sweep of the same name would replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # let the base class raise its own error
            if key in seen:
                raise ConfigError(
                    f"{key_node.start_mark.name}, line {key_node.start_mark.line + 1}: "
                    f"duplicated key {key!r} (first at line {seen[key] + 1}); a repeated "
                    f"key would silently replace the first")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                              _StrictLoader.construct_mapping)


def load_config_file(path) -> dict:
    """Read a YAML config file, refusing duplicated keys.

    Raises
    ------
    ConfigError
        For a YAML syntax error (with its line and column), a duplicated key (with both
        lines), a missing file, or a file whose top level is not a mapping.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = yaml.load(handle, Loader=_StrictLoader)  # noqa: S506 (safe loader)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except yaml.MarkedYAMLError as error:
        def at(mark):
            return f"line {mark.line + 1}, column {mark.column + 1}"

        mark = error.problem_mark or error.context_mark
        context = ""
        if error.context:  # e.g. "while parsing a flow sequence", begun at context_mark
            context = error.context + (f" (from {at(error.context_mark)})"
                                       if error.context_mark else "") + ": "
        raise ConfigError(f"{path}, {at(mark) if mark else 'unknown line'}: YAML syntax "
                          f"error: {context}{error.problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (root_seed, "
                          f"base, sweeps, ...); got {type(loaded).__name__}")
    return loaded


# ---------------------------------------------------------------------------- checking
def check_config(config: Mapping, *, needs: Mapping[str, Iterable[str]] | None = None) -> None:
    """Check every cell value, grid and method list of a config; raise ConfigError naming
    the sweep and key of the first problem.

    Parameters
    ----------
    config : mapping
        A loaded config (after the schema has checked its shape).
    needs : mapping of str to iterable of str, optional
        Sweeps the config must have, each with the methods it must list; default
        ``lowrank_sparse.figures.sweeps_needed()`` (what the registered figures and
        tables read).

    Notes
    -----
    Checked: every parameter of ``base`` and of every grid value (type and range, see
    ``PARAMETERS``; epsilon <= ``MAX_EPSILON``); grid keys (known, none twice in a
    sweep, grouped keys such as ``"r,k"`` with one value per key); no value listed twice;
    on every cell of every sweep r < d and r + k <= d; methods known, none listed twice;
    private methods only on cells with a finite epsilon.
    """
    if needs is None:
        from .figures import sweeps_needed
        needs = sweeps_needed()
    base = config.get("base")
    if not isinstance(base, Mapping):
        raise ConfigError(f"base: must be a mapping of {', '.join(PARAMETERS)}; got {base!r}")
    missing = [key for key in PARAMETERS if key not in base]
    unknown = [key for key in base if key not in PARAMETERS]
    if missing or unknown:
        raise ConfigError(f"base: must set exactly {', '.join(PARAMETERS)}; "
                          f"missing {missing}, unknown {unknown}")
    for key, value in base.items():
        PARAMETERS[key].check(value, f"base.{key}")
    sweeps = config.get("sweeps")
    if not isinstance(sweeps, Mapping) or not sweeps:
        raise ConfigError(f"sweeps: must be a non-empty mapping of sweep names; got {sweeps!r}")
    for sweep, spec in sweeps.items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"sweeps.{sweep}: must be a mapping with a grid and methods; "
                              f"got {spec!r}")
    for sweep, methods in needs.items():
        if sweep not in sweeps:
            raise ConfigError(f"sweeps: sweep {sweep!r} is missing; the registered figures "
                              f"and tables read it (lowrank_sparse.figures)")
        absent = sorted(set(methods) - set(sweeps[sweep].get("methods") or ()))
        if absent:
            raise ConfigError(f"sweeps.{sweep}.methods: must list {absent}; the registered "
                              f"figures and tables read them (lowrank_sparse.figures)")
    for sweep in sweeps:
        _check_methods(sweep, sweeps[sweep])
        for cell, origin in _cells(base, sweep, sweeps[sweep]):
            _check_cell(sweep, sweeps[sweep]["methods"], cell, origin)


def _check_methods(sweep, spec):
    methods = spec.get("methods")
    where = f"sweeps.{sweep}.methods"
    if not isinstance(methods, list) or not methods:
        raise ConfigError(f"{where}: must be a non-empty list of method names; got {methods!r}")
    for method in methods:
        if method not in METHODS:
            raise ConfigError(f"{where}: unknown method {method!r}; expected one of "
                              f"{sorted(METHODS)}")
        if methods.count(method) > 1:
            raise ConfigError(f"{where}: {method!r} is listed twice")


def _grid_entries(sweep, spec):
    """(names, where, checked values) per grid entry; values are tuples (one per name)."""
    grid = spec.get("grid")
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"sweeps.{sweep}.grid: must be a non-empty mapping of parameter "
                          f"names to lists of values; got {grid!r}")
    seen = set()
    entries = []
    for key, values in grid.items():
        where = f"sweeps.{sweep}.grid.{key}"
        names = str(key).split(",")
        for name in names:
            if name not in PARAMETERS:
                raise ConfigError(f"{where}: {name!r} is not a parameter; expected one of "
                                  f"{', '.join(PARAMETERS)} or a comma-joined group such as "
                                  f"'r,k' (no spaces)")
            if name in seen:
                raise ConfigError(f"{where}: {name!r} is set by two grid entries of the sweep")
            seen.add(name)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: must be a non-empty list of values; got {values!r}")
        checked = []
        for value in values:
            items = value if len(names) > 1 else [value]
            if len(names) > 1 and (not isinstance(value, list) or len(value) != len(names)):
                raise ConfigError(f"{where}: every item must be a list of {len(names)} values "
                                  f"({', '.join(names)}); got {value!r}")
            item = tuple(PARAMETERS[name].check(v, where if len(names) == 1 else
                                                f"{where} ({name})")
                         for name, v in zip(names, items))
            if item in checked:
                raise ConfigError(f"{where}: {value!r} is listed twice")
            checked.append(item)
        entries.append((names, where, checked))
    return entries


def _cells(base, sweep, spec):
    """Every cell of a sweep, in grid order, with where each key's value comes from."""
    entries = _grid_entries(sweep, spec)
    start = {key: PARAMETERS[key].kind(value) for key, value in base.items()}
    origin = {key: f"base.{key}" for key in base}
    for names, where, _ in entries:
        origin.update(dict.fromkeys(names, where))
    for combo in itertools.product(*(checked for _, _, checked in entries)):
        cell = dict(start)
        for (names, _, _), values in zip(entries, combo):
            cell.update(zip(names, values))
        yield cell, origin


def _check_cell(sweep, methods, cell, origin):
    def source(*keys):
        return ", ".join(f"{key} from {origin[key]}" for key in keys)

    values = ", ".join(f"{key}={cell[key]!r}" for key in ("d", "r", "k"))
    if cell["r"] >= cell["d"]:
        raise ConfigError(f"sweeps.{sweep}: the cell with {values} needs r < d "
                          f"({source('r', 'd')})")
    if cell["r"] + cell["k"] > cell["d"]:
        raise ConfigError(f"sweeps.{sweep}: the cell with {values} needs r + k <= d "
                          f"({source('r', 'k', 'd')})")
    private = [m for m in methods if METHODS[m].private]
    if private and math.isinf(cell["epsilon"]):
        raise ConfigError(f"sweeps.{sweep}: private methods {private} need a finite epsilon; "
                          f"a cell has epsilon = inf ({source('epsilon')}): add epsilon to "
                          f"the sweep's grid")


# --------------------------------------------------------------------------- expanding
def expand_sweeps(config: Mapping) -> list[dict]:
    """The fits a checked config asks for: one dict per (sweep, cell, method), in the
    config's order (sweeps, then grid cells, then methods).

    Each sweep is a one- or few-factor grid around ``config["base"]``: ``grid`` maps a
    parameter (or a comma-joined group such as ``"r,k"`` whose values are lists) to the
    values it takes; the cartesian product of the entries is taken. Non-private methods
    do not depend on epsilon, so their cells carry epsilon = inf (fitted once per
    sweep). Returns dicts with the keys sweep, method, d, t, n, r, k, noise, epsilon
    (ints for d, t, n, r, k; floats for noise and epsilon).
    """
    fits = []
    for sweep, spec in config["sweeps"].items():
        seen = set()
        for cell, _ in _cells(config["base"], sweep, spec):
            for method in spec["methods"]:
                row = {"sweep": sweep, "method": method, **cell}
                if not METHODS[method].private:
                    row["epsilon"] = math.inf
                key = tuple(row.values())
                if key not in seen:  # e.g. a non-private method in an epsilon sweep
                    seen.add(key)
                    fits.append(row)
    return fits


@dataclass(frozen=True)
class Batch:
    """The fits of one job: consecutive cells of one method in one sweep."""

    sweep: str
    method: str
    index: int
    cells: tuple  # dicts of CELL_KEYS + epsilon

    @property
    def fits(self) -> list[dict]:
        return [{"sweep": self.sweep, "method": self.method, **cell} for cell in self.cells]


def batch_sizes(config: Mapping) -> dict[str, int]:
    """Cells per fit job for each sweep: the sweep's ``batch_size``, else the config's,
    else ``DEFAULT_BATCH_SIZE``."""
    default = config.get("batch_size", DEFAULT_BATCH_SIZE)
    return {sweep: spec.get("batch_size", default) for sweep, spec in config["sweeps"].items()}


def plan_batches(fits: list[dict], batch_size: int | Mapping[str, int]) -> list[Batch]:
    """Group fits into jobs: per (sweep, method), consecutive runs of ``batch_size`` cells
    (an int, or a mapping from sweep to int as ``batch_sizes`` gives).

    A job is one method on one sweep's cells, so adding a method to a sweep, or changing
    one sweep's grid, changes only the jobs of that method or sweep (appending grid
    values changes only the last job of each method); every other job keeps its inputs
    and is not rerun.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for fit in fits:
        cell = {key: value for key, value in fit.items() if key not in ("sweep", "method")}
        groups.setdefault((fit["sweep"], fit["method"]), []).append(cell)
    batches = []
    for (sweep, method), cells in groups.items():
        size = batch_size[sweep] if isinstance(batch_size, Mapping) else batch_size
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"batch_size of sweep {sweep!r} must be an integer >= 1; "
                             f"got {size!r}")
        batches += [Batch(sweep, method, start // size, tuple(cells[start:start + size]))
                    for start in range(0, len(cells), size)]
    return batches
