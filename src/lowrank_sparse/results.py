"""The pipeline's hand-offs, checked: fit records in, tidy tables out, tidy tables read back.

A fit job writes one record (JSON) for a batch of fits (``lowrank_sparse.config.Batch``);
``read_fit_record`` loads and checks it, ``tidy_results`` makes the results table (one
row per sweep, cell, replicate and method) and the traces table (one row per iteration
of a traced fit); ``read_results`` and ``read_traces`` read those tables back for a
figure or table and check they hold every row the config plans. Every check raises a
ValueError that names the file and what is wrong, so nothing is drawn from partial data.
What a metric may hold is defined once, in ``lowrank_sparse.experiment.METRIC_COLUMNS``.
"""

from __future__ import annotations

import json
import math
from typing import Mapping

import numpy as np
import pandas as pd

from .experiment import CELL_KEYS, METHODS, METRIC_COLUMNS

#: Columns that identify a result row.
KEY_COLUMNS = ("sweep", "method", *CELL_KEYS, "epsilon", "replicate")
#: Columns of every result row (besides ``version_<package>`` columns).
RESULT_COLUMNS = (*KEY_COLUMNS, *METRIC_COLUMNS, "fitted", "code_version")
TRACE_COLUMNS = (*KEY_COLUMNS, "iteration", "subspace_distance")
#: A subspace distance in a trace is bounded like the metric (a sine, plus rounding).
_MAX_DISTANCE = METRIC_COLUMNS["subspace_distance"].high

_REBUILD = "delete it and rerun the step that writes it"


def expected_rows(fits: list[dict], replicates: int) -> dict[str, dict[str, int]]:
    """Rows the results table must have per sweep and method: fits x replicates."""
    counts: dict[str, dict[str, int]] = {}
    for fit in fits:
        per_method = counts.setdefault(fit["sweep"], {})
        per_method[fit["method"]] = per_method.get(fit["method"], 0) + replicates
    return counts


