"""Metrics of a fit against the ground truth or held-out data."""

from __future__ import annotations

import numpy as np


def principal_sine(U_ref, U) -> float:
    """Sine of the largest principal angle between span(U_ref) and span(U).

    Both (d, r) with orthonormal columns. Computed as ||(I - U_ref U_ref^T) U||_2, which
    is accurate for tiny angles (unlike sqrt(1 - cos^2)).
    """
    residual = U - U_ref @ (U_ref.T @ U)
    return float(np.linalg.norm(residual, 2))


def subspace_distance(U_true, U, *, norm="spectral") -> float:
    """||(I - U* U*^T) U||, spectral (sine of the largest principal angle) or Frobenius.

    U is orthonormalized first, so any basis of the fitted subspace gives the same value.
    U_true, U: (d, r).
    """
    Q = np.linalg.qr(np.asarray(U, dtype=float))[0]
    P = np.linalg.qr(np.asarray(U_true, dtype=float))[0]
    residual = Q - P @ (P.T @ Q)
    if norm == "spectral":
        return float(np.linalg.norm(residual, 2))
    if norm == "fro":
        return float(np.linalg.norm(residual))
    raise ValueError(f"norm must be 'spectral' or 'fro'; got {norm!r}")


def per_user_relative_error(theta_true, theta) -> np.ndarray:
    """(t,) ||theta_i - theta*_i|| / ||theta*_i|| (absolute error where theta*_i = 0)."""
    err = np.linalg.norm(np.asarray(theta) - theta_true, axis=1)
    scale = np.linalg.norm(theta_true, axis=1)
    return err / np.where(scale > 0, scale, 1.0)


def relative_error(theta_true, theta) -> float:
    """||Theta - Theta*||_F / ||Theta*||_F over all users."""
    return float(np.linalg.norm(np.asarray(theta) - theta_true) / np.linalg.norm(theta_true))


def success_rate(theta_true, theta, tol=1e-3) -> float:
    """Fraction of users whose relative error is <= tol."""
    return float(np.mean(per_user_relative_error(theta_true, theta) <= tol))


def support_precision_recall(B_true, B) -> tuple[float, float]:
    """Precision and recall of the fitted supports, pooled over users (t, d) -> (p, r)."""
    true, found = np.asarray(B_true) != 0, np.asarray(B) != 0
    hits = np.sum(true & found)
    n_found, n_true = np.sum(found), np.sum(true)
    precision = float(hits / n_found) if n_found else 1.0
    recall = float(hits / n_true) if n_true else 1.0
    return precision, recall


def per_user_test_mse(theta, X_test, y_test) -> np.ndarray:
    """(t,) mean squared prediction error of each user on held-out samples.
    theta: (t, d), X_test: (t, m, d), y_test: (t, m)."""
    pred = (X_test @ np.asarray(theta)[..., None])[..., 0]
    return np.mean((pred - y_test) ** 2, axis=1)


def n_50(n_values, success, level=0.5) -> float:
    """Smallest n at which ``success`` reaches ``level``, linearly interpolated on the grid.

    n_values: increasing grid; success: success rate at each n. Returns NaN when the
    level is never reached, and the first n when it is reached there already.
    """
    n_values = np.asarray(n_values, dtype=float)
    success = np.asarray(success, dtype=float)
    order = np.argsort(n_values)
    n_values, success = n_values[order], success[order]
    above = np.nonzero(success >= level)[0]
    if above.size == 0:
        return float("nan")
    j = above[0]
    if j == 0:
        return float(n_values[0])
    n0, n1, s0, s1 = n_values[j - 1], n_values[j], success[j - 1], success[j]
    return float(n0 + (level - s0) * (n1 - n0) / (s1 - s0))
