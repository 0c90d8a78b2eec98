"""The MedDiffuseMix study's protocol (paper 000; notebooks 01-11): which methods it
compares, their parameters at an equal augmentation budget, the per-dataset
limited-data setting and training recipe, the smoke configurations CI trains for the
result notebooks, and the checks and shared-resource keys the sweep runner applies to
its grids (``hooks: mdlib.studies.meddiffusemix.study`` in ``studies/*.yaml``).

Training itself goes through :mod:`mdlib.runs.tasks`.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd

from ... import augment, data as data_mod, profiles
from ...runs import results, tasks


#: methods that an online p (share of augmented images per batch) applies to
ONLINE_METHODS = ("standard_aug", "mixup", "saliencymix")


OFFLINE_METHODS = ("genmix", "dba", "meddiffusemix")


ALL_METHODS = ("no_aug",) + ONLINE_METHODS + OFFLINE_METHODS


#: MedDiffuseMix's per-modality conservativeness omega (METHODS.md section 1)
OMEGA = {"xray": 0.7, "ultrasound": 0.7}


def method_params(prof: dict, dataset: str, method: str, **overrides) -> dict:
    """The profile's parameters of ``method`` for ``dataset``, with the equal budget of
    the module docstring of :mod:`mdlib.augment`: online methods augment each image with
    probability ``p = augment.fraction`` (profile), offline methods add
    ``n_per_image = p / (1 - p)`` images per real one. MedDiffuseMix: ``omega`` from the
    dataset's modality, ``sigma`` scaled with the image size from ``sigma_px_at_28``."""
    if method not in ALL_METHODS:
        raise ValueError(f"unknown augmentation method '{method}'; known: {list(ALL_METHODS)}")
    sec = prof.get("augment") or {}
    frac = float(sec.get("fraction", 0.5))
    if not 0 < frac < 1:
        raise ValueError(f"profile {prof['name']}: augment.fraction={frac} must be in (0, 1)")
    params = dict(sec.get(method) or {})
    if method in ONLINE_METHODS:
        params.setdefault("p", frac)
    elif method in OFFLINE_METHODS:
        params.setdefault("n_per_image", frac / (1 - frac))
    spec = data_mod.MEDMNIST.get(dataset) or data_mod.FOLDERS.get(dataset)
    modality = spec.modality if spec is not None else "unknown"
    if method == "standard_aug":
        params.setdefault("hflip", modality == "histopathology")
        params.setdefault("vflip", modality == "histopathology")
    if method == "meddiffusemix":
        mdm = dict(prof.get("meddiffusemix") or {})
        s28 = mdm.pop("sigma_px_at_28", 1.5)
        mdm.setdefault("sigma", round(float(s28) * prof["image_size"] / 28, 4))
        mdm.setdefault("omega", OMEGA.get(modality, 1.0))
        params = {**mdm, **params}
    params.update(overrides)
    return params


def add_variants(df: pd.DataFrame, prof: dict) -> pd.DataFrame:
    """Add a ``variant`` column: each run's method parameters relative to the profile's
    defaults for that method and dataset (``mdlib.studies.meddiffusemix.study.method_params``)."""
    out = df.copy()
    labels = []
    for ds, m, p in out[["dataset", "method", "params"]].itertuples(index=False):
        d = augment.get(m, **method_params(prof, ds, m)).config()
        d.pop("method")
        labels.append(results.variant_label(json.loads(p), d))
    out["variant"] = labels
    return out