# -------------------------------------------------------------------------- fit records
def read_fit_record(path, *, sweep: str, method: str, cells: list[dict],
                    replicates: int) -> dict:
    """Load the record a fit job wrote and check it against the batch it was asked for.

    Checked: valid JSON; the sweep, method and cells of the batch, in order; per cell
    one row per replicate with exactly the columns ``replicate``, ``fitted`` and the
    metrics, each metric as ``METRIC_COLUMNS`` allows; one trace per replicate (as many
    distances in [0, 1] as iterations for traced methods, none otherwise).

    Raises
    ------
    ValueError
        Naming ``path`` and the cell, replicate and column at fault.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"{path}: fit output missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a complete JSON file ({error}): the job that wrote "
                         f"it was interrupted or the file was edited; {_REBUILD}") from None
    if not isinstance(record, dict) or not {"sweep", "method", "fits"} <= set(record):
        raise ValueError(f"{path}: not a fit record (needs the keys sweep, method, fits); "
                         f"{_REBUILD}")
    if (record["sweep"], record["method"]) != (sweep, method):
        raise ValueError(f"{path}: holds sweep {record['sweep']!r}, method "
                         f"{record['method']!r}; expected {sweep!r}, {method!r}; {_REBUILD}")
    found = [entry.get("cell") for entry in record["fits"]]
    if found != list(cells):
        raise ValueError(f"{path}: holds the cells {found}, not the {len(cells)} cells the "
                         f"config plans for this batch ({cells}); {_REBUILD}")
    traced = METHODS[method].traces if method in METHODS else False
    for entry in record["fits"]:
        where = f"{path}: cell {_describe(entry['cell'])}"
        rows, traces = entry.get("rows"), entry.get("traces")
        if not isinstance(rows, list) or not isinstance(traces, list) \
                or len(rows) != replicates or len(traces) != replicates:
            raise ValueError(f"{where}: needs {replicates} rows and {replicates} traces (one "
                             f"per replicate); {_REBUILD}")
        columns = {"replicate", "fitted", *METRIC_COLUMNS}
        for rep, row in enumerate(rows):
            if not isinstance(row, dict) or set(row) != columns:
                got = set(row) if isinstance(row, dict) else set()
                raise ValueError(f"{where}, replicate {rep}: the row's columns must be "
                                 f"{sorted(columns)}; missing {sorted(columns - got)}, "
                                 f"unknown {sorted(got - columns)}")
            if row["replicate"] != rep:
                raise ValueError(f"{where}: row {rep} is replicate {row['replicate']!r}")
    # The metrics of all cells at once (a frame per cell cost ~10 ms each, most of the
    # aggregate step); a bad value is named with its row's cell and replicate.
    check_rows(pd.DataFrame([{**entry["cell"], **row} for entry in record["fits"]
                             for row in entry["rows"]]), str(path))
    for entry in record["fits"]:
        for rep, (row, trace) in enumerate(zip(entry["rows"], entry["traces"])):
            length = row["iterations"] if traced and row["fitted"] else 0
            if not isinstance(trace, list) or len(trace) != length or not all(
                    isinstance(v, (int, float)) and 0 <= v <= _MAX_DISTANCE for v in trace):
                raise ValueError(f"{path}: cell {_describe(entry['cell'])}, replicate {rep}: "
                                 f"the trace must hold {length} subspace distances in [0, 1]; "
                                 f"got {trace!r}")
    return record


def check_rows(frame: pd.DataFrame, where: str) -> None:
    """Check the metric columns of result rows against ``METRIC_COLUMNS``: for fitted
    rows a number in range (NaN and inf only where allowed), for rows that could not be
    fitted success_rate = 0. Raises ValueError naming ``where`` and the first bad row."""
    if "fitted" not in frame:
        raise ValueError(f"{where}: column 'fitted' is missing; {_REBUILD}")
    fitted = _as_bool(frame["fitted"])
    if fitted.isna().any():
        first = int(np.flatnonzero(fitted.isna())[0])
        raise ValueError(f"{where}: fitted = {_plain(frame['fitted'].iloc[first])!r}"
                         f"{_row(frame, first)}; expected True or False; {_REBUILD}")
    fitted = fitted.to_numpy(dtype=bool)
    for name, column in METRIC_COLUMNS.items():
        if name not in frame:
            raise ValueError(f"{where}: column {name!r} is missing; {_REBUILD}")
        numbers = pd.to_numeric(frame[name], errors="coerce")
        not_number = (numbers.isna() & frame[name].notna()).to_numpy()
        if frame[name].dtype == bool or not_number.any():
            first = int(np.flatnonzero(not_number)[0]) if not_number.any() else 0
            raise ValueError(f"{where}: {name} = {_plain(frame[name].iloc[first])!r}"
                             f"{_row(frame, first)} is not a number; {_REBUILD}")
        values = numbers.to_numpy(dtype=float)
        ok = np.isfinite(values) & (values >= column.low) & (values <= column.high)
        if column.integer:
            ok &= np.mod(np.where(np.isfinite(values), values, 0), 1) == 0
        if column.nan:
            ok |= np.isnan(values)
        if column.inf:
            ok |= np.isposinf(values)
        if name == "success_rate":
            ok = np.where(fitted, ok, values == 0)
        else:
            ok |= ~fitted  # rows that were not fitted: NaN (not checked)
        if not ok.all():
            first = int(np.flatnonzero(~ok)[0])
            allowed = (("an integer" if column.integer else "a number")
                       + f" in [{column.low:g}, {column.high:g}]"
                       + (f", or NaN for {column.nan}" if column.nan else "")
                       + (", or inf" if column.inf else ""))
            if name == "success_rate" and not fitted[first]:
                allowed = "0 (the fit could not be attempted)"
            raise ValueError(f"{where}: {name} = {_plain(values[first])!r}{_row(frame, first)}; "
                             f"expected {allowed}")


def _row(frame, position):
    keys = [key for key in KEY_COLUMNS if key in frame]
    if not keys:
        return ""
    values = frame.iloc[position]
    return " in the row " + ", ".join(f"{key}={_plain(values[key])!r}" for key in keys)


def _as_bool(column: pd.Series) -> pd.Series:
    """True/False, NaN for anything else (a CSV column holding one damaged value is read
    as strings: "True", "False", "yes")."""
    return column.map({True: True, False: False, "True": True, "False": False})


def _plain(value):
    """A numpy scalar as the Python number it holds (for messages: 1, not np.int64(1))."""
    return value.item() if isinstance(value, np.generic) else value


def _describe(cell) -> str:
    return ", ".join(f"{key}={_plain(value)!r}" for key, value in cell.items()) \
        if isinstance(cell, dict) else repr(cell)


def _fit_key(sweep, method, cell) -> tuple:
    return (sweep, method, *(cell[key] for key in (*CELL_KEYS, "epsilon")))


def tidy_results(fits: list[dict], records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results and traces tables from checked fit records.

    Parameters
    ----------
    fits : list of dict
        The planned fits, in the config's order (``lowrank_sparse.config.expand_sweeps``):
        the tables follow it.
    records : list of dict
        The records of every batch (``read_fit_record``).

    Returns
    -------
    results : DataFrame
        One row per sweep, cell, replicate and method: parameters, replicate, metrics,
        ``fitted``, code version and ``version_<package>`` columns.
    traces : DataFrame
        One row per iteration of a traced fit: the subspace distance to the truth.
    """
    index = {}
    for record in records:
        for entry in record["fits"]:
            index[_fit_key(record["sweep"], record["method"], entry["cell"])] = (record, entry)
    rows, trace_rows = [], []
    for spec in fits:
        key = _fit_key(spec["sweep"], spec["method"], spec)
        if key not in index:
            raise ValueError(f"no fit record holds sweep {spec['sweep']!r}, method "
                             f"{spec['method']!r}, cell {_describe(spec)}")
        record, entry = index[key]
        spec = {name: spec[name] for name in ("sweep", "method", *CELL_KEYS, "epsilon")}
        for row, trace in zip(entry["rows"], entry["traces"]):
            rows.append({**spec, **row, "code_version": record["code_version"],
                         **{f"version_{k}": v for k, v in record["versions"].items()}})
            trace_rows += [{**spec, "replicate": row["replicate"], "iteration": i + 1,
                            "subspace_distance": value} for i, value in enumerate(trace)]
    return pd.DataFrame(rows), pd.DataFrame(trace_rows, columns=list(TRACE_COLUMNS))


