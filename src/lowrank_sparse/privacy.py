"""User-level differential privacy: clipped Gaussian sums, their ledger and accounting.

Neighbouring relation: **add or remove one user** (with all of that user's samples).
Every release is a Gaussian mechanism on a sum over users of contributions clipped to
an L2 bound C, so adding or removing one user moves the sum by at most C (the
sensitivity) -- provided each user's contribution is a function of that user's own data
and of earlier releases only (the per-user invariant of :mod:`lowrank_sparse.dp_amht`,
checked by :func:`sensitivity_audit`) -- and the noise has standard deviation
``noise_multiplier * C``.

Accounting. Every release goes through :class:`GaussianSumMechanism`, which noises the
sum and writes the release into its ledger in the same step, so nothing is released
without being accounted. The ledger's Gaussian mechanisms, with multipliers s_j,
compose *exactly* into one Gaussian mechanism with multiplier (sum_j s_j^-2)^(-1/2)
(Gaussian privacy-loss distributions are closed under composition; Dong, Roth and Su
2022), whose (epsilon, delta) dp-accounting computes in closed form (the analytic
Gaussian mechanism, Balle and Wang 2018). This is the number dp-accounting's PLD
accountant converges to as its discretization shrinks (tested), without the PLD's grid,
whose size grows with epsilon (epsilon = 1000 took 103 s and 1.6 GB; 1e6 ran out of
memory): calibration here takes milliseconds for any epsilon.

The noise generator is numpy's PCG64, a simulation generator: fine for research and
audits, not a cryptographically secure source for a deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

NEIGHBOURING_RELATION = "add or remove one user (all of that user's samples)"
#: The smallest normal float64 (~2.2e-308): below it floats have fewer significant bits.
SMALLEST_NORMAL = float(np.finfo(float).tiny)
#: Smallest delta the accountant is trusted with: the smallest normal float. Below it
#: the Gaussian tail probabilities behind delta are subnormal and lose their precision.
MIN_DELTA = SMALLEST_NORMAL
# dp_accounting is imported where it is used: it takes ~0.8 s, which every pipeline job
# of a non-private method would otherwise pay.


@dataclass(frozen=True)
class Release:
    """One Gaussian mechanism: what was released (``name``, outer ``iteration``; 0 for
    the initialization), its L2 clip bound (= sensitivity under add/remove) and noise
    multiplier (noise std / sensitivity). Public: it depends on no user's data."""

    name: str
    iteration: int
    clip: float
    noise_multiplier: float


@dataclass(frozen=True)
class PrivacyReport:
    """What a private fit spent and how; every field is public (derived from the budget,
    the clip bounds and released values only)."""

    epsilon_target: float
    epsilon_spent: float
    delta: float
    noise_multiplier: float
    clip: dict
    neighbouring_relation: str
    releases: tuple
    noise_dominated: bool
    warnings: tuple


#: Contributions are clipped to (1 - CLIP_MARGIN) times the bound, so that the rounding of
#: a norm as computed (relative error ~(m + n) 1e-16 for the contributions here, below
#: 1e-10 up to sizes of 1e4 x 1e4) cannot leave one above the bound. (It does not cover
#: the rounding of the sum over t users, which can move a sum by ~t 1e-16 of the bound
#: more between neighbours: measured 2.8e-8 at t = 1e6 with all users at the bound and
#: aligned; the guarantee is stated for exact sums, as is usual.)
CLIP_MARGIN = 1e-9
#: Clip bounds must lie in this range: far from float64's limits, so that what underflows
#: in a clipped contribution (terms below the smallest normal float, ~2e-308) is far
#: below the margin, and t contributions at the bound cannot overflow.
CLIP_RANGE = (1e-100, 1e100)


def check_clip(name: str, value) -> float:
    """A clip bound: a real number in :data:`CLIP_RANGE`, or ValueError naming ``name``."""
    from ._validation import check_positive

    value = check_positive(name, value, allow_inf=True)
    low, high = CLIP_RANGE
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}] (far from float64's "
                         f"limits, where clipping would lose its precision); got {value!r}")
    return value


def flush_subnormals(a: np.ndarray) -> np.ndarray:
    """a with entries of magnitude below :data:`SMALLEST_NORMAL` set to 0, in place: a
    weight folded into a factor that becomes subnormal could otherwise round the
    contribution above its bound."""
    a[np.abs(a) < SMALLEST_NORMAL] = 0.0
    return a