def smoke_configs(task: str) -> list[tuple[str, str, dict, int]]:
    """The tiny configurations (dataset, method, method overrides, seed) that the
    ``smoke`` profile's result notebooks create for themselves when CI has not run a
    sweep: every notebook must execute headlessly on its own."""
    d = "breastmnist"
    if task == "study":
        return [(d, m, {}, s) for m in ALL_METHODS for s in (0, 1)]
    if task == "ablation":
        return [(d, "meddiffusemix", kw, s) for kw in
                ({}, {"use_saliency": False}, {"adaptive": False}, {"smooth": False},
                 {"refine": False}, {"check": False}) for s in (0, 1)]
    if task == "sensitivity":
        kws = ([{"alpha_base": a} for a in (0.5, 1.0, 2.0)] + [{"sigma": s} for s in (0.0, 3.0)]
               + [{"tau_h": h, "tau_b": b} for h, b in ((0.5, 0.2), (0.5, 0.3), (0.7, 0.2), (0.7, 0.3),
                                                         (0.6, 0.2))])
        return [(d, "meddiffusemix", kw, 0) for kw in kws]
    raise ValueError(f"no smoke configurations for task '{task}'")


def ensure_smoke_runs(prof: dict, task: str, progress: bool = False) -> list[str]:
    """Create the smoke configurations of ``task`` that are missing (smoke profile only);
    returns their run directories."""
    if prof["name"] != "smoke":
        raise ValueError("ensure_smoke_runs is for the smoke profile only; run the sweep for "
                         f"profile '{prof['name']}'")
    return [str(tasks.run_classifier(prof, d, s, m, method_params=method_params(prof, d, m, **kw),
                                     task=task, progress=progress).dir)
            for d, m, kw, s in smoke_configs(task)]


#: the sweep grid (studies/<name>_cpu.yaml) that produces each task's runs
TASK_GRIDS = {"study": "main", "ablation": "ablation", "sensitivity": "sensitivity"}

#: the notebook whose runs the result notebooks read (one classifier per execution)
TRAIN_NOTEBOOK = "06_train_classifier"


def grid_files(profile: str) -> list[Path]:
    """The sweep grids of ``profile``, the ones ``make study`` runs
    (:func:`mdlib.runs.sweep.profile_grids`)."""
    from ...runs import sweep
    return sweep.profile_grids(profile)


def current_runs(prof: dict, task: str) -> list[str] | None:
    """The run directories that the profile's configurations of ``task`` produce *as the
    profile is now*: those recorded by the current ``DONE`` of every configuration of the
    profile's grids (:func:`grid_files`) that executes notebook 06 with this ``TASK``
    (:func:`mdlib.runs.sweep.status`: a configuration done under an earlier version of the
    profile is stale and left out), plus, on the smoke profile, the smoke configurations
    (created when missing). So a run left in ``runs/<task>/<profile>/`` by an earlier
    profile or grid never enters a table. None (every run counts) when the profile has no
    grid that runs notebook 06."""
    from ...runs import sweep
    grids = [sweep.load_grid(g, prof["name"]) for g in grid_files(prof["name"])]
    grids = [gr for gr in grids if Path(gr.notebook).stem == TRAIN_NOTEBOOK]
    out = ensure_smoke_runs(prof, task) if prof["name"] == "smoke" else []
    if not grids and prof["name"] != "smoke":
        return None
    for gr in grids:
        default_task = gr.notebook_params.get("TASK")
        out += [r["run_dir"] for r in sweep.status(gr, prof["name"])
                if r["state"] == "done" and r.get("run_dir")
                and r["params"].get("TASK", default_task) == task]
    return out


def task_runs(prof: dict, task: str) -> pd.DataFrame:
    """The finished runs of ``task`` for the result notebooks: the profile's current ones
    (:func:`current_runs`). On the ``smoke`` profile the tiny smoke configurations are
    created first when missing (CI runs every notebook on its own); on other profiles an
    empty result is a clear error naming the sweep to run."""
    runs = results.collect(task, prof["name"], runs=current_runs(prof, task))
    if runs.empty:
        grid = TASK_GRIDS.get(task, task)
        raise RuntimeError(f"no finished runs under runs/{task}/{prof['name']}/: run the sweep "
                           f"first, e.g. python -m mdlib.sweep studies/{grid}_cpu.yaml "
                           f"--profile {prof['name']}")
    return runs