# ------------------------------------------------------------------ tidy tables read back
def _read_csv(path, columns, complete) -> pd.DataFrame:
    """Read a tidy table; ``columns`` must be there, ``complete`` ones (plus columns named
    ``version_*``) must hold a value in every row (a truncated last row does not)."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable table ({error}); {_REBUILD}") from None
    missing = [column for column in columns if column not in frame]
    if missing:
        raise ValueError(f"{path}: columns {missing} are missing; {_REBUILD}")
    for key in [*complete, *(c for c in frame.columns if c.startswith("version_"))]:
        if frame[key].isna().any():
            position = int(np.flatnonzero(frame[key].isna())[0])
            raise ValueError(f"{path}, line {position + 2}: no value for {key!r}: the table "
                             f"is truncated or damaged; {_REBUILD}")
    return frame


def read_results(path, expected: Mapping[str, Mapping[str, int]]) -> pd.DataFrame:
    """Read the results table and check it holds, for every sweep in ``expected``,
    exactly the planned number of rows per method (``expected_rows``), no row twice,
    and metrics as ``METRIC_COLUMNS`` allows.

    Returns
    -------
    DataFrame
        The rows of the sweeps in ``expected`` (only what was checked), with numeric
        metrics and a boolean ``fitted``.

    Raises
    ------
    ValueError
        Naming ``path`` and the sweep, method or row that is missing or wrong: a figure
        or table is never made from part of the results.
    """
    results = _read_csv(path, RESULT_COLUMNS, (*KEY_COLUMNS, "fitted", "code_version"))
    for sweep, per_method in expected.items():
        part = results[results["sweep"] == sweep]
        counts = part["method"].value_counts()
        for method, planned in per_method.items():
            if counts.get(method, 0) != planned:
                raise ValueError(
                    f"{path}: sweep {sweep!r}, method {method!r} has {counts.get(method, 0)} "
                    f"rows; the config plans {planned} (fits x replicates): the table is "
                    f"incomplete or from another config; {_REBUILD}")
        extra = sorted(set(counts.index) - set(per_method))
        if extra:
            raise ValueError(f"{path}: sweep {sweep!r} has rows of methods {extra} that the "
                             f"config does not plan; {_REBUILD}")
        duplicated = part.duplicated(list(KEY_COLUMNS))
        if duplicated.any():
            raise ValueError(f"{path}: a row appears twice"
                             f"{_row(part, int(np.flatnonzero(duplicated)[0]))}; {_REBUILD}")
        check_rows(part.reset_index(drop=True), f"{path}, sweep {sweep!r}")
    checked = results[results["sweep"].isin(list(expected))].reset_index(drop=True)
    return checked.assign(
        fitted=_as_bool(checked["fitted"]).astype(bool),
        **{name: pd.to_numeric(checked[name]) for name in METRIC_COLUMNS})


def read_traces(path, results: pd.DataFrame, sweeps) -> pd.DataFrame:
    """Read the traces table and check that, in ``sweeps``, every fitted row of a traced
    method in ``results`` (from ``read_results``) has one distance in [0, 1] per
    iteration, numbered 1, 2, ...; returns the rows of ``sweeps``."""
    traces = _read_csv(path, TRACE_COLUMNS, TRACE_COLUMNS)
    keys = list(KEY_COLUMNS)
    for sweep in sweeps:
        part = traces[traces["sweep"] == sweep]
        distance = part["subspace_distance"].to_numpy(dtype=float)
        bad = ~((distance >= 0) & (distance <= _MAX_DISTANCE))
        if bad.any():
            raise ValueError(f"{path}: subspace_distance = {_plain(distance[bad][0])!r}"
                             f"{_row(part, int(np.flatnonzero(bad)[0]))}; expected a number "
                             f"in [0, 1]; {_REBUILD}")
        traced = results[(results["sweep"] == sweep) & results["fitted"]
                         & results["method"].map(lambda m: METHODS[m].traces if m in METHODS
                                                 else False)]
        found = part.groupby(keys).agg(count=("iteration", "size"), last=("iteration", "max"))
        planned = traced.set_index(keys)["iterations"]
        found = found.reindex(planned.index)
        wrong = ~((found["count"] == planned) & (found["last"] == planned)).to_numpy()
        if wrong.any():
            first = int(np.flatnonzero(wrong)[0])
            count = found["count"].iloc[first]
            fit = dict(zip(keys, planned.index[first]))
            raise ValueError(f"{path}: the fit {_describe(fit)} has "
                             f"{0 if math.isnan(count) else int(count)} trace rows, not one "
                             f"per iteration ({int(planned.iloc[first])}): the table is "
                             f"incomplete; "
                             f"{_REBUILD}")
    return traces[traces["sweep"].isin(list(sweeps))].reset_index(drop=True)
