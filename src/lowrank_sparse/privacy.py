"""User-level differential privacy: clipped Gaussian sums and their accounting.

Neighbouring relation: **add or remove one user** (with all of that user's samples).
Every release is a Gaussian mechanism on a sum over users of contributions clipped to
an L2 bound C, so adding or removing one user moves the sum by at most C (the
sensitivity) and the noise has standard deviation ``noise_multiplier * C``. The
releases are composed by dp-accounting's PLD accountant under the same relation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEIGHBOURING_RELATION = "add or remove one user (all of that user's samples)"
# dp_accounting is imported where it is used: it takes ~0.8 s, which every pipeline job
# of a non-private method would otherwise pay.


@dataclass(frozen=True)
class Release:
    """One Gaussian mechanism: what was released, its L2 clip bound (= sensitivity under
    add/remove) and noise multiplier (noise std / sensitivity)."""

    name: str
    clip: float
    noise_multiplier: float
    n_clipped: int


@dataclass(frozen=True)
class PrivacyReport:
    """What a private fit spent and how."""

    epsilon_target: float
    epsilon_spent: float
    delta: float
    noise_multiplier: float
    clip: dict
    neighbouring_relation: str
    releases: tuple
    noise_dominated: bool
    warnings: tuple


def clip_rows(V: np.ndarray, bound: float) -> tuple[np.ndarray, int]:
    """Scale every row of V (t, m) to L2 norm at most ``bound``.

    Norms are computed after scaling by the row's largest entry, so huge values do not
    overflow; a row with a non-finite entry (an overflow upstream) is zeroed, which is
    within the bound too. Returns the clipped rows and how many were scaled down.
    """
    V = np.asarray(V, dtype=np.float64)
    finite = np.all(np.isfinite(V), axis=1)
    V = np.where(finite[:, None], V, 0.0)
    peak = np.max(np.abs(V), axis=1)
    safe_peak = np.where(peak > 0, peak, 1.0)
    norm = safe_peak * np.linalg.norm(V / safe_peak[:, None], axis=1)
    # bound / norm only matters where norm > bound; elsewhere it may overflow, harmlessly.
    with np.errstate(over="ignore"):
        scale = np.where(norm > bound, bound / np.where(norm > 0, norm, 1.0), 1.0)
    clipped = V * scale[:, None]
    # Rounding can leave a scaled row a hair above the bound; shrink it onto the bound.
    over = np.linalg.norm(clipped, axis=1) > bound
    clipped[over] *= (1 - 1e-12)
    return clipped, int(np.sum(scale < 1) + np.sum(~finite))


def gaussian_sum(contributions, bound, noise_multiplier, rng) -> tuple[np.ndarray, int]:
    """Sum of clipped per-user rows plus N(0, (noise_multiplier * bound)^2) per entry.

    contributions: iterable of (t_chunk, m) arrays, one per chunk of users (so the caller
    never materializes all contributions at once). Returns (noisy sum (m,), n_clipped).
    """
    total, n_clipped = None, 0
    for block in contributions:
        clipped, c = clip_rows(block, bound)
        part = clipped.sum(axis=0)
        total = part if total is None else total + part
        n_clipped += c
    if noise_multiplier > 0:
        total = total + rng.normal(0.0, noise_multiplier * bound, size=total.shape)
    return total, n_clipped


def epsilon_spent(noise_multipliers, delta) -> float:
    """epsilon at ``delta`` of the composition of Gaussian releases with the given noise
    multipliers, by the PLD accountant (add/remove relation)."""
    multipliers = list(noise_multipliers)
    if not multipliers:
        return 0.0
    if min(multipliers) == 0:
        return float("inf")
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    accountant = PLDAccountant(dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    accountant.compose(dp_accounting.ComposedDpEvent(
        [dp_accounting.GaussianDpEvent(s) for s in multipliers]))
    return float(accountant.get_epsilon(delta))


def calibrate_noise_multiplier(epsilon, delta, n_releases) -> float:
    """Smallest noise multiplier s (to 1e-6 relative) such that ``n_releases`` Gaussian
    releases with multiplier s spend at most (epsilon, delta).

    T Gaussian mechanisms with multiplier s compose exactly into one with multiplier
    s / sqrt(T), so s = sqrt(T) * sigma(epsilon, delta) from the analytic Gaussian
    mechanism; the PLD accountant, which is what we report, then confirms that the
    spent budget is at most the target (its discretization is pessimistic, so s is
    scaled up until it does). epsilon = inf gives 0 (no noise).
    """
    if np.isinf(epsilon):
        return 0.0
    import dp_accounting

    s = np.sqrt(n_releases) * dp_accounting.get_sigma_gaussian(epsilon, delta)
    for _ in range(60):
        spent = epsilon_spent([s] * n_releases, delta)
        if spent <= epsilon:
            return float(s)
        s *= max(spent / epsilon, 1.0) * (1 + 1e-6)  # epsilon falls about like 1 / s
    raise RuntimeError(f"could not calibrate noise for epsilon={epsilon}, delta={delta}")