# --------------------------------------------------------------------------- sweep hooks
def check_config(params: dict, prof: dict | None) -> None:
    """Sweep hook (``hooks: mdlib.studies.meddiffusemix.study``): refuse an unknown
    ``METHOD``, ``METHOD_PARAMS`` that are not a mapping, and parameters the method's
    constructor refuses (nothing is trained)."""
    ds, m, mp = params.get("DATASET"), params.get("METHOD"), params.get("METHOD_PARAMS")
    if m is not None and m not in ALL_METHODS:
        raise ValueError(f"unknown method '{m}'; known: {list(ALL_METHODS)}")
    if mp is not None and not isinstance(mp, dict):
        raise ValueError(f"METHOD_PARAMS must be a mapping, got {mp!r}")
    if prof is not None and m is not None and ds in data_mod.dataset_names():
        try:
            augment.get(m, **method_params(prof, ds, m, **(mp or {})))
        except (TypeError, ValueError) as e:
            raise ValueError(f"method parameters refused: {e}") from None


def shared_keys(params: dict, profile: str) -> list[str]:
    """Sweep hook: the resources a configuration of notebook 06 shares with others (an
    offline method's guidance classifier and diffusion model, keyed by the data they are
    trained on and their seed, and its bank, which classifiers of other backbones reuse).
    Empty for online methods."""
    if params.get("METHOD") not in OFFLINE_METHODS or "DATASET" not in params:
        return []
    size = params.get("IMAGE_SIZE")
    prof = profiles.load(profile, overrides={"image_size": size} if size else None)
    # the same resolution as notebook 06: the study setting, then the seeds
    prof, _ = tasks.study_setup(prof, params["DATASET"], params.get("LIMITED_DATA"))
    seed = params.get("SEED")
    base = [params["DATASET"], prof["image_size"], prof.get("limited_data")]
    rs = tasks.resource_seed(prof, seed)
    return [json.dumps(["resources", *base, rs], sort_keys=True),
            json.dumps(["bank", *base, seed, params["METHOD"], params.get("METHOD_PARAMS")],
                       sort_keys=True)]


# --------------------------------------------------------------------------- the study's resources
def study_configs(prof: dict, datasets=None) -> list[tuple[str, int, dict]]:
    """``(dataset, image size, profile copy)`` for every dataset and image size the study
    trains on: the profile's ``study_datasets`` at its ``image_size``, then the resolution
    checks of ``study_sizes`` (``{dataset: [sizes]}``). Each profile copy has the dataset's
    study setting applied (:func:`mdlib.runs.tasks.study_setup`: its limited-data subset),
    so that notebooks 01 and 03-05 show exactly the resources the sweeps train and use
    (the same run hashes). ``datasets`` restricts the list (a list or a comma-separated
    string)."""
    if isinstance(datasets, str):
        datasets = [d.strip() for d in datasets.split(",") if d.strip()]
    names = list(datasets or prof.get("study_datasets") or prof.get("datasets") or [])
    unknown = [n for n in names if n not in data_mod.dataset_names()]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; known: {data_mod.dataset_names()}")
    out = []
    for name in names:
        sizes = [int(prof["image_size"])]
        sizes += [int(s) for s in (prof.get("study_sizes") or {}).get(name, []) if int(s) not in sizes]
        for size in sizes:
            p = copy.deepcopy(prof)
            p["image_size"] = size
            p, _ = tasks.study_setup(p, name)
            out.append((name, size, p))
    return out


def cell_labels(df: pd.DataFrame, prof: dict) -> list[str]:
    """A readable label per row of a runs / tests table: ``"<dataset> · <model>"``, with the
    image size appended where it is not the profile's (e.g. the 64 px resolution check)."""
    size = int(prof["image_size"])
    return [f"{d} · {m}" + ("" if int(s) == size else f" · {int(s)} px")
            for d, m, s in zip(df["dataset"], df["model"], df["image_size"])]
