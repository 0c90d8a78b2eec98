"""Sweeps: a grid of notebook parameters, declared as data, executed with papermill.

A grid is a YAML file (``studies/*.yaml``)::

    name: main_cpu                               # used in output paths (default: file stem)
    notebook: notebooks/06_train_classifier.ipynb  # relative paths: to the repository root
    profile: cpu                                 # the notebook's PROFILE; --profile overrides
    fixed: {TASK: study}                         # parameters common to every configuration
    profile_ignore: [diffaug]                    # profile sections the notebook never reads
    grid:                                        # cartesian product of these lists
      DATASET: [pneumoniamnist, breastmnist]
      METHOD: [no_aug, mixup]
      SEED: [0, 1, 2]
    extra:                                       # explicit configurations, appended
      - {DATASET: breastmnist, METHOD: no_aug, SEED: 3}

or, for configurations that are not one product, a list of sub-grids, each with its own
``grid`` / ``fixed`` / ``extra`` (the top-level ``fixed`` applies to all of them)::

    fixed: {TASK: study}
    grids:
      - grid: {METHOD: [no_aug, mixup], SEED: [0, 1, 2]}
      - grid: {METHOD: [meddiffusemix], SEED: [0, 1, 2, 3, 4]}
        fixed: {DATASET: breastmnist}

Every grid value is a list of values (a value may itself be a dict, e.g. ``METHOD_PARAMS:
[{}, {smooth: false}]``). A configuration is the dict of parameters passed to the notebook
(``PROFILE`` comes from ``profile``); it is identified by the hash of its sorted JSON
(:func:`config_hash`). Duplicate configurations are run once.

Before anything runs the grid is checked, and refused with an error naming the file and
the problem (:class:`GridError`): unknown keys, a missing notebook, an unknown profile, a
parameter that the notebook's ``parameters`` cell does not define, a grid value that is
not a list, an empty list or no configuration at all, an unknown ``DATASET``
(:func:`mdlib.data.dataset_names`), and whatever the study's hooks refuse (``hooks:``, a
module name, see :func:`load_hooks`; the MedDiffuseMix study's refuses an unknown
``METHOD`` and ``METHOD_PARAMS`` that the method's constructor refuses).

Outputs, under the runs root (``MDLIB_RUNS_ROOT``)::

    runs/sweeps/<profile>/<name>/<config hash>/params.json      the notebook's parameters
                                              /executed.ipynb   papermill's output
                                              /kernel.log       the kernel's stderr
                                              /DONE             json, written last (atomic)
                                              /FAILED           json, when it failed

A configuration with ``DONE`` is skipped; anything else (never started, killed part-way,
failed) is run again, so a killed sweep resumes with only what is missing. ``DONE``
records the fingerprint of the resolved profile it ran under (:func:`profile_fingerprint`);
when the profile has changed since (say its epochs), the configuration is ``stale`` and runs
again, so an edited profile never leaves its old results standing as if current (the
notebook loads a run whose own resolved configuration did not change, so this costs the
notebook's start, not its training). A grid's ``profile_ignore: [diffaug, diffmic]`` leaves
those top-level profile sections (other studies' settings, which its notebook never reads)
out of the fingerprint, so that tuning one study does not make another's sweep rerun; and a
configuration's fingerprint holds only its own dataset's entry of a per-dataset section
(``diffusion_by_dataset``), so that a larger generator for one dataset reruns only that
dataset's configurations. A ``DONE`` without a fingerprint (written before it was recorded) counts as current. If the notebook
printed a line ``RUN_DIR=<path>`` (notebook 06 does), the path is recorded in ``DONE`` and
the executed notebook is copied there as ``executed.ipynb`` (unless one already is).

Sweeps that run at the same time (two commands, two machines, any backend) share the
runs root safely: a configuration is executed under its directory's lock
(``<config hash>/.lock``, :mod:`mdlib.locks`), so a configuration that another sweep is
running is tried again later and, once that sweep has finished it, counted as done
elsewhere; inside the notebook every shared resource (run directories, banks) is created
under its own lock, so nothing is trained twice (:mod:`mdlib.runs.store`).

Command line::

    python -m mdlib.sweep studies/main_cpu.yaml [--profile P] [--jobs N] [--limit N]
                          [--threads T] [--backend local|ray] [--address A]
                          [--dry-run | --status]

Backends:

``local`` (default, needs no Ray): ``--jobs N`` executes N configurations at once in
    worker processes, each kernel with ``T`` torch / OpenMP threads (``--threads``, else
    ``MDLIB_THREADS``, else ``max(1, cpus // N)``), exported as ``OMP_NUM_THREADS`` and
    ``MDLIB_THREADS``.
``ray`` (``pip install "mdlib[ray]"``): each configuration is one Ray task (the same
    papermill execution) that asks for the profile's ``sweep`` resources per configuration
    (``num_cpus``, ``num_gpus``, ``memory_gb``; :func:`resources`); its kernel gets
    ``num_cpus`` threads and the GPU(s) Ray assigns (``CUDA_VISIBLE_DEVICES``). Without
    ``--address`` a local Ray instance is started (``--ray-cpus``, ``--object-store-mb``)
    and stopped at the end; ``--address auto`` / ``host:6379`` / ``ray://host:10001`` joins
    a running cluster (whose nodes must see the repository, the data root and the runs
    root at the same paths, e.g. a shared filesystem). At most as many configurations are
    in flight as the cluster can hold (and ``--jobs`` if given). See
    :mod:`mdlib.runs.ray_backend`.

Configurations that would create the same shared resource (:func:`shared_keys`: an
offline method's guidance classifier / diffusion model / bank) do not start together
until one of them has finished: the locks would make the second wait anyway, and this
keeps its worker (or GPU) free for other work meanwhile. ``--limit N`` runs at most N of
the missing configurations. ``--dry-run`` lists the configurations and what would run;
``--status`` lists done / running / missing / failed (the same files whichever backend
wrote them; ``running``: its lock is held by a live sweep). One progress bar counts the
configurations, with running / done / failed. A failing configuration is reported
(papermill's error and the path of its partially executed notebook) and the others go
on; the exit status is 0 when every configuration ran, 1 if any failed, 2 for a refused
grid (or resources no node can give), 130 after Ctrl-C (which stops the running
notebooks; rerun the command to resume).

Python: :func:`load_grid`, :func:`expand`, :func:`run_sweep`, :func:`status`, :func:`resources`.
"""
from __future__ import annotations

