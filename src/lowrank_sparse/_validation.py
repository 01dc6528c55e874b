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


def check_array(name: str, value, ndim: int, *, finite: bool = True,
                keep_float32: bool = False) -> np.ndarray:
    """Return ``value`` as a real float64 array with ``ndim`` axes (finite unless
    ``finite=False``; float32 kept as float32 with ``keep_float32``, for storage whose
    arithmetic is float64 anyway). Complex input is rejected rather than silently cast."""
    arr = np.asarray(value)
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real; got complex values (dtype {arr.dtype})")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be a numeric array; got dtype {arr.dtype}")
    keep = keep_float32 and arr.dtype == np.float32
    arr = np.asarray(arr, dtype=np.float32 if keep else np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {arr.shape}")
    if finite and not _all_finite(arr):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite (no NaN or inf); got {arr[bad]} at index {bad}")
    return arr


def _blocks(arr: np.ndarray):
    """arr in blocks along its first axis of about 2^22 entries (32 MB), flattened."""
    per = max(1, (1 << 22) // max(1, arr[:1].size))
    for start in range(0, arr.shape[0], per):
        yield np.ascontiguousarray(arr[start:start + per]).reshape(-1)


def _all_finite(arr: np.ndarray) -> bool:
    """Whether every entry is finite, in one pass without a temporary the size of arr:
    a sum is finite only if every term is (NaN and inf propagate); where it overflows on
    finite values, the block is checked entry by entry. (numpy's own sum, not BLAS: a
    BLAS dot product wakes OpenBLAS's threads, which then spin against the fit.)"""
    with np.errstate(over="ignore", invalid="ignore"):
        for block in _blocks(arr):
            if not np.isfinite(np.sum(block)) and not np.all(np.isfinite(block)):
                return False
    return True


#: Entries may be at most this many times the median magnitude: beyond it their squares
#: and products leave float64's range relative to the typical entries.
MAX_DYNAMIC_RANGE = 1e100


def power_of_two_scale(name: str, arr: np.ndarray, *, allow_zero: bool = True) -> float:
    """The power of two nearest the root-mean-square of ``arr``'s entries, computed
    without overflow or underflow. If they are all zero: 1.0, or with ``allow_zero=False``
    (features) a ValueError, as for entries that are all equal.

    Dividing by a power of two is exact, so a fit of (X / sx, y / sy) is a fit of (X, y)
    in units where both are O(1): fits are invariant to the scale of the data.
    Raises ValueError if the entries span more than :data:`MAX_DYNAMIC_RANGE` times their
    median magnitude (e.g. one entry of 1e200 among entries of 1).
    """
    size = max(arr.size, 1)
    with np.errstate(over="ignore", under="ignore"):
        total = sum(float(np.vdot(block, block)) for block in _blocks(arr))
        if np.isfinite(total) and 1e-250 < total / size < 1e250:
            rms = np.sqrt(total / size)
        else:  # the squares overflow or underflow: scale by the largest magnitude first
            peak = max((float(np.max(np.abs(block), initial=0.0)) for block in _blocks(arr)),
                       default=0.0)
            if peak == 0.0:
                return _all_zero(name, allow_zero)
            total = sum(float(np.vdot(block / peak, block / peak)) for block in _blocks(arr))
            rms = peak * np.sqrt(total / size)
    if rms == 0.0:
        return _all_zero(name, allow_zero)
    # A fixed, evenly spread sample of up to ~1e4 entries (its median is the typical
    # magnitude, which only has to be right to within orders of magnitude; a larger
    # sample's median was ~4 ms, the largest fixed cost of a small fit).
    flat = arr.reshape(-1)
    sample = flat[::max(1, flat.size // 10_000)]
    if not allow_zero and np.ptp(sample) == 0 and all(
            np.ptp(block) == 0 and block[0] == sample[0] for block in _blocks(arr)):
        raise ValueError(f"{name} must not be constant: every entry is {sample[0]:.6g}, so "
                         "the features cannot tell users' parameters apart")
    sample = np.abs(sample)
    typical = float(np.median(sample[sample > 0])) if np.any(sample > 0) else rms
    if rms / typical > MAX_DYNAMIC_RANGE:
        raise ValueError(
            f"{name} spans too many orders of magnitude for float64 arithmetic: its "
            f"root-mean-square entry is {rms:.3g} but its median magnitude is {typical:.3g} "
            f"(ratio > {MAX_DYNAMIC_RANGE:.0e}); rescale it or remove the outlying entries")
    return float(2.0 ** np.round(np.log2(rms)))


def in_unit_scale(X, y):
    """(X / sx, y / sy, sx, sy): the data in units where both are O(1) (sx, sy powers of
    two, so the division is exact); fitted parameters go back to the data's units times
    sy / sx. Raises ValueError for an all-zero X or entries no float64 fit can handle."""
    x_scale = power_of_two_scale("X", X, allow_zero=False)
    y_scale = power_of_two_scale("y", y)
    if not 0 < y_scale / x_scale < np.inf:
        raise ValueError(f"theta's scale, that of y over that of X ({y_scale:.3g} / "
                         f"{x_scale:.3g}), is outside float64's range")
    return (X if x_scale == 1.0 else X / x_scale, y if y_scale == 1.0 else y / y_scale,
            x_scale, y_scale)


def _all_zero(name, allow_zero):
    if not allow_zero:
        raise ValueError(f"{name} must not be all zeros: nothing can be learned from it")
    return 1.0


def check_xy(X, y, *, finite: bool = True, keep_float32: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
    """Validate a batch of users' data. X: (t, n, d), y: (t, n), real (and finite unless
    ``finite=False``); float64, or X float32 if given so and ``keep_float32``."""
    X = check_array("X", X, 3, finite=finite, keep_float32=keep_float32)
    y = check_array("y", y, 2, finite=finite)
    if X.shape[:2] != y.shape:
        raise ValueError(
            f"X and y disagree: X has shape {X.shape} (t, n, d), so y must have shape "
            f"{X.shape[:2]}; got y with shape {y.shape}")
    t, n, d = X.shape
    if t < 1 or n < 1 or d < 1:
        raise ValueError(f"X must be non-empty along every axis (t, n, d); got shape {X.shape}")
    return X, y


def check_rank_sparsity(rank, sparsity, d: int, n: int, t: int | None = None
                        ) -> tuple[int, int]:
    """Validate the model sizes against the data sizes (and, given t, that there are at
    least as many users as the rank: t users' w_i span at most t dimensions of U)."""
    rank = check_int("rank", rank, low=1, high=d, high_inclusive=False)
    sparsity = check_int("sparsity", sparsity, low=0, high=d)
    if t is not None and t < rank:
        raise ValueError(
            f"t (users) must be >= rank = {rank}: {t} users' coordinates span at most {t} "
            f"directions, so a rank-{rank} subspace cannot be identified; got t = {t}")
    if n < rank + sparsity:
        raise ValueError(
            f"n (samples per user) must be >= rank + sparsity = {rank + sparsity} so that "
            f"each user's least-squares refit is determined; got n = {n}")
    return rank, sparsity


def check_subspace(name: str, U, d: int, rank: int | None = None, *,
                   orthonormal: bool = False) -> np.ndarray:
    """A (d, r) subspace basis; with ``orthonormal``, U^T U must be I (to 1e-6)."""
    U = check_array(name, U, 2)
    if U.shape[0] != d or (rank is not None and U.shape[1] != rank) or U.shape[1] < 1:
        want = f"({d}, {rank})" if rank is not None else f"({d}, r) with r >= 1"
        raise ValueError(f"{name} must have shape {want}; got {U.shape}")
    if orthonormal:
        error = float(np.max(np.abs(U.T @ U - np.eye(U.shape[1]))))
        if not error <= 1e-6:
            raise ValueError(f"{name} must have orthonormal columns (U^T U = I); got "
                             f"max |U^T U - I| = {error:.3g}")
    return U
