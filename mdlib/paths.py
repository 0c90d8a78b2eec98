"""Every path the project uses, in one module.

Environment variables
---------------------
MDLIB_DATA_ROOT   where datasets live (default: ``<repo>/data``). Layout below it mirrors
                  the shared data folder: ``medmnist/<flag>[_<size>].npz`` and
                  ``histopathology/lc25000_lung/{labels.csv, lung_n/, ...}``.
MDLIB_RUNS_ROOT   where run directories are written (default: ``<repo>/runs``).
MDLIB_FIGURES     where figures are written (default: ``<repo>/figures``).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def data_root() -> Path:
    return _env_path("MDLIB_DATA_ROOT", REPO_ROOT / "data")


def runs_root() -> Path:
    return _env_path("MDLIB_RUNS_ROOT", REPO_ROOT / "runs")


def figures_dir(profile: str | None = None) -> Path:
    """The figures root, or ``figures/<profile>/`` (so that a smoke run never overwrites
    the cpu profile's figures), created when missing."""
    p = _env_path("MDLIB_FIGURES", REPO_ROOT / "figures")
    if profile is not None:
        p = p / profile
    p.mkdir(parents=True, exist_ok=True)
    return p


def cache_dir() -> Path:
    """Derived, re-creatable data (e.g. resized image-folder datasets)."""
    p = runs_root() / "cache"
    p.mkdir(parents=True, exist_ok=True)
    return p