class Contributions(Protocol):
    """t per-user contributions to a sum, rows of m floats, that need not exist as rows.

    The privacy of a release rests on two properties each implementation must have
    (tested for each in tests/test_privacy.py): ``norms()[i]`` is the L2 norm of row i
    (to a relative error far below :data:`CLIP_MARGIN`; inf where it overflows), and
    ``weighted_sum(w)`` is sum_i w_i row_i, in which a user with weight 0 contributes
    exactly nothing and no user's realized term has a norm above w_i norms()[i] by more
    than rounding: where a weight is folded into a factor of the row, a factor that
    becomes subnormal is flushed to 0 (:func:`flush_subnormals`), which may only shrink
    the term. ``rows()`` forms the rows (for audits).
    """

    n_users: int

    def norms(self) -> np.ndarray: ...

    def weighted_sum(self, weights: np.ndarray) -> np.ndarray: ...

    def rows(self) -> np.ndarray: ...


def row_norms(V: np.ndarray) -> np.ndarray:
    """L2 norms of the rows of V (t, m); inf for a row with a non-finite entry.

    Rows whose sum of squares over- or underflows (entries beyond ~1e150 or below
    ~1e-145) are scaled by their largest entry first, so their norms are accurate to
    rounding, unless a norm is itself below the normal floats (:func:`_row_norm_factors`
    keeps such a norm's precision for products).
    """
    scale, rest = _row_norm_factors(V)
    with np.errstate(over="ignore", invalid="ignore"):
        norm = scale * rest
    return np.where(np.isfinite(norm), norm, np.inf)


