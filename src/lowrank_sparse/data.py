"""The realizable model theta_i = U w_i + b_i and Gaussian samples from it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._linalg import STORAGE_DTYPES, user_chunks, users_per_block
from ._validation import check_int, check_positive


@dataclass(frozen=True)
class Problem:
    """Ground truth of one synthetic instance.

    Attributes
    ----------
    U : (d, r) orthonormal columns, the shared subspace.
    W : (t, r) users' coordinates in the subspace.
    B : (t, d) users' sparse corrections, ``k`` non-zeros per row.
    """

    U: np.ndarray
    W: np.ndarray
    B: np.ndarray

    @property
    def theta(self) -> np.ndarray:
        """(t, d) user parameters W U^T + B."""
        return self.W @ self.U.T + self.B

    @property
    def support(self) -> np.ndarray:
        """(t, d) boolean mask of the non-zeros of B."""
        return self.B != 0

    @property
    def d(self) -> int:
        return self.U.shape[0]

    @property
    def r(self) -> int:
        return self.U.shape[1]

    @property
    def t(self) -> int:
        return self.W.shape[0]

    @property
    def k(self) -> int:
        return int(self.support.sum(axis=1).max(initial=0))


@dataclass(frozen=True)
class Data:
    """Training and held-out samples. X: (t, n, d), y: (t, n); X_test: (t, n_test, d)."""

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def make_problem(d, t, r, k, *, rng=None, lowrank_scale=1.0, sparse_scale=1.0,
                 sparse_spread=0.5) -> Problem:
    """Draw a ground truth theta_i = U w_i + b_i.

    Parameters
    ----------
    d, t, r, k : int
        Dimension, number of users, rank (1 <= r < d) and non-zeros per user (0 <= k <= d).
    rng : None, int or numpy.random.Generator
        Passed through ``numpy.random.default_rng``.
    lowrank_scale : float, default 1.0
        w_i ~ N(0, lowrank_scale^2 I_r).
    sparse_scale : float, default 1.0
        Magnitude of the non-zeros of b_i: uniform on
        ``sparse_scale * [1 - sparse_spread, 1 + sparse_spread]`` with a random sign,
        so they are bounded away from zero and support recovery is meaningful.
    sparse_spread : float in [0, 1), default 0.5

    Returns
    -------
    Problem
    """
    d = check_int("d", d, low=2)
    t = check_int("t", t, low=1)
    r = check_int("r", r, low=1, high=d, high_inclusive=False)
    k = check_int("k", k, low=0, high=d)
    lowrank_scale = check_positive("lowrank_scale", lowrank_scale)
    sparse_scale = check_positive("sparse_scale", sparse_scale)
    if not 0 <= sparse_spread < 1:
        raise ValueError(f"sparse_spread must be in [0, 1); got {sparse_spread}")
    rng = np.random.default_rng(rng)
    U, _ = np.linalg.qr(rng.standard_normal((d, r)))
    W = lowrank_scale * rng.standard_normal((t, r))
    B = np.zeros((t, d))
    if k > 0:
        # k distinct coordinates per user: the k smallest of d uniform keys.
        support = np.argpartition(rng.random((t, d)), k - 1, axis=1)[:, :k]
        magnitude = sparse_scale * rng.uniform(1 - sparse_spread, 1 + sparse_spread, (t, k))
        sign = rng.choice([-1.0, 1.0], size=(t, k))
        np.put_along_axis(B, support, sign * magnitude, axis=1)
    return Problem(U=U, W=W, B=B)


def sample_data(problem: Problem, n, *, noise=0.0, n_test=100, rng=None,
                dtype="float64") -> Data:
    """Draw Gaussian samples x ~ N(0, I_d), y = <x, theta_i> + noise * z for every user.

    Parameters
    ----------
    problem : Problem
    n : int
        Training samples per user.
    noise : float, default 0.0
        Standard deviation sigma of the label noise.
    n_test : int, default 100
        Held-out samples per user (for test MSE).
    rng : None, int or numpy.random.Generator
    dtype : "float64" or "float32", default "float64"
        Storage of X and X_test. "float32" halves their memory (a million users' X at
        n=40, d=100 is 16 GB instead of 32 GB): X is drawn in float32 directly, a block
        of users at a time, never as a float64 array, and y is computed in float64 from
        X as stored, so the model holds exactly for the stored data. numpy draws float32
        normals by their own algorithm: the float32 data are a different draw, not the
        float64 data rounded.

        When float32 storage is safe (fits compute in float64 either way; measured with
        ``benchmarks/bench_float32.py``, d=50, t=400, r=k=2, n=32, 5 seeds): rounding
        X to float32 (relative error 6e-8) acts as label noise of about 1e-7 of the
        signal, so it is safe whenever the accuracy you need, or the noise in y, is
        above ~1e-6. Data made in float32, as here, are exact for the stored values and
        fit as float64 does (noiseless distance 1.6e-11 against 1.8e-11, medians; all
        users recovered, 99.8 % in one seed's float32 draw). float64 data rounded to
        float32 stall noiseless fits at distance ~5e-9 instead of ~1e-11 (users still
        recovered to 1e-3); at noise 0.1 the
        distance (6.9e-3) and the median test MSE (0.011388) do not change. Keep
        float64 only to verify noiseless recovery below ~1e-8 on float64 data.

    Returns
    -------
    Data with X (t, n, d), y (t, n), X_test (t, n_test, d), y_test (t, n_test); y and
    y_test are float64.
    """
    n = check_int("n", n, low=1)
    n_test = check_int("n_test", n_test, low=0)
    noise = check_positive("noise", noise, allow_zero=True)
    if np.dtype(dtype) not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be float64 or float32; got {dtype!r}")
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(rng)
    theta = problem.theta

    def draw(m):
        # Block by block of users: the same numbers as one draw of the whole array.
        X = np.empty((problem.t, m, problem.d), dtype=dtype)
        blocks = list(user_chunks(problem.t, users_per_block(m * problem.d)))
        for sl in blocks:
            rng.standard_normal(X[sl].shape, dtype=dtype, out=X[sl])
        y = noise * rng.standard_normal((problem.t, m))
        for sl in blocks:  # float64 sums of the float32 X, without a float64 copy
            y[sl] += np.einsum("tmd,td->tm", X[sl], theta[sl])
        return X, y

    X, y = draw(n)
    X_test, y_test = draw(n_test)
    return Data(X=X, y=y, X_test=X_test, y_test=y_test)
