"""Profiles as data: ``mdlib/profiles/<name>.yaml``.

``smoke``  CI: every notebook in minutes on two CPU cores (tiny subsets, 1-2 epochs).
``cpu``    real results on a laptop CPU (about an hour for the whole study).
``gpu``    the paper-scale protocol.

Notebooks take ``PROFILE`` from their ``parameters`` cell, whose default reads the
``MDLIB_PROFILE`` environment variable (nbval cannot inject parameters; papermill can).
Every size, epoch count and step count in the study comes from the profile.

More profiles can live outside the package: ``MDLIB_PROFILE_PATH`` lists folders (``:``
separated) searched after this one for ``<name>.yaml`` (e.g. a test's shrunken
``gpu_tiny.yaml`` with ``extends: gpu``); the kernels a sweep starts inherit it.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).resolve().parent


def _dirs() -> list[Path]:
    extra = [Path(d) for d in os.environ.get("MDLIB_PROFILE_PATH", "").split(os.pathsep) if d]
    return [PROFILE_DIR] + extra


def _path(name: str) -> Path | None:
    for d in _dirs():
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    return None


def available() -> list[str]:
    return sorted({p.stem for d in _dirs() for p in d.glob("*.yaml")})


def default_name() -> str:
    """``MDLIB_PROFILE`` if set, else ``gpu`` when CUDA is available, else ``cpu``."""
    env = os.environ.get("MDLIB_PROFILE")
    if env:
        return env
    try:
        import torch
        return "gpu" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _merge(base: dict, over: dict) -> dict:
    """``base`` updated by ``over``, mappings merged key by key; an empty mapping in
    ``over`` replaces (``model_kwargs: {}`` clears the parent's kwargs of another model)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and v and isinstance(out.get(k), dict) else v
    return out


def load(name: str | None = None, overrides: dict | None = None) -> dict[str, Any]:
    """Load a profile by name (``extends:`` another profile is allowed), apply
    ``overrides`` (nested dict), and return the resolved dict."""
    name = name or default_name()
    path = _path(name)
    if path is None:
        raise ValueError(f"unknown profile '{name}' (no {name}.yaml in {[str(d) for d in _dirs()]}); "
                         f"available: {available()}")
    with open(path) as f:
        prof = yaml.safe_load(f) or {}
    parent = prof.pop("extends", None)
    if parent:
        prof = _merge(load(parent), prof)
    prof["name"] = name
    return _merge(prof, overrides or {})


def section(prof: dict, key: str) -> dict:
    if key not in prof:
        raise KeyError(f"profile '{prof.get('name')}' has no section '{key}'")
    return copy.deepcopy(prof[key])


def checked_section(prof: dict, key: str, known) -> dict:
    """A copy of the profile's section ``key``; ``KeyError`` when it is missing or empty,
    ``ValueError`` naming any key not in ``known``."""
    s = dict(prof.get(key) or {})
    if not s:
        raise KeyError(f"profile '{prof.get('name')}' has no section '{key}'")
    unknown = set(s) - set(known)
    if unknown:
        raise ValueError(f"profile {prof.get('name')}: {key} has unknown key(s) "
                         f"{sorted(unknown)}; known: {list(known)}")
    return s