import argparse
import ast
import itertools
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import time
import traceback
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import paths
from ..io import write_json
from .store import config_hash

DEFAULT_NOTEBOOK = "notebooks/06_train_classifier.ipynb"
_TOP_KEYS = {"name", "notebook", "profile", "description", "fixed", "grid", "grids", "extra", "hooks",
             "profile_ignore"}
_SUB_KEYS = {"grid", "fixed", "extra", "description"}
#: parameters the sweep sets itself
_RESERVED = ("PROFILE",)
_RUN_DIR = re.compile(r"^RUN_DIR=(.+?)\s*$", re.M)


class GridError(ValueError):
    """A grid file that cannot be run; the message names the file and the problem."""


@dataclass
class SubGrid:
    grid: dict[str, list] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    extra: list[dict] = field(default_factory=list)


@dataclass
class Grid:
    path: Path
    name: str
    notebook: Path
    profile: str | None
    parts: list[SubGrid]
    notebook_params: dict[str, Any]  # parameter name -> default (None where not a literal)
    description: str = ""
    hooks: str | None = None  # module with check_config / shared_keys (see load_hooks)
    #: top-level profile sections the notebook never reads (left out of the fingerprint)
    profile_ignore: tuple[str, ...] = ()


def load_hooks(grid: "Grid"):
    """The grid's study hooks: the module named by its ``hooks:`` key (e.g.
    ``mdlib.studies.meddiffusemix.study``), imported by name so that this runner never
    imports a study itself. It may define ``check_config(params, profile) -> None``
    (raise ``ValueError`` to refuse a configuration; ``params`` are the notebook's
    defaults updated by the configuration, ``profile`` the loaded profile or None) and
    ``shared_keys(params, profile_name) -> list[str]``. None without ``hooks:``."""
    if not grid.hooks:
        return None
    import importlib
    try:
        return importlib.import_module(grid.hooks)
    except ImportError as e:
        raise GridError(f"{grid.path}: hooks module '{grid.hooks}' cannot be imported: {e}") from None


