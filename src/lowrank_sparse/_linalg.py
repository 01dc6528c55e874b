"""Batched linear algebra over a leading user axis, shared by every estimator."""

from __future__ import annotations

import numpy as np


#: dtypes X may be stored in; every sum and product with X is float64 (:func:`storage`).
STORAGE_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def storage(X: np.ndarray) -> np.ndarray:
    """X in the one layout the compiled kernels are built for: C-contiguous, float32 or
    float64 as given (any other dtype becomes float64). A copy only if X is not already
    so (a strided view, Fortran order, another dtype); each further layout would make
    numba compile every kernel again."""
    dtype = X.dtype if X.dtype in STORAGE_DTYPES else np.float64
    return np.ascontiguousarray(X, dtype=dtype)


#: Below this many entries of X (8 MB in float32) a fit runs on the calling thread alone,
#: numba kernels and BLAS alike: a pass over X then takes well under a millisecond, so
#: waking other threads (and OpenBLAS's spinning workers) costs more than they save,
#: several times more on a busy machine. Results do not depend on it.
PARALLEL_MIN_ENTRIES = 1 << 21


def worth_threads(entries: int) -> bool:
    """Whether work over ``entries`` entries of X is large enough for several threads."""
    return entries >= PARALLEL_MIN_ENTRIES


def user_chunks(t: int, chunk_size: int):
    """Slices that cover range(t) in blocks of ``chunk_size`` users."""
    for start in range(0, t, chunk_size):
        yield slice(start, min(start + chunk_size, t))


def default_chunk_size(n: int, d: int) -> int:
    """Users per chunk so that one chunk of X is about 256 MB in float64.

    It depends only on the data shape, never on the machine, so results are reproducible.
    """
    return users_per_block(n * d)


def users_per_block(floats_per_user: int, chunk_size: int | None = None,
                    block_floats: int = 1 << 25) -> int:
    """Users per block so that a per-user array of ``floats_per_user`` float64 values
    (e.g. a d x d Gram matrix) stays about ``block_floats`` per block (by default 2^25:
    256 MB), and at most ``chunk_size``."""
    size = max(1, block_floats // max(1, floats_per_user))
    return size if chunk_size is None else max(1, min(chunk_size, size))


#: A Cholesky pivot at or below this fraction of its diagonal entry marks a Gram matrix as
#: numerically singular (its regressors collinear to within ~1e-6): the compiled kernels'
#: rule (``_kernels._refit`` and ``_range_basis``, where it is a literal: numba's cache
#: would not notice a change made here), which the numpy backend's local step follows.
SINGULAR_PIVOT = 1e-12


def regular_pivots(G: np.ndarray, rel_pivot: float = SINGULAR_PIVOT) -> np.ndarray:
    """(t,) whether every Cholesky pivot of the symmetric G_i (t, m, m) is above
    ``rel_pivot`` times its diagonal entry (False for a non-finite G_i), the test of the
    kernels' ``_cholesky``, vectorized over users. Always this loop, not LAPACK's
    Cholesky where it succeeds: the two round differently near the threshold, and a
    user's verdict must not depend on the users it shares a batch with."""
    t, m, _ = G.shape
    L = np.zeros_like(G, dtype=np.float64)
    regular = np.ones(t, dtype=bool)
    with np.errstate(invalid="ignore", over="ignore"):
        for c in range(m):
            pivot = G[:, c, c] - np.einsum("tp,tp->t", L[:, c, :c], L[:, c, :c])
            regular &= pivot > rel_pivot * G[:, c, c]
            # a user already found singular carries on with pivot 1: no warnings, no NaN
            L[:, c, c] = np.sqrt(np.where(regular, pivot, 1.0))
            below = G[:, c + 1:, c] - np.einsum("tap,tp->ta", L[:, c + 1:, :c], L[:, c, :c])
            L[:, c + 1:, c] = below / L[:, c, c, None]
    return regular


def batched_solve(G: np.ndarray, h: np.ndarray, rel_pivot: float | None = None) -> np.ndarray:
    """Solve G_i x_i = h_i for a stack. G: (t, m, m) symmetric PSD, h: (t, m) -> (t, m).

    A user whose G_i is singular (a rank-deficient design) gets the minimum-norm
    (pseudo-inverse) solution; every other user keeps its exact solve, so one degenerate
    user changes no one else's result, not even by rounding. Singular means: with
    ``rel_pivot``, a Cholesky pivot at or below rel_pivot times its diagonal entry
    (:func:`regular_pivots`; the compiled kernels' rule at :data:`SINGULAR_PIVOT`);
    without, a matrix LAPACK's LU cannot factor, then an eigenvalue ratio below 1e-14.
    The pseudo-inverse drops eigenvalues below rel_pivot (or numpy's 1e-15) times the
    largest: a G_i singular by the pivot rule loses at least one (the smallest eigenvalue
    is at most the smallest pivot). A non-finite G_i or h_i gets the plain solve.
    """
    if rel_pivot is not None:
        singular = np.isfinite(G).all(axis=(1, 2)) & ~regular_pivots(G, rel_pivot)
        if singular.any():
            return _solve_split(G, h, singular, rel_pivot)
    try:
        return np.linalg.solve(G, h[..., None])[..., 0]
    except np.linalg.LinAlgError:
        pass
    eigenvalues = np.linalg.eigvalsh(G)  # (t, m), ascending
    return _solve_split(G, h, ~(eigenvalues[:, 0] > 1e-14 * eigenvalues[:, -1]), 1e-15)


def _solve_split(G, h, singular, rcond):
    """The pseudo-inverse solution (eigenvalues below rcond times the largest dropped)
    for the users ``singular``, the exact solve for the others."""
    x = np.empty_like(h)
    x[singular] = (np.linalg.pinv(G[singular], rcond=rcond, hermitian=True)
                   @ h[singular, :, None])[..., 0]
    try:  # each regular user's solve is its own LAPACK call: the same bits as alone
        x[~singular] = np.linalg.solve(G[~singular], h[~singular, :, None])[..., 0]
    except np.linalg.LinAlgError:  # an exact zero pivot the test missed
        for i in np.flatnonzero(~singular):
            try:
                x[i] = np.linalg.solve(G[i], h[i])
            except np.linalg.LinAlgError:
                x[i] = np.linalg.pinv(G[i], rcond=rcond, hermitian=True) @ h[i]
    return x


def gather_columns(X: np.ndarray, S: np.ndarray) -> np.ndarray:
    """(t, n, k) columns S_i of every X_i. X: (t, n, d), S: (t, k) int.

    Advanced indexing on the first and last axes is about 3x faster than
    ``np.take_along_axis`` here; it returns (t, k, n), transposed as a view.
    """
    return X[np.arange(X.shape[0])[:, None], :, S].transpose(0, 2, 1)


def correlations(X: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(t, d) X_i^T v_i for every user. X: (t, n, d), v: (t, n)."""
    return np.einsum("tnd,tn->td", X, v)


def project_features(X: np.ndarray, U: np.ndarray) -> np.ndarray:
    """(t, n, r) A_i = X_i U for every user, as one GEMM. X: (t, n, d), U: (d, r)."""
    t, n, d = X.shape
    return (X.reshape(-1, d) @ U).reshape(t, n, U.shape[1])


def matvec(X: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(t, n) X_i v_i for every user. X: (t, n, d), v: (t, d)."""
    return np.einsum("tnd,td->tn", X, v)