def _row_norm_factors(V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale, rest) with the rows' L2 norms = scale * rest: scale 1 where the sum of
    squares neither over- nor underflows, else the row's largest |entry| (an entry, so
    exact even where subnormal) and rest the norm of the row divided by it, in
    [1, sqrt(m)]; rest inf for a row with a non-finite entry."""
    V = np.asarray(V, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        squares = np.einsum("ij,ij->i", V, V)
    scale, rest = np.ones(V.shape[0]), np.sqrt(squares)
    # A finite sum of non-negative terms did not overflow; above 1e-290, what underflowed
    # is below 1e-18 of it.
    redo = ~((squares >= 1e-290) & (squares <= np.finfo(float).max))
    if redo.any():
        W = V[redo]
        with np.errstate(invalid="ignore", over="ignore"):
            peak = np.max(np.abs(W), axis=1, initial=0.0)
            finite = np.isfinite(peak)
            safe_peak = np.where((peak > 0) & finite, peak, 1.0)
            scale[redo] = safe_peak
            rest[redo] = np.where(finite, np.linalg.norm(W / safe_peak[:, None], axis=1),
                                  np.inf)
    return scale, rest


def clip_weights(norms: np.ndarray, bound: float) -> np.ndarray:
    """Per-user factors that clip contributions with these L2 ``norms`` to ``bound``:
    min(1, bound (1 - CLIP_MARGIN) / norm), and 0 (the contribution dropped, which is
    within the bound too) where that factor is not a normal float: a norm that
    overflowed, or one so large that the factor would lose its precision."""
    norms = np.asarray(norms, dtype=np.float64)
    target = check_clip("bound", bound) * (1 - CLIP_MARGIN)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        weights = np.where(norms <= target, 1.0, target / norms)
    return np.where(weights >= SMALLEST_NORMAL, weights, 0.0)  # inf norm: 0; NaN: 0


def _kept(weights, *arrays):
    """weights and the arrays' rows of the users with weight > 0 (the others may hold
    non-finite values, and 0 * inf is NaN); the arrays themselves if every user is kept."""
    if np.all(weights > 0):
        return (weights, *arrays)
    keep = weights > 0
    return (weights[keep], *(a[keep] for a in arrays))


def as_contributions(contributions) -> Contributions:
    """``contributions``, an array of rows taken as :class:`Rows`."""
    return Rows(contributions) if isinstance(contributions, np.ndarray) else contributions


@dataclass(frozen=True)
class Rows:
    """Contributions given as explicit rows V (t, m)."""

    V: np.ndarray

    @property
    def n_users(self) -> int:
        return self.V.shape[0]

    def norms(self) -> np.ndarray:
        return row_norms(self.V)

    def weighted_sum(self, weights) -> np.ndarray:
        weights, V = _kept(weights, np.asarray(self.V, dtype=np.float64))
        return weights @ V

    def rows(self) -> np.ndarray:
        return np.asarray(self.V, dtype=np.float64)


@dataclass(frozen=True)
class OuterProducts:
    """Contributions u_i v_i^T (flattened, a x b) from left (t, a) and right (t, b): their
    norms are ||u_i|| ||v_i||, their weighted sum one (a, t) x (t, b) product, and no
    (t, a b) array is formed."""

    left: np.ndarray
    right: np.ndarray

    @property
    def n_users(self) -> int:
        return self.left.shape[0]

    def norms(self) -> np.ndarray:
        # Scales and rests multiplied apart: a subnormal norm of one factor times a huge
        # one of the other would keep the subnormal's rounding (up to 1.41x low).
        (scale_u, rest_u), (scale_v, rest_v) = map(_row_norm_factors, (self.left, self.right))
        with np.errstate(over="ignore", invalid="ignore"):
            norm = (scale_u * scale_v) * (rest_u * rest_v)
        return np.where(np.isfinite(norm), norm, np.inf)

    def weighted_sum(self, weights) -> np.ndarray:
        weights, left, right = _kept(weights, self.left, self.right)
        # w_i u_i may fall below the normal range where ||v_i|| is huge: flushed, it
        # can only shrink ||w_i u_i|| ||v_i||.
        return (flush_subnormals(left * weights[:, None]).T @ right).ravel()

    def rows(self) -> np.ndarray:
        return (self.left[:, :, None] * self.right[:, None, :]).reshape(self.n_users, -1)


@dataclass
class GaussianSumMechanism:
    """Releases noisy sums of clipped per-user contributions and keeps their ledger.

    ``release(name, iteration, contributions, clip)`` clips every user's contribution to
    L2 norm ``clip`` (:func:`clip_weights`), sums, adds N(0, (noise_multiplier *
    clip)^2) per entry from ``rng`` and appends a :class:`Release` to ``releases``:
    noising and accounting are one step.

    For audits (:func:`sensitivity_audit`): ``record=True`` keeps every release's
    pre-noise sum, clipped rows and noisy value in ``transcript``; ``replay`` (a transcript)
    makes release j return the recorded noisy value instead of fresh noise, so a fit on a
    neighbouring dataset can be driven by the same released history.
    """

    noise_multiplier: float
    rng: np.random.Generator | None = None
    record: bool = False
    replay: list | None = None
    releases: list = field(default_factory=list)
    transcript: list = field(default_factory=list)
    #: NOT private: per release, how many users' contributions were clipped (diagnostic)
    n_clipped: list = field(default_factory=list)

    def release(self, name: str, iteration: int, contributions: Contributions,
                clip: float) -> np.ndarray:
        """Noisy sum of the clipped ``contributions`` (:class:`Contributions`; an array
        of rows is taken as :class:`Rows`): (m,)."""
        contributions = as_contributions(contributions)
        clip = check_clip("clip", clip)
        weights = clip_weights(contributions.norms(), clip)
        presum = contributions.weighted_sum(weights)
        j = len(self.releases)
        if self.replay is not None:
            if j >= len(self.replay) or self.replay[j]["name"] != name:
                raise RuntimeError(
                    f"replay diverged at release {j} ({name!r}): the fit being replayed "
                    "made different releases")
            noisy = self.replay[j]["noisy"]
        elif self.noise_multiplier > 0:
            noisy = presum + self.rng.normal(0.0, self.noise_multiplier * clip, presum.shape)
        else:
            noisy = presum
        self.releases.append(Release(name, iteration, float(clip), self.noise_multiplier))
        self.n_clipped.append(int(np.sum(weights < 1)))
        if self.record:
            with np.errstate(invalid="ignore"):
                clipped = contributions.rows() * weights[:, None]
            self.transcript.append({"name": name, "iteration": iteration, "clip": float(clip),
                                    "presum": presum, "noisy": noisy,
                                    "rows": np.where(weights[:, None] > 0, clipped, 0.0)})
        return noisy


def _composed_multiplier(noise_multipliers) -> float:
    """The multiplier of the one Gaussian mechanism that the given ones compose into."""
    s = np.asarray(list(noise_multipliers), dtype=float)
    if s.size == 0:
        return np.inf
    if np.any(s == 0):
        return 0.0
    return float(np.sum(s ** -2.0) ** -0.5)


def check_delta(delta) -> float:
    """delta must be a real number in [MIN_DELTA, 1)."""
    if isinstance(delta, (bool, np.bool_)) or not isinstance(delta, (int, float, np.floating)):
        raise ValueError(f"delta must be a real number in (0, 1); got {delta!r}")
    delta = float(delta)
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1); got {delta!r}")
    if delta < MIN_DELTA:
        raise ValueError(
            f"delta must be >= {MIN_DELTA:.3g} (the smallest normal float: below it the "
            f"accountant's Gaussian tail probabilities lose their precision); got {delta!r}")
    return delta


def epsilon_spent(noise_multipliers, delta) -> float:
    """epsilon at ``delta`` of the composition of Gaussian releases (multiplier = noise
    std / L2 sensitivity, add/remove relation): exact, via the one Gaussian mechanism they
    compose into. 0 without releases, inf if one had no noise."""
    delta = check_delta(delta)
    composed = _composed_multiplier(noise_multipliers)
    if composed == np.inf:
        return 0.0
    if composed == 0:
        return float("inf")
    import dp_accounting
    return float(dp_accounting.get_epsilon_gaussian(composed, delta))


def calibrate_noise_multiplier(epsilon, delta, n_releases) -> float:
    """Smallest noise multiplier s (to ~1e-9 relative) such that ``n_releases`` Gaussian
    releases with multiplier s spend at most (epsilon (1 - 1e-9), delta).

    T mechanisms with multiplier s compose exactly into one with multiplier s / sqrt(T),
    so s = sqrt(T) * sigma(epsilon, delta) of the analytic Gaussian mechanism; s is then
    nudged up until the accountant confirms epsilon_spent <= epsilon. epsilon = inf gives
    0 (no noise). Milliseconds and no memory to speak of, for any epsilon > 0.
    """
    delta = check_delta(delta)
    if np.isinf(epsilon):
        return 0.0
    import dp_accounting

    s = np.sqrt(n_releases) * dp_accounting.get_sigma_gaussian(epsilon, delta)
    # Strictly below the target, with a margin far above the accountant's root-finding
    # tolerance (~1e-12).
    for _ in range(50):
        if epsilon_spent([s] * n_releases, delta) <= epsilon * (1 - 1e-9):
            return float(s)
        s *= 1 + 1e-9
    raise RuntimeError(f"could not calibrate noise for epsilon={epsilon}, delta={delta}")


def sensitivity_audit(X, y, X_neighbour, y_neighbour, rank, sparsity, *, epsilon, delta,
                      **fit_options):
    """Check the sensitivity every release of a private fit assumes, on two neighbouring
    datasets.

    Replays :func:`lowrank_sparse.dp_amht.dp_amht_lrs` on (X, y) and on (X_neighbour,
    y_neighbour) -- one user added or removed -- with the same released history (the
    first fit's noisy releases drive both), and at every release compares the pre-noise
    sums of clipped contributions. Under the per-user invariant they differ by exactly
    the added or removed user's clipped contribution, so ``ratio`` <= 1.

    Parameters
    ----------
    X, y : (t, n, d), (t, n) arrays
    X_neighbour, y_neighbour : (t +- 1, n, d), (t +- 1, n) arrays
        The same users, in the same order, with one user inserted or deleted anywhere.
    rank, sparsity, epsilon, delta, **fit_options
        As for :func:`lowrank_sparse.dp_amht.dp_amht_lrs` (``rng`` seeds the noise).

    Returns
    -------
    pandas.DataFrame
        One row per release, columns ``release`` (its name), ``iteration`` (0 for the
        initialization), ``clip``, ``difference`` (L2 norm of the change of the pre-noise
        sum), ``ratio`` (difference / clip; the guarantee needs <= 1) and
        ``users_changed`` (users present in both datasets whose clipped contribution
        changed; the invariant needs 0). ``attrs["outputs_changed"]``: users present in
        both whose final local fit (w_i, b_i), their billboard output, changed (needs 0).

    Notes
    -----
    Keeps every user's clipped contribution to every release in memory (for
    ``users_changed``): t (d^2 + (2 n_iter) (d r + r^2)) floats per fit.
    """
    import pandas as pd

    from ._validation import check_xy
    from .dp_amht import _private_fit, _settings

    X, y = check_xy(X, y)
    X_neighbour, y_neighbour = check_xy(X_neighbour, y_neighbour)
    if X_neighbour.shape[1:] != X.shape[1:]:
        raise ValueError(f"X_neighbour must have the (n, d) = {X.shape[1:]} of X; got "
                         f"{X_neighbour.shape[1:]}")
    mine, theirs = _common_users(X, y, X_neighbour, y_neighbour)
    rng = fit_options.pop("rng", None)
    settings = _settings(X, rank, sparsity, epsilon, delta, **fit_options)
    original = GaussianSumMechanism(settings.noise_multiplier, np.random.default_rng(rng),
                                    record=True)
    run, _ = _private_fit(X, y, settings, original)
    replayed = GaussianSumMechanism(settings.noise_multiplier, record=True,
                                    replay=original.transcript)
    run_neighbour, _ = _private_fit(X_neighbour, y_neighbour, settings, replayed)

    def changed(a, b):
        return int(np.sum(np.any(np.abs(a - b) > 1e-9 * (1 + np.abs(a)), axis=1)))

    rows = []
    for a, b in zip(original.transcript, replayed.transcript):
        difference = float(np.linalg.norm(a["presum"] - b["presum"]))
        rows.append({"release": a["name"], "iteration": a["iteration"], "clip": a["clip"],
                     "difference": difference, "ratio": difference / a["clip"],
                     "users_changed": changed(a["rows"][mine], b["rows"][theirs])})
    audit = pd.DataFrame(rows)
    d = X.shape[2]
    audit.attrs["outputs_changed"] = changed(
        np.hstack([run.final.W, run.final.sparse(d)])[mine],
        np.hstack([run_neighbour.final.W, run_neighbour.final.sparse(d)])[theirs])
    return audit


def _common_users(X, y, X_other, y_other):
    """Indices (in X, in X_other) of the users two add/remove neighbours share, in order.
    Raises ValueError if they are not X with one user inserted or deleted."""
    small, large, swapped = (X, y), (X_other, y_other), False
    if X.shape[0] == X_other.shape[0] + 1:
        small, large, swapped = large, small, True
    t = small[0].shape[0]
    if large[0].shape[0] != t + 1:
        raise ValueError(
            "X_neighbour must be X with one user added or removed (the neighbouring "
            f"relation of the guarantee); got {X_other.shape[0]} users for {X.shape[0]}")

    def same(a, b):  # per user: identical samples and responses
        return (np.all(a[0] == b[0], axis=(1, 2))) & np.all(a[1] == b[1], axis=1)

    prefix = same(small, (large[0][:t], large[1][:t]))
    gap = int(np.argmin(prefix)) if not prefix.all() else t
    suffix = same((small[0][gap:], small[1][gap:]), (large[0][gap + 1:], large[1][gap + 1:]))
    if not suffix.all():
        raise ValueError("X_neighbour must be X with one user added or removed (the other "
                         "users identical and in the same order)")
    in_small = np.arange(t)
    in_large = np.where(in_small < gap, in_small, in_small + 1)
    return (in_large, in_small) if swapped else (in_small, in_large)


def clopper_pearson(successes, trials, confidence=0.95) -> tuple[float, float]:
    """The two-sided Clopper-Pearson interval of a binomial rate."""
    from scipy.stats import beta

    alpha = 1 - confidence
    low = 0.0 if successes <= 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes >= trials else float(
        beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def epsilon_lower_bound(false_positives, negatives, false_negatives, positives, delta,
                        confidence=0.95) -> float:
    """Empirical lower bound on epsilon from a distinguishing test (Jagielski, Ullman and
    Oprea 2020; Nasr et al. 2021), holding with probability ``confidence``.

    A test that says "canary" on ``false_positives`` of ``negatives`` runs without the
    canary user and "no canary" on ``false_negatives`` of ``positives`` runs with it has
    rates FPR and FNR; (epsilon, delta)-DP forces FPR + e^epsilon FNR >= 1 - delta and
    FNR + e^epsilon FPR >= 1 - delta. Both rates are replaced by the upper ends of their
    Clopper-Pearson intervals at level ``confidence`` (each one-sided at
    1 - (1 - confidence) / 4, so that both hold together). 0 when the test does no better
    than chance.
    """
    level = 1 - (1 - confidence) / 2  # two-sided level whose upper end is one-sided 1 - a/4
    fpr = clopper_pearson(false_positives, negatives, level)[1]
    fnr = clopper_pearson(false_negatives, positives, level)[1]
    bound = 0.0
    for a, b in ((fpr, fnr), (fnr, fpr)):
        if 1 - delta - b > a:
            bound = max(bound, float(np.log((1 - delta - b) / a)))
    return bound
