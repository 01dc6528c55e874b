"""Input checks shared by every estimator: clear errors that name the parameter."""

from __future__ import annotations

import numbers

import numpy as np


def check_int(name: str, value, *, low: int | None = None, high: int | None = None,
              high_inclusive: bool = True) -> int:
    """Return ``value`` as an int, or raise ValueError naming ``name``.

    Booleans and floats (even integral ones such as 2.0) are rejected: sizes are counts.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer; got {value!r} of type {type(value).__name__}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}; got {value}")
    if high is not None:
        if high_inclusive and value > high:
            raise ValueError(f"{name} must be <= {high}; got {value}")
        if not high_inclusive and value >= high:
            raise ValueError(f"{name} must be < {high}; got {value}")
    return value


def check_positive(name: str, value, *, allow_inf: bool = False, allow_zero: bool = False) -> float:
    """Return ``value`` as a float > 0 (or >= 0), or raise ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    if np.isnan(value) or (np.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be finite; got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}; got {value}")
    return value


def check_array(name: str, value, ndim: int) -> np.ndarray:
    """Return ``value`` as a finite float64 array with ``ndim`` axes."""
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be a numeric array; got dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite (no NaN or inf); got {arr[bad]} at index {bad}")
    return arr


def check_xy(X, y) -> tuple[np.ndarray, np.ndarray]:
    """Validate a batch of users' data. X: (t, n, d), y: (t, n)."""
    X = check_array("X", X, 3)
    y = check_array("y", y, 2)
    if X.shape[:2] != y.shape:
        raise ValueError(
            f"X and y disagree: X has shape {X.shape} (t, n, d), so y must have shape "
            f"{X.shape[:2]}; got y with shape {y.shape}")
    t, n, d = X.shape
    if t < 1 or n < 1 or d < 1:
        raise ValueError(f"X must be non-empty along every axis (t, n, d); got shape {X.shape}")
    return X, y


def check_rank_sparsity(rank, sparsity, d: int, n: int) -> tuple[int, int]:
    """Validate the model sizes against the data sizes."""
    rank = check_int("rank", rank, low=1, high=d, high_inclusive=False)
    sparsity = check_int("sparsity", sparsity, low=0, high=d)
    if n < rank + sparsity:
        raise ValueError(
            f"n (samples per user) must be >= rank + sparsity = {rank + sparsity} so that "
            f"each user's least-squares refit is determined; got n = {n}")
    return rank, sparsity


def check_subspace(name: str, U, d: int, rank: int | None = None) -> np.ndarray:
    U = check_array(name, U, 2)
    if U.shape[0] != d or (rank is not None and U.shape[1] != rank):
        want = f"({d}, {rank})" if rank is not None else f"({d}, r)"
        raise ValueError(f"{name} must have shape {want}; got {U.shape}")
    return U