# --------------------------------------------------------------------------- loading
def notebook_parameters(notebook: str | os.PathLike) -> dict[str, Any]:
    """Names assigned at top level of the notebook's cell tagged ``parameters``, with their
    default values where they are literals (else None)."""
    import nbformat
    nb = nbformat.read(str(notebook), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{notebook}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    out: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        targets = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for t in targets:
            if isinstance(t, ast.Name):
                try:
                    out[t.id] = ast.literal_eval(value)
                except (ValueError, TypeError, SyntaxError):
                    out[t.id] = None
    return out


def _resolve_notebook(value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else paths.REPO_ROOT / p


def _check_params(where: str, d: Any, known: dict, what: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise GridError(f"{where}: {what} must be a mapping of parameter: value, got {type(d).__name__}")
    for k in d:
        if k in _RESERVED:
            raise GridError(f"{where}: {what} sets {k}; the profile is given by the top-level "
                            f"'profile:' key or --profile")
        if k not in known:
            raise GridError(f"{where}: unknown parameter '{k}' in {what}; the notebook's "
                            f"parameters are {sorted(set(known) - set(_RESERVED))}")
    return dict(d)


def _sub(where: str, d: dict, known: dict) -> SubGrid:
    bad = set(d) - _SUB_KEYS
    if bad:
        raise GridError(f"{where}: unknown keys {sorted(bad)} (allowed: {sorted(_SUB_KEYS)})")
    grid = _check_params(where, d.get("grid"), known, "grid")
    for k, v in grid.items():
        if not isinstance(v, list):
            raise GridError(f"{where}: grid value of {k} must be a list, got {v!r} "
                            f"(write [{v!r}] for a single value, or put it in 'fixed')")
        if not v:
            raise GridError(f"{where}: grid value of {k} is an empty list (no configuration)")
    fixed = _check_params(where, d.get("fixed"), known, "fixed")
    extra = d.get("extra") or []
    if not isinstance(extra, list):
        raise GridError(f"{where}: 'extra' must be a list of configurations, got {type(extra).__name__}")
    extra = [_check_params(where, e, known, f"extra[{i}]") for i, e in enumerate(extra)]
    return SubGrid(grid=grid, fixed=fixed, extra=extra)


def load_grid(path: str | os.PathLike, profile: str | None = None) -> Grid:
    """Read and check a grid file (see the module docstring); ``profile`` overrides the
    file's. Raises :class:`GridError` for anything that would not run."""
    from .. import profiles
    path = Path(path)
    if not path.is_file():
        raise GridError(f"{path}: grid file not found")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise GridError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise GridError(f"{path}: expected a mapping with 'grid' or 'grids', got {type(d).__name__}")
    bad = set(d) - _TOP_KEYS
    if bad:
        raise GridError(f"{path}: unknown keys {sorted(bad)} (allowed: {sorted(_TOP_KEYS)})")
    name = str(d.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise GridError(f"{path}: name '{name}' must be letters, digits, '_', '-', '.'")
    notebook = _resolve_notebook(str(d.get("notebook") or DEFAULT_NOTEBOOK))
    if not notebook.is_file():
        raise GridError(f"{path}: notebook '{d.get('notebook') or DEFAULT_NOTEBOOK}' not found ({notebook})")
    try:
        known = notebook_parameters(notebook)
    except ValueError as e:
        raise GridError(f"{path}: {e}") from None
    prof = profile or d.get("profile")
    if prof is not None and str(prof) not in profiles.available():
        raise GridError(f"{path}: unknown profile '{prof}'; available: {profiles.available()}")
    if "PROFILE" not in known:
        raise GridError(f"{path}: notebook {notebook} has no PROFILE parameter")
    top_fixed = _check_params(str(path), d.get("fixed"), known, "fixed")
    if "grids" in d:
        if "grid" in d or "extra" in d:
            raise GridError(f"{path}: give either 'grids' (a list of sub-grids) or 'grid' / 'extra', not both")
        if not isinstance(d["grids"], list) or not d["grids"]:
            raise GridError(f"{path}: 'grids' must be a non-empty list of sub-grids")
        parts = []
        for i, g in enumerate(d["grids"]):
            if not isinstance(g, dict):
                raise GridError(f"{path}: grids[{i}] must be a mapping with 'grid' / 'fixed' / 'extra'")
            s = _sub(f"{path}: grids[{i}]", g, known)
            s.fixed = {**top_fixed, **s.fixed}
            parts.append(s)
    else:
        s = _sub(str(path), {k: d[k] for k in ("grid", "extra") if k in d}, known)
        s.fixed = top_fixed
        parts = [s]
    hooks = d.get("hooks")
    if hooks is not None and not (isinstance(hooks, str) and re.fullmatch(r"[A-Za-z_][\w.]*", hooks)):
        raise GridError(f"{path}: hooks must be a dotted module name, got {hooks!r}")
    ignore = d.get("profile_ignore") or []
    if not (isinstance(ignore, list) and all(isinstance(k, str) for k in ignore)):
        raise GridError(f"{path}: profile_ignore must be a list of profile section names, got {ignore!r}")
    if prof is not None:
        sections = set(profiles.load(str(prof)))
        bad = sorted(set(ignore) - sections)
        if bad:
            raise GridError(f"{path}: profile_ignore names {bad}, which profile '{prof}' does not "
                            f"have; its sections are {sorted(sections)}")
    grid = Grid(path=path, name=name, notebook=notebook, profile=str(prof) if prof else None,
                parts=parts, notebook_params=known, description=str(d.get("description") or ""),
                hooks=hooks, profile_ignore=tuple(sorted(set(ignore))))
    configs = expand(grid)
    if not configs:
        raise GridError(f"{path}: the grid has no configurations")
    _check_values(grid, configs)
    return grid


def _check_values(grid: Grid, configs: list[dict]) -> None:
    """Refuse an unknown ``DATASET`` here, and whatever the grid's hooks refuse."""
    from .. import data, profiles
    names = data.dataset_names()
    hooks = load_hooks(grid)
    check = getattr(hooks, "check_config", None)
    prof = profiles.load(grid.profile) if grid.profile else None
    for c in configs:
        full = {**grid.notebook_params, **c}
        if "DATASET" in c and full["DATASET"] not in names:
            raise GridError(f"{grid.path}: unknown dataset '{full['DATASET']}' in {c}; known: {names}")
        if check is not None:
            try:
                check(full, prof)
            except (TypeError, ValueError) as e:
                raise GridError(f"{grid.path}: {e} in {c}") from None


def expand(grid: Grid) -> list[dict]:
    """The configurations of ``grid``, in order: per sub-grid, the product of its lists
    (first key varies slowest) with ``fixed`` applied, then its ``extra`` entries (on top
    of ``fixed``). ``fixed`` alone makes no configuration. Duplicates (same hash) are kept
    once."""
    out, seen = [], set()
    for s in grid.parts:
        keys = list(s.grid)
        combos = ([dict(zip(keys, vals)) for vals in itertools.product(*(s.grid[k] for k in keys))]
                  if keys else [])
        for c in combos + list(s.extra):
            cfg = {**s.fixed, **c}
            h = config_hash(cfg)
            if h not in seen:
                seen.add(h)
                out.append(cfg)
    return out


# --------------------------------------------------------------------------- layout / status
#: the order in which ``make study`` sweeps a profile's grids ``studies/<part>_<profile>.yaml``
SWEEP_ORDER = ("main", "ablation", "sensitivity")


def profile_grids(profile: str) -> list[Path]:
    """The sweep grids of ``profile`` (what ``make study`` runs, in its order): the files
    ``studies/<part>_<profile>.yaml`` of the repository for the parts of :data:`SWEEP_ORDER`
    that exist, then any other ``studies/*_<profile>.yaml`` (sorted); a profile without
    grids of its own has ``studies/<profile>.yaml`` (smoke). Empty when there is none."""
    d = paths.REPO_ROOT / "studies"
    own = [d / f"{part}_{profile}.yaml" for part in SWEEP_ORDER if (d / f"{part}_{profile}.yaml").is_file()]
    own += [f for f in sorted(d.glob(f"*_{profile}.yaml")) if f not in own]
    return own or [f for f in [d / f"{profile}.yaml"] if f.is_file()]


def sweep_dir(grid: Grid, profile: str) -> Path:
    return paths.runs_root() / "sweeps" / profile / grid.name


def _profile(grid: Grid, profile: str | None) -> str:
    from .. import profiles
    prof = profile or grid.profile
    if not prof:
        raise GridError(f"{grid.path}: no profile (set 'profile:' in the file or pass --profile)")
    if prof not in profiles.available():
        raise GridError(f"{grid.path}: unknown profile '{prof}'; available: {profiles.available()}")
    return prof


#: profile sections keyed by dataset name: a configuration's fingerprint holds only the entry
#: of its own ``DATASET`` (none: the section is left out, as if the profile had no such section)
PER_DATASET_SECTIONS = ("diffusion_by_dataset",)


def _fingerprint(prof: dict, params: dict | None) -> str:
    if params is not None and "DATASET" in params:
        prof = dict(prof)
        name = params["DATASET"]
        size = params.get("IMAGE_SIZE") or prof.get("image_size")
        keys = (name, f"{name}@{size}")     # the dataset's entry, then its entry at one size
        for sec in PER_DATASET_SECTIONS:
            entries = prof.pop(sec, None) or {}
            if isinstance(entries, dict):
                own = {k: entries[k] for k in keys if k in entries}
                if own:
                    prof[sec] = own
    return config_hash(prof)


def fingerprinter(profile: str, ignore: tuple[str, ...] | list[str] = ()):
    """``params -> fingerprint`` for the configurations of one grid, loading the profile once
    (:func:`profile_fingerprint`)."""
    from .. import profiles
    skip = set(ignore)
    prof = {k: v for k, v in profiles.load(profile).items() if k not in skip}
    return lambda params=None: _fingerprint(prof, params)


def profile_fingerprint(profile: str, ignore: tuple[str, ...] | list[str] = (),
                        params: dict | None = None) -> str:
    """Hash of the resolved profile ``profile`` (its file with everything it extends),
    without its top-level sections ``ignore`` (a grid's ``profile_ignore``: sections of
    other studies, so that editing one study's settings leaves another's runs current).
    With a configuration's ``params``, the sections of :data:`PER_DATASET_SECTIONS` hold only
    the entries of its ``DATASET``: ``<dataset>`` and ``<dataset>@<IMAGE_SIZE>`` (so that a
    generator setting for one dataset, or for one dataset at one size, leaves the other
    configurations' runs current). A configuration none of whose entries is there hashes
    as the profile without the section."""
    return fingerprinter(profile, ignore)(params)


def _current_done(d: Path, fingerprint: str) -> dict | None:
    """``DONE`` of the configuration directory ``d`` when it is there and was written under
    the profile ``fingerprint`` (or recorded none); else None."""
    try:
        info = json.loads((d / "DONE").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        info = {}
    return info if info.get("profile_sha", fingerprint) == fingerprint else None


def status(path: "str | os.PathLike | Grid", profile: str | None = None) -> list[dict]:
    """One row per configuration: ``hash``, ``state`` (done / stale / running / failed /
    missing), ``dir``, ``params`` (and ``run_dir`` where done, ``holder`` where running).
    ``stale``: done under another version of the profile (it runs again). The same files
    whichever backend (or machine) wrote them; ``running`` means a sweep holds the
    configuration's lock now. ``path``: a grid file, or a :class:`Grid` already loaded
    (with ``profile`` applied), which is not read and checked again."""
    from .. import locks
    grid = path if isinstance(path, Grid) else load_grid(path, profile)
    prof = _profile(grid, profile)
    root = sweep_dir(grid, prof)
    fp = fingerprinter(prof, grid.profile_ignore)
    rows = []
    for c in expand(grid):
        h = config_hash(c)
        d = root / h
        row = {"hash": h, "dir": d, "params": c}
        done = _current_done(d, fp(c))
        if done is not None:
            row["state"] = "done"
            if done.get("run_dir"):
                row["run_dir"] = done["run_dir"]
        elif locks.is_held(d / ".lock"):
            row["state"] = "running"
            row["holder"] = locks.holder(d / ".lock")
        elif (d / "DONE").is_file():
            row["state"] = "stale"
        else:
            row["state"] = "failed" if (d / "FAILED").is_file() else "missing"
        rows.append(row)
    return rows


#: keys of a profile's ``sweep`` section, with their defaults
SWEEP_RESOURCES = {"num_cpus": 1, "num_gpus": 0, "memory_gb": 2}


def resources(profile: str) -> dict:
    """What one configuration asks of the Ray backend: the profile's ``sweep`` section
    (``num_cpus`` > 0, ``num_gpus`` >= 0, fractions allowed, ``memory_gb`` > 0), with
    :data:`SWEEP_RESOURCES` for missing keys. Raises :class:`GridError` naming the
    profile for a bad value."""
    from .. import profiles
    prof = profiles.load(profile)
    sec = dict(SWEEP_RESOURCES)
    if prof.get("sweep"):
        try:
            sec.update(profiles.checked_section(prof, "sweep", SWEEP_RESOURCES))
        except ValueError as e:
            raise GridError(str(e)) from None
    for k, v in sec.items():
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (v >= 0 if k == "num_gpus" else v > 0)
        if not ok:
            raise GridError(f"profile {profile}: sweep.{k}={v!r} must be a number "
                            f"{'>= 0' if k == 'num_gpus' else '> 0'}")
    return sec


# --------------------------------------------------------------------------- execution
def _default_threads(jobs: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, jobs))


def set_threads(threads: int) -> None:
    """Export the thread count that the kernel started next inherits (notebook 06 reads
    ``MDLIB_THREADS`` and sets torch's threads from it)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MDLIB_THREADS"):
        os.environ[var] = str(threads)


def _worker_init(threads: int) -> None:
    # Ctrl-C is handled by the parent, which stops the workers (and so their kernels)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_threads(threads)  # inherited by the kernel papermill starts


def _stream_text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stdout":
                out.append(o.get("text", ""))
    return "".join(out)


def execute_one(notebook: str, out_dir: str, params: dict, cwd: str | None = None,
                threads: int | None = None, fingerprint: str | None = None) -> dict:
    """Execute ``notebook`` with ``params`` into ``out_dir/executed.ipynb`` under the
    configuration's lock (the kernel with ``threads`` threads, :func:`set_threads`, when
    given); write ``DONE`` (last) on success, ``FAILED`` on failure. ``fingerprint``: the
    profile's (:func:`profile_fingerprint` with the grid's ``profile_ignore``; default: the
    whole profile's), recorded in ``DONE``.
    Returns a result dict and never raises for a notebook error: ``ok`` (bool), and
    ``busy`` (another sweep holds the lock: nothing was done) or ``elsewhere`` (another
    sweep finished it while this one waited)."""
    from .. import locks
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    held = locks.try_lock(out_dir / ".lock", what=f"sweep configuration {out_dir.name}")
    if held is None:
        return {"ok": False, "busy": True, "holder": locks.holder(out_dir / ".lock"),
                "notebook": str(out_dir / "executed.ipynb")}
    try:
        if fingerprint is None:
            fingerprint = profile_fingerprint(params["PROFILE"], params=params)
        info = _current_done(out_dir, fingerprint)
        if info is not None:
            return {**info, "ok": True, "elsewhere": True, "notebook": str(out_dir / "executed.ipynb")}
        locks.note("execute", str(out_dir))
        if threads is not None:
            set_threads(threads)
        return _execute(notebook, out_dir, params, cwd, fingerprint)
    finally:
        held.release()


def _execute(notebook: str, out_dir: Path, params: dict, cwd: str | None, fingerprint: str) -> dict:
    import socket

    import nbformat
    import papermill as pm
    for stale in ("DONE", "FAILED"):
        (out_dir / stale).unlink(missing_ok=True)
    write_json(out_dir / "params.json", params)
    executed = out_dir / "executed.ipynb"
    t0 = time.time()
    # the kernel inherits this process's stderr: send its messages to kernel.log, not into
    # the sweep's progress display
    sys.stderr.flush()
    saved = os.dup(2)
    log_fd = os.open(out_dir / "kernel.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        pm.execute_notebook(str(notebook), str(executed), parameters=params, kernel_name="python3",
                            progress_bar=False, log_output=False, cwd=cwd)
    except Exception as e:  # noqa: BLE001 - report any failure, go on with the others
        if isinstance(e, pm.PapermillExecutionError):
            msg = f"{e.ename}: {e.evalue} (cell {e.exec_count})"
        else:
            msg = "".join(traceback.format_exception_only(type(e), e)).strip()
        info = {"error": msg, "notebook": str(executed), "wall_s": time.time() - t0,
                "host": socket.gethostname(), "pid": os.getpid(),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "params": params}
        write_json(out_dir / "FAILED", info)
        return {"ok": False, **info}
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
    info = {"params": params, "profile_sha": fingerprint,
            "notebook": str(executed), "wall_s": time.time() - t0,
            "threads": os.environ.get("MDLIB_THREADS"), "run_dir": None,
            "host": socket.gethostname(), "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        found = _RUN_DIR.findall(_stream_text(nbformat.read(str(executed), as_version=4)))
    except Exception:  # noqa: BLE001 - a missing RUN_DIR line is not an error
        found = []
    if found:
        run_dir = Path(found[-1].strip())
        info["run_dir"] = str(run_dir)
        target = run_dir / "executed.ipynb"
        if run_dir.is_dir() and not target.exists():
            tmp = run_dir / f".executed.ipynb.{os.getpid()}.tmp"
            shutil.copyfile(executed, tmp)
            os.replace(tmp, target)
    write_json(out_dir / "DONE", info)
    return {"ok": True, **info}


def shared_keys(grid: Grid, params: dict, profile: str) -> list[str]:
    """Resources that several configurations use and the first one creates (for notebook
    06: an offline method's guidance classifier, diffusion model and bank), from the
    grid's hooks. Two configurations sharing a key never start together until one of them
    has finished: the resource locks would make the second one wait idle (holding its
    worker, or its GPU on Ray) while the first trains the resource. Empty without hooks."""
    fn = getattr(load_hooks(grid), "shared_keys", None)
    return list(fn({**grid.notebook_params, **params}, profile)) if fn else []


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, unit="run", desc="sweep", disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)


class LocalPool:
    """``--backend local``: configurations executed by spawned worker processes."""
    poll_s = None  # the set of workers does not change: wait for a result without polling

    def __init__(self, workers: int, threads: int):
        self.workers, self.threads = workers, threads
        self.pool = ProcessPoolExecutor(max_workers=workers,
                                        mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_worker_init, initargs=(threads,))

    def capacity(self) -> int:
        return self.workers

    def submit(self, notebook: str, out_dir: str, params: dict, cwd: str, fingerprint: str | None = None):
        return self.pool.submit(execute_one, notebook, out_dir, params, cwd, fingerprint=fingerprint)

    def wait(self, handles: list, timeout: float | None) -> list:
        done, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, handle) -> dict:
        try:
            return handle.result()
        except BrokenProcessPool as e:
            return {"ok": False, "error": f"worker process died: {e}"}
        except Exception as e:  # noqa: BLE001
            return {"ok": False, "error": repr(e)}

    def stop(self) -> None:
        """Ctrl-C: stop the workers; their kernels exit with them (ipykernel's parent
        poller); nothing unfinished has DONE, so a rerun resumes."""
        for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
            proc.terminate()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.pool.shutdown()


def run_sweep(path: str | os.PathLike, profile: str | None = None, jobs: int | None = None,
              limit: int | None = None, threads: int | None = None, dry_run: bool = False,
              progress: bool = True, log=print, backend: str = "local",
              address: str | None = None, ray_init: dict | None = None,
              retry_busy_s: float = 2.0) -> dict:
    """Execute every configuration of the grid at ``path`` that has no ``DONE`` yet.

    ``backend``: ``"local"`` (``jobs`` worker processes, default 1, with ``threads``
    each) or ``"ray"`` (``address``: None starts a local Ray instance with ``ray_init``
    options, e.g. ``{"num_cpus": 2, "object_store_memory": 100 << 20}``; or joins the
    cluster at ``address``; ``jobs``, if given, caps the configurations in flight).
    A configuration that another sweep is executing is tried again every
    ``retry_busy_s`` seconds.

    Returns ``{"total", "skipped", "done", "elsewhere", "failed", "pending", "failures",
    "sweep_dir", "backend"}``: ``skipped`` were already done, ``done`` / ``failed`` ran
    now, ``elsewhere`` were finished meanwhile by another sweep, ``pending`` were left out
    by ``limit`` (or ``dry_run``); ``failures`` lists ``{hash, params, error,
    notebook}``."""
    if backend not in ("local", "ray"):
        raise GridError(f"unknown backend '{backend}' (local | ray)")
    grid = load_grid(path, profile)
    prof = _profile(grid, profile)
    root = sweep_dir(grid, prof)
    rows = status(grid, prof)
    todo = [r for r in rows if r["state"] != "done"]
    skipped = len(rows) - len(todo)
    run_now = todo if limit is None else todo[:max(0, int(limit))]
    summary = {"total": len(rows), "skipped": skipped, "done": 0, "elsewhere": 0, "failed": 0,
               "pending": len(todo) - (0 if dry_run else len(run_now)), "failures": [],
               "sweep_dir": str(root), "backend": backend}
    nb = grid.notebook
    nb = nb.relative_to(paths.REPO_ROOT) if nb.is_relative_to(paths.REPO_ROOT) else nb
    if backend == "local":
        jobs = max(1, int(jobs or 1))
        if threads is None:
            env = os.environ.get("MDLIB_THREADS")
            threads = int(env) if env else _default_threads(jobs)
        how = f"jobs={jobs} threads/job={threads}"
    else:
        req = resources(prof)
        how = (f"ray {'local instance' if not address else address}: per configuration "
               f"num_cpus={req['num_cpus']} num_gpus={req['num_gpus']} memory_gb={req['memory_gb']}"
               + (f" jobs<={jobs}" if jobs else ""))
    log(f"sweep {grid.name}: profile={prof} notebook={nb}"
        f" configurations={len(rows)} done={skipped} to run={len(run_now)} {how} -> {root}")
    if dry_run:
        for r in rows:
            mark = "run  " if r in run_now else ("done " if r["state"] == "done" else "later")
            log(f"  [{mark}] {r['hash']} {json.dumps(r['params'], sort_keys=True)}")
        return summary
    if not run_now:
        return summary
    for r in run_now:
        r["keys"] = shared_keys(grid, r["params"], prof)
    if backend == "local":
        pool = LocalPool(min(jobs, len(run_now)), threads)
    else:
        from .ray_backend import ClusterError, RayPool
        try:
            pool = RayPool(execute_one, req, address=address, init=ray_init, jobs=jobs)
        except ClusterError as e:  # no Ray, or no node fits one configuration
            raise GridError(f"{grid.path}: {e}") from None
    try:
        _schedule(grid, prof, run_now, pool, summary, progress, len(rows), skipped, retry_busy_s)
    except KeyboardInterrupt:
        pool.stop()
        raise
    else:
        pool.close()
    log(f"sweep {grid.name}: ran {summary['done'] + summary['failed']}, done={summary['done']} "
        f"skipped={skipped} elsewhere={summary['elsewhere']} failed={summary['failed']} "
        f"pending={summary['pending']}")
    return summary


def _schedule(grid: Grid, prof: str, run_now: list[dict], pool, summary: dict, progress: bool,
              total: int, skipped: int, retry_busy_s: float) -> None:
    """Start what may start (in order: capacity, shared keys, busy retries), collect
    results, until every configuration of ``run_now`` is done, failed or done elsewhere."""
    bar = _progress(total, skipped, progress)
    queue, inflight = list(run_now), {}
    retry_at: dict[str, float] = {}  # configurations another sweep holds: when to try again
    warmed: set[str] = set()  # shared resources that a finished configuration created
    busy: Counter = Counter()  # shared resources of the configurations in flight

    shown: list = [None]

    def postfix() -> None:  # redrawn when a count changes
        counts = dict(running=len(inflight), done=summary["done"] + summary["elsewhere"],
                      failed=summary["failed"], waiting=len(retry_at))
        if counts != shown[0]:
            shown[0] = counts
            bar.set_postfix(counts)

    def record(r: dict, res: dict) -> None:
        res.setdefault("notebook", str(r["dir"] / "executed.ipynb"))
        if res.get("elsewhere"):
            summary["elsewhere"] += 1
        elif res["ok"]:
            summary["done"] += 1
        else:
            summary["failed"] += 1
            summary["failures"].append({"hash": r["hash"], "params": r["params"],
                                        "error": res["error"], "notebook": res["notebook"]})
            if not (r["dir"] / "FAILED").exists() and not (r["dir"] / "DONE").exists():
                # the worker died before it could say so: --status shows it failed
                write_json(r["dir"] / "FAILED", {"error": res["error"], "notebook": res["notebook"],
                                                 "params": r["params"], "written_by": "sweep driver",
                                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
            bar.write(f"FAILED {r['hash']} {json.dumps(r['params'], sort_keys=True)}\n"
                      f"  error: {res['error']}\n  notebook: {res['notebook']}", file=sys.stderr)
        bar.update(1)
        postfix()

    cwd = str(grid.notebook.parent)
    fingerprint = fingerprinter(prof, grid.profile_ignore)
    postfix()
    try:
        while queue or inflight:
            now = time.time()
            cap = pool.capacity()
            for r in list(queue):  # start what may start, in order
                if len(inflight) >= cap:
                    break
                if retry_at.get(r["hash"], 0.0) > now:
                    continue  # another sweep is executing it
                if any(k not in warmed and busy[k] for k in r["keys"]):
                    continue  # another configuration is creating a resource this one needs
                queue.remove(r)
                try:
                    handle = pool.submit(str(grid.notebook), str(r["dir"]),
                                         {"PROFILE": prof, **r["params"]}, cwd,
                                         fingerprint(r["params"]))
                except BrokenProcessPool as e:
                    for q in [r] + queue:
                        record(q, {"ok": False, "error": f"not run, worker pool broken: {e}"})
                    queue.clear()
                    break
                inflight[handle] = r
                busy.update(r["keys"])
            postfix()
            if not inflight:
                if not queue:
                    break
                time.sleep(max(0.05, min(retry_at.values(), default=now + 0.5) - time.time()))
                continue
            timeout = pool.poll_s
            if retry_at:
                wake = max(0.05, min(retry_at.values()) - time.time())
                timeout = wake if timeout is None else min(timeout, wake)
            for handle in pool.wait(list(inflight), timeout):
                r = inflight.pop(handle)
                busy.subtract(r["keys"])
                res = pool.result(handle)
                if res.get("busy"):  # executing in another sweep: try again later
                    retry_at[r["hash"]] = time.time() + retry_busy_s
                    queue.append(r)
                    continue
                retry_at.pop(r["hash"], None)
                if res["ok"]:
                    warmed.update(r["keys"])
                record(r, res)
    finally:
        bar.close()


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mdlib.sweep",
                                 description="Execute a grid of notebook configurations with papermill "
                                             "(see the module docstring for the grid format).")
    ap.add_argument("grid", nargs="?", help="grid YAML file, e.g. studies/main_cpu.yaml")
    ap.add_argument("--grids-of", metavar="PROFILE",
                    help="print the grids `make study` sweeps for PROFILE, in order, and exit")
    ap.add_argument("--profile", help="override the grid's profile (smoke | cpu | gpu)")
    ap.add_argument("--backend", choices=("local", "ray"), default="local",
                    help="local worker processes (default) or Ray tasks")
    ap.add_argument("--address", help="ray: join this cluster (auto | host:port | ray://host:10001); "
                                      "default: RAY_ADDRESS if set, else start a local Ray instance")
    ap.add_argument("--jobs", type=int, help="local: configurations executed at once (default 1); "
                                             "ray: at most this many in flight (default: what the cluster holds)")
    ap.add_argument("--threads", type=int, help="local: torch / OpenMP threads per job "
                                                "(default: MDLIB_THREADS, else cpus // jobs); "
                                                "ray: the profile's sweep.num_cpus")
    ap.add_argument("--ray-cpus", type=int, help="ray, local instance: CPUs it offers (default: all)")
    ap.add_argument("--ray-gpus", type=int, help="ray, local instance: GPUs it offers (default: all detected)")
    ap.add_argument("--object-store-mb", type=int, default=256,
                    help="ray, local instance: object store size (default 256; results are small)")
    ap.add_argument("--limit", type=int, help="run at most N of the missing configurations")
    ap.add_argument("--dry-run", action="store_true", help="list configurations, run nothing")
    ap.add_argument("--status", action="store_true", help="list done / running / missing / failed configurations")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON line at the end")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    if a.grids_of:
        found = profile_grids(a.grids_of)
        if not found:
            print(f"no sweep grids for profile {a.grids_of} (studies/*_{a.grids_of}.yaml)", file=sys.stderr)
            return 2
        for f in found:
            print(f.relative_to(paths.REPO_ROOT))
        return 0
    if not a.grid:
        ap.error("a grid file is needed (or --grids-of PROFILE)")
    if a.backend == "local" and (a.address or a.ray_cpus or a.ray_gpus):
        print("error: --address / --ray-cpus / --ray-gpus need --backend ray", file=sys.stderr)
        return 2
    try:
        if a.status:
            rows = status(a.grid, a.profile)
            for r in rows:
                extra = f" run={r['run_dir']}" if r.get("run_dir") else ""
                extra += f" by {r['holder']}" if r.get("holder") else ""
                print(f"{r['state']:8s}{r['hash']} {json.dumps(r['params'], sort_keys=True)}{extra}")
            counts = {s: sum(r["state"] == s for r in rows) for s in ("done", "running", "missing", "failed")}
            stale = sum(r["state"] == "stale" for r in rows)
            print(f"{len(rows)} configurations: " + ", ".join(f"{k}={v}" for k, v in counts.items())
                  + (f", stale={stale} (done under an earlier version of the profile)" if stale else ""))
            return 0
        init = {"object_store_memory": int(a.object_store_mb) << 20}
        if a.ray_cpus:
            init["num_cpus"] = a.ray_cpus
        if a.ray_gpus is not None:
            init["num_gpus"] = a.ray_gpus
        summary = run_sweep(a.grid, profile=a.profile, jobs=a.jobs, limit=a.limit, threads=a.threads,
                            dry_run=a.dry_run, progress=not a.no_progress, backend=a.backend,
                            address=a.address, ray_init=init)
    except GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    if a.json:
        print("SUMMARY=" + json.dumps(summary, sort_keys=True, default=str))
    if summary["failures"]:
        print(f"{summary['failed']} configuration(s) failed:", file=sys.stderr)
        for f in summary["failures"]:
            print(f"  {f['hash']} {json.dumps(f['params'], sort_keys=True)}: {f['error']}\n"
                  f"    partially executed notebook: {f['notebook']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # run from the importable module, so that the workers unpickle mdlib.runs.sweep.execute_one
    from mdlib.runs.sweep import main as _main
    sys.exit(_main())
