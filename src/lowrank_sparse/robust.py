"""User-level weights for the robust U step of AMHT-LRS.

The local step is non-convex; below its sample-complexity threshold some users land on
a wrong support. Their target y_i - X_i b_i then carries a sparse vector outside
span(U*) of size O(1), and a plain least-squares U step spreads that error over every
user: U is biased and, noiseless, stalls at a distance that grows with the fraction of
such users. A wrong support shows in the residual: with n > r + k samples a
well-fitted user's residual is noise-sized (noiseless: of the size of the error of U),
a mis-fitted one keeps an O(1) part. Each rule maps the users' squared residual norms
after the local step to weights in [0, 1] for the U step (one IRLS reweighting per
outer iteration).

- :class:`Huber` (the default) bounds a user's influence; right when most users are
  well fitted, and with label noise it is standard Huber regression.
- :class:`Trimmed` drops users inconsistent with the best-fitted ones; needed when most
  users are mis-fitted (then the median residual is a mis-fitted one and Huber's bound
  does not separate them), e.g. d=100, n=20, r=k=5, where even the true U lets the local
  step fit only 9% of users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special


@dataclass(frozen=True)
class Huber:
    """omega_i = min(1, c * median_j rho_j / rho_i), rho_i the residual norm: Huber's
    loss applied to whole users.

    Well-fitted users' residuals shrink with the error of U, so the bound shrinks with
    it and the noiseless fixed point U* is kept exactly, while mis-fitted users (residual
    O(1)) get weights that go to zero geometrically. Needs most users well fitted.
    """

    c: float = 3.0

    def __post_init__(self):
        if not (np.isfinite(self.c) and self.c > 0):
            raise ValueError(f"Huber c must be a finite number > 0; got {self.c!r}")

    def weights(self, residual, dof, sparse_share=0.0) -> np.ndarray:
        rho = np.sqrt(np.maximum(residual, 0.0))
        cut = self.c * np.median(rho)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(rho > cut, cut / rho, 1.0)


@dataclass(frozen=True)
class Trimmed:
    """omega_i = 1 if user i's residual is consistent with a well-fitted user, else 0.

    A well-fitted user's squared residual is modelled as s^2 chi^2_dof (dof = n - r - k;
    s the label noise, or noiseless the error of U). s is estimated from the
    ``fraction``-quantile of all users' squared residuals, assuming at least that
    fraction of users is well fitted (if more are, s is overestimated, which only keeps
    more users); users above the ``keep``-quantile of s^2 chi^2_dof get weight 0.

    Limitation: noiseless, with most users well fitted, residuals are a scale mixture
    (they depend on how user i's w_i meets the error of U) whose lower tail is heavy;
    the low quantile then underestimates s, the step keeps only users that carry no
    information on the error of U, and U can stall near (not at) U*. Use :class:`Huber`
    there.
    """

    fraction: float = 0.05
    keep: float = 0.999

    def __post_init__(self):
        for name in ("fraction", "keep"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise ValueError(f"Trimmed {name} must be in (0, 1); got {value!r}")

    def weights(self, residual, dof, sparse_share=0.0) -> np.ndarray:
        if dof < 1:  # n = r + k: every user fits exactly, the residual says nothing
            return np.ones_like(residual)
        rho2 = np.maximum(residual, 0.0)
        scale2 = np.quantile(rho2, self.fraction) / _chi2_quantile(self.fraction, dof)
        cut2 = scale2 * _chi2_quantile(self.keep, dof)
        return (rho2 <= cut2).astype(float)


@dataclass(frozen=True)
class Adaptive:
    """Keep the cluster of well-fitted users, whatever its share (draft)."""

    fraction: float = 0.05
    support_factor: float = 5.0
    keep: float = 0.999
    power: float = 2.0
    spread: float = 0.25
    gap: float = 1.0
    share: float = 0.01

    def __post_init__(self):
        for name in ("fraction", "keep", "share"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise ValueError(f"Adaptive {name} must be in (0, 1); got {value!r}")
        for name in ("support_factor", "power", "spread", "gap"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"Adaptive {name} must be a finite number > 0; got {value!r}")

    def weights(self, residual, dof, sparse_share=0.0) -> np.ndarray:
        rho2 = np.maximum(residual, 0.0)
        if dof < 1:  # n = r + k: every user fits exactly, the residual says nothing
            return np.ones_like(rho2)
        cut2, keep2, softness = self.thresholds(rho2, dof, sparse_share)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            tail = (np.minimum(cut2 / rho2, 1.0) ** (self.power / (2 * softness))
                    if softness > 0 else 0.0)
            return np.where(rho2 > keep2, tail, 1.0)

    def thresholds(self, rho2, dof, sparse_share=0.0):
        """(cut2, keep2, softness): the chi^2 cut on the squared residuals, the edge of
        the well-fitted cluster (the middle of the first gap above cut2, else cut2) and
        the softness of the tail above it (1: noiseless scale mixture, 0: chi^2)."""
        t = rho2.size
        f = self.fraction
        low, mid = np.quantile(rho2, [f / 4, f])
        with np.errstate(divide="ignore", invalid="ignore"):
            excess = (np.log10(mid / low)
                      - np.log10(_chi2_quantile(f, dof) / _chi2_quantile(f / 4, dof)))
        softness = float(np.clip(np.nan_to_num(excess / self.spread, nan=1.0), 0.0, 1.0)) ** 2
        shared = sparse_share + self.support_factor * np.sqrt(sparse_share / t)
        anchor = min(0.5, max(f, shared))
        if anchor > f:
            mid = np.quantile(rho2, anchor)
        cut2 = mid / _chi2_quantile(anchor, dof) * _chi2_quantile(self.keep, dof)
        if not cut2 > 0:
            return cut2, cut2, softness
        with np.errstate(divide="ignore"):
            decades = np.log10(rho2 / cut2)
        top = decades.max()
        if not top > self.gap:
            return cut2, cut2, softness
        n_bins = int(np.ceil(top / _BIN)) + 1
        counts = np.histogram(decades, bins=n_bins, range=(0.0, n_bins * _BIN))[0]
        above = np.concatenate([np.cumsum(counts[::-1])[::-1], [0]])  # users in bins >= j
        g = int(round(self.gap / _BIN))
        in_gap, beyond = above[:n_bins + 1 - g] - above[g:], above[g:]
        found = (in_gap <= self.share * t) & (beyond >= self.share * t)
        if not found.any():
            return cut2, cut2, softness
        return cut2, cut2 * 10.0 ** (_BIN * np.argmax(found) + self.gap / 2), softness


_BIN = 0.05  # histogram bin, decades of the squared residual


def _chi2_quantile(q, dof):
    """The q-quantile of chi^2_dof (scipy.special, not scipy.stats: the latter adds ~0.4 s
    to every pipeline job's import)."""
    return special.chdtri(dof, 1.0 - q)


def check_robust(robust):
    """robust must be a weighting rule of this module or None (plain least squares)."""
    if robust is not None and not isinstance(robust, (Adaptive, Huber, Trimmed)):
        raise ValueError(
            f"robust must be Adaptive(), Huber(c), Trimmed(fraction) or None; got {robust!r}")
    return robust
