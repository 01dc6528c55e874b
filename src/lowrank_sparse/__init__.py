"""Personalization with low-rank plus sparse user parameters: theta_i = U w_i + b_i."""

import logging

# Progress is logged at INFO on the "lowrank_sparse" logger; silent unless the
# application configures logging (the library convention: a NullHandler, no output).
logging.getLogger(__name__).addHandler(logging.NullHandler())

from . import metrics
from .alternating import ConvergenceWarning, FitResult
from .amht import History, amht_lrs, moment_init
from .data import Data, Problem, make_problem, sample_data
from .baselines import (ConvexLowRankSparse, LowRankOnly, PerUserLeastSquares,
                        PerUserSparse, PrivateLowRankOnly)
from .dp_amht import NotPrivateDiagnostics, PrivateHistory, dp_amht_lrs
from .estimators import AMHTLRS, DPAMHTLRS, KnownSubspace, Oracle
from .privacy import PrivacyReport
from .robust import Adaptive, Huber, Trimmed
from .local import BACKENDS, LocalFit, local_step

__version__ = "0.1.0"

__all__ = [
    "Adaptive", "ConvexLowRankSparse", "LowRankOnly", "PerUserLeastSquares", "PerUserSparse",
    "PrivateLowRankOnly",
    "AMHTLRS", "BACKENDS", "ConvergenceWarning", "DPAMHTLRS", "Data", "NotPrivateDiagnostics", "PrivacyReport",
    "PrivateHistory", "dp_amht_lrs", "FitResult", "History", "Huber", "KnownSubspace",
    "LocalFit", "Oracle",
    "Problem", "amht_lrs", "local_step", "make_problem", "metrics", "moment_init",
    "sample_data", "Trimmed", "__version__",
]
