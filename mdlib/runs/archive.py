"""Commit-sized records of finished classifier runs, and putting them back.

A classifier run directory (``runs/<task>/<profile>/<hash>/``, :mod:`mdlib.runs.store`)
holds its results as small text files (``config.json``, ``environment.json``,
``metrics.csv``, ``history.csv``, ``test_predictions.csv``, ``train_indices.csv``,
``DONE``) next to large binaries (``model.safetensors``, ``test_features.npz``, the
executed notebook). The text files are everything the result tables need (notebook 07:
Table 2, Table 3, the paired tests and the bootstraps over test images), so they are what
:func:`export` copies into ``results/<profile>/`` (a folder of the repository), together
with the ``DONE`` of every sweep configuration that produced them
(``runs/sweeps/<profile>/<grid>/<hash>/DONE``, with its profile fingerprint).

:func:`restore` copies them back under the runs root, so that a reader can recompute the
tables without training anything, and a sweep started afterwards skips every restored
configuration whose profile fingerprint is still current (a changed profile makes them
stale, as for any run). A restored run has no weights, features or bank: its ``DONE``
says so (``"restored_from"``, ``"missing"``), and what needs them (Grad-CAM figures,
t-SNE, bank galleries) names the run to execute again (:func:`require_files`).

    python -m mdlib.runs.archive export --profile cpu     # runs/ -> results/cpu/
    python -m mdlib.runs.archive restore --profile cpu    # results/cpu/ -> runs/

Writes are atomic per file; both directions leave files that are already there alone.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from .. import paths
from ..io import atomic_path, write_json
from . import store

#: the text files of a classifier run that the archive keeps
RUN_FILES = ("config.json", "environment.json", "metrics.csv", "history.csv",
             "test_predictions.csv", "train_indices.csv", "bank.json", "DONE")
#: what a restored run lacks (large binaries, rebuilt by running the configuration again)
NOT_KEPT = ("model.safetensors", "test_features.npz")
#: the classifier tasks of the studies that sweep notebook 06
TASKS = ("study", "ablation", "sensitivity")


def repo_results(profile: str) -> Path:
    """``results/<profile>/`` of the repository holding this package."""
    return Path(__file__).resolve().parents[2] / "results" / profile


def _copy(src: Path, dst: Path) -> bool:
    if dst.exists():
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return True


def _sweep_done(root: Path, profile: str):
    """(grid name, config hash, DONE dict) of every finished sweep configuration."""
    for f in sorted((root / "sweeps" / profile).glob("*/*/DONE")):
        try:
            info = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        yield f.parent.parent.name, f.parent.name, info


def export(profile: str, dest: str | Path | None = None, root: str | Path | None = None,
           tasks=TASKS) -> dict:
    """Copy the records of every finished classifier run of ``tasks`` that a finished
    sweep configuration points to into ``dest`` (default ``results/<profile>/``):
    ``<task>/<hash>/<RUN_FILES>`` and ``sweeps/<grid>/<hash>/DONE`` (its ``run_dir``
    stored relative to the runs root). Returns counts."""
    root = Path(root or paths.runs_root())
    dest = Path(dest or repo_results(profile))
    n_runs = n_sweep = 0
    for grid, h, info in _sweep_done(root, profile):
        rd = info.get("run_dir")
        if not rd:
            continue
        rd = Path(rd)
        task = rd.parent.parent.name
        if task not in tasks or not (rd / "DONE").is_file() or not (rd / "metrics.csv").is_file():
            continue
        new = [_copy(rd / n, dest / task / rd.name / n) for n in RUN_FILES if (rd / n).is_file()]
        n_runs += new[-1]  # DONE, copied last: the run's record is complete
        rel = dict(info, run_dir=f"{task}/{profile}/{rd.name}")
        out = dest / "sweeps" / grid / h / "DONE"
        if not out.exists():
            write_json(out, rel)
            n_sweep += 1
    if n_runs or n_sweep:  # which machine exported what (runs of one session share it)
        log = dest / "exports.json"
        prev = json.loads(log.read_text()) if log.is_file() else []
        write_json(log, prev + [{"exported": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": int(n_runs),
                                 "sweep_configurations": n_sweep, **store.cpu_info()}])
    return {"runs": n_runs, "sweep_configurations": n_sweep, "dest": str(dest)}


def restore(profile: str, src: str | Path | None = None, root: str | Path | None = None) -> dict:
    """Copy the archive ``src`` (default ``results/<profile>/``) back under the runs root:
    run records to ``runs/<task>/<profile>/<hash>/`` (their ``DONE`` gains
    ``restored_from`` and ``missing``) and sweep ``DONE`` files to
    ``runs/sweeps/<profile>/<grid>/<hash>/`` (``run_dir`` made absolute). Nothing that is
    already there is replaced. Returns counts."""
    root = Path(root or paths.runs_root())
    src = Path(src or repo_results(profile))
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no archived run records (python -m mdlib.runs.archive "
                                f"export --profile {profile} writes them)")
    n_runs = n_sweep = 0
    for task_dir in sorted(p for p in src.iterdir() if p.is_dir() and p.name != "sweeps"):
        for rd in sorted(p for p in task_dir.iterdir() if p.is_dir()):
            out = root / task_dir.name / profile / rd.name
            if (out / "DONE").exists():
                continue
            for f in rd.iterdir():
                if f.name != "DONE":
                    _copy(f, out / f.name)
            info = json.loads((rd / "DONE").read_text())
            info.update(restored_from=str(rd), missing=list(NOT_KEPT))
            write_json(out / "DONE", info)  # last: the run counts as finished only now
            n_runs += 1
    for f in sorted((src / "sweeps").glob("*/*/DONE")):
        out = root / "sweeps" / profile / f.parent.parent.name / f.parent.name / "DONE"
        if out.exists():
            continue
        info = json.loads(f.read_text())
        if info.get("run_dir"):
            info["run_dir"] = str(root / info["run_dir"])
        write_json(out, info)
        n_sweep += 1
    return {"runs": n_runs, "sweep_configurations": n_sweep, "root": str(root)}


def require_files(run_dir: str | Path, *names: str) -> None:
    """Raise a clear error when a run restored from the archive lacks ``names``."""
    run_dir = Path(run_dir)
    missing = [n for n in names if not (run_dir / n).is_file()]
    if not missing:
        return
    try:
        info = json.loads((run_dir / "DONE").read_text())
    except (OSError, ValueError):
        info = {}
    how = (f"it was restored from {info['restored_from']} (records only): delete its DONE and "
           "run its sweep again to rebuild them" if info.get("restored_from") else
           "the run is incomplete: delete its DONE and run it again")
    raise FileNotFoundError(f"run {run_dir} has no {', '.join(missing)}; {how}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mdlib.runs.archive", description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=("export", "restore"))
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--dir", default=None, help="archive folder (default results/<profile>/)")
    a = ap.parse_args(argv)
    fn = export if a.action == "export" else restore
    print(json.dumps(fn(a.profile, a.dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
