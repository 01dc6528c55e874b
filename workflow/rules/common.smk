# Grid expansion and path helpers shared by the rule files.
import sys
from pathlib import Path

import pandas as pd
from snakemake.utils import Paramspace

# The library is used from src/ of this checkout (installed or not).
SRC = Path(workflow.basedir) / "src"
sys.path.insert(0, str(SRC))
from lowrank_sparse.experiment import CELL_KEYS, code_version, expand_sweeps

FITS = pd.DataFrame(expand_sweeps(config))
# One dataset (all replicates) per distinct cell; file names like d~50_t~400_..._noise~0.0
DATA_SPACE = Paramspace(
    FITS[list(CELL_KEYS)].drop_duplicates().reset_index(drop=True), filename_params="*")
CODE_VERSION = code_version(SRC / "lowrank_sparse")  # fitting code: fits rerun on edits
PLOT_VERSION = code_version(SRC / "lowrank_sparse", presentation=True)  # figures, tables
RESULTS = "results"


def cell_of(wildcards):
    """The cell of a job's wildcards as plain Python numbers (JSON- and YAML-friendly)."""
    return {key: value.item() if hasattr(value, "item") else value
            for key, value in DATA_SPACE.instance(wildcards).items()}


def fit_path(row):
    cell = "_".join(f"{key}~{row[key]}" for key in CELL_KEYS)
    return f"{RESULTS}/fits/{row['method']}/{cell}_eps~{row['epsilon']}.json"


FIT_FILES = sorted({fit_path(row) for row in FITS.to_dict("records")})

FIGURES = ["phase_transition", "thresholds", "total_samples", "convergence", "privacy",
           "runtime"]
TABLES = ["n50", "privacy", "methods"]
FIGURE_FILES = expand("paper_figures/fig_{name}.{ext}", name=FIGURES, ext=["pdf", "png"])
TABLE_FILES = expand("paper_figures/table_{name}.{ext}", name=TABLES, ext=["csv", "md"])
