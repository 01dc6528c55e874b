"""User-level weights for the robust U step of AMHT-LRS.

The local step is non-convex; below its sample-complexity threshold some users land on
a wrong support. Their target y_i - X_i b_i then carries a sparse vector outside
span(U*) of size O(1), and a plain least-squares U step spreads that error over every
user: U is biased and, noiseless, stalls at a distance that grows with the fraction of
such users. A wrong support shows in the residual: with n > r + k samples a
well-fitted user's residual is noise-sized (noiseless: of the size of the error of U),
a mis-fitted one keeps an O(1) part. Each rule maps the users' squared residual norms
after the local step to weights in [0, 1] for the U step (one IRLS reweighting per
outer iteration); ``weights(residual, dof, sparse_share)`` with dof = n - r - k and
sparse_share = k / d.

``robust="auto"`` (the default of AMHT-LRS) picks Adaptive or Huber from the number of
samples per user (:func:`default_rule`).

- :class:`Adaptive` (the default below ~3 (r + k ln(d/k)) samples per user) keeps the
  cluster of well-fitted users whatever its
  share, from 100% down to about 10% (2 k / d at small d), given enough of them (about
  22 d r samples of well-fitted users), and drops the rest.
- :class:`Huber` bounds a user's influence at c times the median residual: right when
  most users are well fitted, wrong when the median user is mis-fitted.
- :class:`Trimmed` keeps users consistent with the best-fitted 5%: right when few are
  well fitted and t is large, but it stalls when the best-fitted users carry no
  information on the error of U.

Every rule is a function of the user's own residual and a few aggregates of all users'
residuals (listed in each class), so a private variant can release those aggregates
through its accountant and keep the per-user invariant. DP-AMHT-LRS does not use these
rules: its U step bounds each user's influence by clipping its gradient (a per-user
rule), and a weight from exact cross-user quantiles would break its guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Huber:
    """omega_i = min(1, c * median_j rho_j / rho_i), rho_i the residual norm: Huber's
    loss applied to whole users.

    Well-fitted users' residuals shrink with the error of U, so the bound shrinks with
    it and the noiseless fixed point U* is kept exactly, while mis-fitted users (residual
    O(1)) get weights that go to zero geometrically. Needs most users well fitted: when
    the median user is mis-fitted every mis-fitted user keeps a weight near 1 (measured,
    noiseless d=50, r=k=2, n=8, t=4000, where the true U fits 36% of users: U stalls at
    distance 0.07 with nobody recovered; started 0.05 from U* it drifts to 0.26).
    Aggregate: the median residual.
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
    information on the error of U, and U can stall near (not at) U* (measured,
    noiseless d=50, r=k=2, t=400, n=32, every user well fitted, from the moment
    initialization alone: distance 1.3e-6 after 100 iterations, where Huber is exact in
    16). With few users the best-fitted 5% can also be users whose sparse part absorbs
    an error of U (see :class:`Adaptive`): d=25, t=125, n=24, it stalls in 4 of 5 seeds.
    Aggregate: the ``fraction``-quantile of the squared residuals.
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
    """Keep the cluster of well-fitted users, whatever its share; drop the rest.

    With rho_i^2 user i's squared residual,

        omega_i = 1                                        if rho_i^2 <= keep2,
        omega_i = (cut2 / rho_i^2)^(power / (2 softness))  otherwise (0 if softness = 0),

    from three aggregates of all users' residuals:

    - **cut2**, the chi^2 cut: a well-fitted user's squared residual is s^2 chi^2_dof; s
      is estimated from the ``anchor``-quantile of all squared residuals and cut2 is
      the ``keep``-quantile of s^2 chi^2_dof (as in :class:`Trimmed`). The anchor is
      ``fraction`` (5%), raised to k/d + ``support_factor`` sqrt(k/d / t) (about the
      largest share of users whose supports contain one given coordinate): a U whose
      error points along a coordinate axis fits those users exactly (their sparse part
      absorbs it), and a scale anchored among them makes U lock onto that error
      (measured: noiseless d=25, t=125, n=24, r=k=2, where the true U fits 98-100% of
      users: with the 5% anchor U stalls at distance 2e-7 to 1e-3 in 5 of 5 seeds, with
      up to 14 users sharing one coordinate fitted to 1e-19; with this anchor, 21%
      there, 5 of 5 are exact).
    - **keep2**, the edge of the well-fitted cluster: the middle of the first gap of
      ``gap`` decades (10x) above cut2 that holds at most ``share`` (1%) of the users
      with at least as many beyond it, found on a histogram of log10(rho^2 / cut2)
      (bins of 0.05 decades); cut2 if there is none. Noiseless, well-fitted residuals
      shrink with the error of U while mis-fitted ones stay O(1), so once U is near U*
      the gap opens and everything below it is kept, everything above dropped, whether
      the cluster is 95% or 30% of the users (measured at d=50, n=8, 37% well fitted, U
      at distance 1e-3: 99.9% of the well-fitted users kept, no mis-fitted one; a
      scale from a low quantile alone keeps 86%, and the users it drops are those that
      see the error of U most).
    - **softness**, how far the cluster extends above cut2: from the excess
      log10-spread of the ``fraction``- and 4 ``fraction``-quantiles over that of
      chi^2_dof, softness = clip(2 excess / ``spread`` - 1, 0, 1), i.e. 0 up to an
      excess of 0.125 decades and 1 from 0.25 on. With label noise the cluster is
      chi^2 (excess within +-0.05 decades for dof 2..28 and 300 users or more) and the
      cut is hard: users above it are mis-fitted. Noiseless, residuals are a scale
      mixture (they grow with how w_i meets the error of U; chi^2_dof chi^2_1: excess
      0.6-1.2 decades) whose upper part lies above cut2 yet carries the information on
      the error of U: the tail ``power`` = 2 gives each such user about the same weight
      in the U step (omega_i rho_i^2 ~ cut2), and the mis-fitted users' weights still
      vanish with the error of U, so U* stays an exact fixed point. (The quantiles are
      no lower than ``fraction`` so that a few hundred users estimate them.)

    In overlap (U far from U*, no gap yet) the rule trims to the lowest residuals like
    :class:`Trimmed`, with a soft tail; that is what lets U approach U* when most users
    are mis-fitted. It needs a start near enough: :func:`~lowrank_sparse.amht.amht_lrs`
    refines the moment initialization by a low-rank warm-up first (without it d=50,
    n=8, t=4000 stalls at 0.13).

    Measured with ``benchmarks/bench_robust.py`` (results in ``benchmarks/results/
    robust_*.{csv,md}``; noiseless, r=k=2 unless said; every rule from the moment
    initialization and the low-rank warm-up, on the same data; KS: KnownSubspace, the
    local step with the true U from greedy starts, i.e. the per-user floor):

    - d=50, n=8 (KS fits 35-38% of users), 3 seeds (``--headline 4000 16000 --seeds
      3``): t=4000: distance 1.0-1.2e-10, users recovered 36-41% (1.00-1.10x KS);
      t=16000: 0.7-1.1e-10, 37-38% (1.04-1.05x KS). ``Huber()`` stalls at 0.05-0.07 and
      0.03-0.04 with at most 0.06% recovered; ``Trimmed()`` is exact too, in 50-70
      iterations against Adaptive's 34-47.
    - Dimension sweep, t n = 60 d r, n = 6..24, 5 seeds (``--d 25 50 100 200 --n 6 7 8 9
      10 11 12 14 16 24 --seeds 5``): n_50 7.83, 8.82, 9.76, 10.46 against KS 7.93,
      8.82, 9.84, 10.98 at d = 25, 50, 100, 200 (ratio 0.95-1.00); above n_50 AMHT-LRS
      recovers more users than KS in every cell (warm starts act as restarts).
    - Where it fails: the rule needs enough well-fitted users, about KS t n >= 22 d r
      samples of theirs (at t n = 60 d r: KS >= 0.37). Below, in every seed: d=50, n=8,
      t=750 (KS 35%); d=100, n=8 (23%); d=200, n=9, t=2667 (25%); and d=100, n=9,
      t=1334 (KS 38%) in 2 of 5 seeds. With more users the same n works (d=50, n=8:
      t=750 fails, t=4000 is exact).
    - d=100, n=20, r=k=5, t=1e5 (KS about 9%; ``bench_million.py --t 100000
      --robust RULE``): Adaptive 7.5e-11, 9.0% recovered, 38 iterations; Trimmed
      9.6e-11, 9.6%, 33; Huber stalls at 0.025 with nobody recovered. (Main's code,
      Trimmed without the warm-up: 8.8e-11, 11.7%, 41: more users recovered there.)
    - d=25, n=24, t=125, seeds as in the sweep (about 10 users share each coordinate of
      the supports; the anchor above): Adaptive and Huber exact (<= 8e-10) in 5/5
      seeds, Trimmed (the 5% anchor) stalls at 1.6e-5 to 6e-3 in 4/5.
    - Above the threshold (``--regression``; d=50, n=32, t=400, 5 seeds): noiseless
      exact in 5/5 seeds as Huber; label noise 0.1: median test MSE 0.01136 against
      0.01135 for Huber (1.0009x; per seed within 0.12%) and for main's code. Fit time
      (d=50, n=32, t=20000, ``--warmup-cost``, CPU seconds, interleaved in one process,
      machine shared): 3.18 s against 3.10 for Huber without the warm-up (main's
      default), 12 iterations against 13; the rule itself costs no measurable time.
      d=100, n=20, r=k=5, t=1e5, one run each (load 5-7): 77 s, 38 iterations against
      71 s, 41 iterations for main's ``bench_million.py`` (Trimmed, no warm-up).

    Below about twice the anchor (e.g. 10% well fitted at d=25) the anchor is a
    mis-fitted user and the rule cannot work; :class:`Trimmed` with a smaller fraction
    may, at large t.

    Aggregates (everything else is per user): the ``fraction``-, 4 ``fraction``- and
    anchor-quantiles of the squared residuals and the histogram of their log10 relative
    to cut2, besides the constants dof, k/d and t. All can be read off one histogram of
    log10 rho_i^2 on a fixed grid, a standard noisy release for a private variant.
    """

    fraction: float = 0.05
    support_factor: float = 5.0
    keep: float = 0.999
    power: float = 2.0
    spread: float = 0.25
    gap: float = 1.0
    share: float = 0.01

    def __post_init__(self):
        for name, high in (("fraction", 0.25), ("keep", 1), ("share", 1)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < high):
                raise ValueError(f"Adaptive {name} must be in (0, {high}); got {value!r}")
        for name in ("support_factor", "power", "spread", "gap"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"Adaptive {name} must be a finite number > 0; got {value!r}")

    def weights(self, residual, dof, sparse_share=0.0) -> np.ndarray:
        rho2 = np.maximum(residual, 0.0)
        if dof < 1:  # n = r + k: every user fits exactly, the residual says nothing
            return np.ones_like(rho2)
        cut2, keep2, softness = self.thresholds(rho2, dof, sparse_share)
        if not (cut2 > 0 and softness > 0):
            return (rho2 <= keep2).astype(float)
        with np.errstate(divide="ignore"):
            omega = np.divide(cut2, rho2)  # in place from here: t can be 1e6 users
        np.minimum(omega, 1.0, out=omega)
        if self.power != 2 * softness:
            np.power(omega, self.power / (2 * softness), out=omega)
        if keep2 > cut2:
            omega[rho2 <= keep2] = 1.0
        return omega

    def thresholds(self, rho2, dof, sparse_share=0.0):
        """(cut2, keep2, softness): the chi^2 cut on the squared residuals, the edge of
        the well-fitted cluster (the middle of the first gap above cut2, else cut2) and
        the softness of the tail above it (1: noiseless scale mixture, 0: chi^2).

        Computed from at most ``_SAMPLE`` users, evenly spaced (a quantile or a share of
        users needs no more; the rule then costs O(t) only in the per-user formula)."""
        t = rho2.size
        rho2 = rho2[::-(-t // _SAMPLE)]
        f = self.fraction
        low, high = np.quantile(rho2, [f, 4 * f])
        with np.errstate(divide="ignore", invalid="ignore"):
            excess = (np.log10(high / low)
                      - np.log10(_chi2_quantile(4 * f, dof) / _chi2_quantile(f, dof)))
        # chi^2: excess within +-0.1 decades down to 300 users; a scale mixture: 0.16 up
        softness = float(np.clip(np.nan_to_num(2 * excess / self.spread - 1, nan=1.0),
                                 0.0, 1.0))
        shared = sparse_share + self.support_factor * np.sqrt(sparse_share / t)
        anchor = min(0.5, max(f, shared))
        mid = low if anchor == f else np.quantile(rho2, anchor)
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
        found = (in_gap <= self.share * rho2.size) & (beyond >= self.share * rho2.size)
        if not found.any():
            return cut2, cut2, softness
        return cut2, cut2 * 10.0 ** (_BIN * np.argmax(found) + self.gap / 2), softness


_BIN = 0.05  # histogram bin, decades of the squared residual
_SAMPLE = 2**15  # users the aggregates of Adaptive are computed from (at most)


def _chi2_quantile(q, dof):
    """The q-quantile of chi^2_dof (scipy.special, imported here: ~0.25 s that a pipeline
    job of a method without robust weights need not pay; not scipy.stats: ~0.4 s more)."""
    from scipy import special

    return special.chdtri(dof, 1.0 - q)


#: ``robust="auto"`` takes Adaptive below this many times r + k ln(d / k) samples per
#: user, Huber from there on (:func:`default_rule`).
ADAPTIVE_BELOW = 3.0


def default_rule(n, d, rank, sparsity):
    """The rule ``robust="auto"`` resolves to for users with n samples (per iteration).

    Adaptive where users can be mis-fitted, n < ``ADAPTIVE_BELOW`` (r + k ln(d/k)), and
    Huber above, where every user is well fitted and Adaptive's tail (weights ~ 1/rho^2
    for the scale mixture of well-fitted residuals) slows the contraction. Measured
    (noiseless, 2 seeds, outer iterations to 1e-10, Adaptive / Huber): d=50, t=400, r=k=2,
    n=400: 51-100 (distance 8e-8 at 100) / 9-10; d=20, t=300, r=2, k=2, n=32 (threshold
    26.4): 100 (1e-9, 3e-8) / 18; d=20, k=1, n=64: 37-100 (6e-5) / 12-13. Below the
    threshold Huber stalls (d=50, n=8, t=4000: 0.05-0.07) and Adaptive is exact; at n=32
    to 48, d=50 and 100, r=k=2, both are exact in 11-19 iterations. The factor 3 (not 4):
    the full grid's phase transition at d=50, t=400 had Adaptive fits at 100 iterations
    and 9e-8 to 2e-7 at (r, k) = (4, 4) and (2, 6), n=48 (4 (r + k ln(d/k)) = 56 and 59),
    where Huber is exact in 21-22 iterations (3 seeds; also n=44 and 56, and r=k=5, n=48).
    """
    log_term = sparsity * np.log(d / sparsity) if sparsity > 0 else 0.0
    return Adaptive() if n < ADAPTIVE_BELOW * (rank + log_term) else Huber()


def check_robust(robust):
    """robust must be a weighting rule of this module, "auto" or None (plain least
    squares)."""
    if (robust is not None and not isinstance(robust, (Adaptive, Huber, Trimmed))
            and not (isinstance(robust, str) and robust == "auto")):
        raise ValueError(f"robust must be 'auto', Adaptive(), Huber(c), Trimmed(fraction) "
                         f"or None; got {robust!r}")
    return robust
