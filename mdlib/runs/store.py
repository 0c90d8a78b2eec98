"""Run directories: ``<runs root>/<task>/<profile>/<hash of the resolved config>/``.

A run directory holds the resolved configuration (``config.json``), the environment
(``environment.json``: package versions, git revision, device), whatever the run writes
(tidy CSV metrics, checkpoints), and, written last, a ``DONE`` marker. Every write is
atomic (temporary file, then rename), so a killed run leaves no file half-written and
nothing that looks finished: rerunning it redoes only what has no ``DONE``.

Processes (and machines sharing the runs root) that need the same run create it once:
:func:`run_once` and :meth:`Run.claim` hold the run's lock (``<run dir>/.lock``,
:mod:`mdlib.locks`) while creating it; a process that finds it locked waits, then finds
it done. A crashed holder's lock is released by the kernel (see :mod:`mdlib.locks`).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from .. import locks, paths
from ..io import jsonable, write_csv, write_json

_PACKAGES = ("numpy", "pandas", "scikit-learn", "torch", "torchvision", "timm", "diffusers",
             "grad-cam", "safetensors", "mdlib")


def config_hash(config: dict) -> str:
    blob = json.dumps(jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.REPO_ROOT, text=True,
                             capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=paths.REPO_ROOT, text=True, capture_output=True,
                               timeout=10).stdout.strip()
        return (rev or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict:
    import torch
    versions = {}
    for p in _PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    dev = "cpu"
    if torch.cuda.is_available():
        dev = f"cuda: {torch.cuda.get_device_name(0)}"
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "packages": versions, "git": git_revision(), "device": dev,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            **cpu_info()}


def cpu_info() -> dict:
    """The CPU model and the instruction set torch's kernels use on it: float results of
    one configuration are bit-identical on one machine, but another CPU (e.g. AVX-512 vs
    AVX2 kernels) rounds differently, so runs compared with each other should share it."""
    import torch
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or None
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        cap = None
    return {"cpu_model": model, "cpu_capability": cap}


class Run:
    """One configuration's directory. ``Run(task, profile, config).done`` tells whether
    it finished; :meth:`finish` marks it finished (last)."""

    def __init__(self, task: str, profile: str, config: dict, root: str | os.PathLike | None = None):
        self.task, self.profile = task, profile
        self.config = jsonable(config)
        self.hash = config_hash(self.config)
        self.dir = Path(root or paths.runs_root()) / task / profile / self.hash
        self._t0: float | None = None

    def __repr__(self) -> str:
        return f"Run({self.task}/{self.profile}/{self.hash}, done={self.done})"

    @property
    def done(self) -> bool:
        return (self.dir / "DONE").exists()

    def path(self, name: str) -> Path:
        return self.dir / name

    def lock(self, timeout: float | None = None):
        """Context manager holding this run's lock (other processes wait)."""
        return locks.lock(self.dir / ".lock", what=f"run {self.task}/{self.profile}/{self.hash}",
                          timeout=timeout)

    @contextmanager
    def claim(self):
        """``with run.claim() as todo:``: ``todo`` is False when the run is done (no lock
        taken); else the run's lock is held for the block and ``todo`` tells whether it
        is still not done (another process may have finished it while this one waited).
        A process that creates the run inside the block is recorded in the work log."""
        if self.done:
            yield False
            return
        with self.lock():
            todo = not self.done
            if todo:
                locks.note("create", f"{self.task}/{self.profile}/{self.hash}", dir=str(self.dir))
            yield todo

    def start(self) -> "Run":
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.path("config.json"), {"task": self.task, "profile": self.profile,
                                              "hash": self.hash, "config": self.config})
        write_json(self.path("environment.json"), environment())
        self._t0 = time.time()
        return self

    def finish(self, **info: Any) -> None:
        wall = time.time() - self._t0 if self._t0 else None
        write_json(self.path("DONE"), dict(info, wall_s=wall, finished=time.strftime("%Y-%m-%dT%H:%M:%S")))

    def info(self) -> dict:
        return json.loads(self.path("DONE").read_text())

    def write_json(self, name: str, obj: Any) -> None:
        write_json(self.path(name), obj)

    def write_csv(self, name: str, df) -> None:
        write_csv(self.path(name), df)

    def read_csv(self, name: str):
        import pandas as pd
        return pd.read_csv(self.path(name))

    def read_json(self, name: str) -> Any:
        return json.loads(self.path(name).read_text())


def run_once(task: str, profile: str, config: dict, fn: Callable[[Run], dict | None],
             root: str | os.PathLike | None = None) -> Run:
    """Run ``fn(run)`` unless this configuration already finished; return the run.
    ``fn``'s returned dict (if any) is stored in the ``DONE`` marker."""
    run = Run(task, profile, config, root)
    with run.claim() as todo:  # one process creates it; the others wait and find it done
        if todo:
            run.start()
            info = fn(run) or {}
            run.finish(**info)
    return run
