"""The DiffMIC-v2 study protocol (paper ``003_*``; notebooks 17-18): which models are trained,
on what, with which budget, and where their runs live.

Settings
--------
A *setting* is a dataset at an image size: ``"breastmnist"`` (the profile's
``image_size``) or ``"breastmnist@64"``. The profile's ``diffmic`` section lists the
datasets (the paper's modalities: RetinaMNIST for APTOS2019's diabetic-retinopathy grading,
BreastMNIST for ultrasound, PneumoniaMNIST for chest X-ray), the extra sizes, the seeds,
an optional fixed training subset per dataset (``limited_data``; the cpu profile's
PneumoniaMNIST), the model and the three training recipes.

Models (every one trained on the training split, selected on validation, tested once)
-----------------------------------------------------------------------------------------
* ``C1``: the plain backbone (the DCG's global encoder with global pooling and a linear
  head) trained with cross-entropy by the project's trainer
  (:func:`mdlib.train.train_classifier`, selection on validation AUC), for the optimizer
  steps of DiffMIC-v2's two stages together (``c1_train.epochs: match``), so the
  comparison is at an equal training budget;
* ``DCG``: the DCG model alone (its fused prior as the classifier), pre-trained as the
  first stage of DiffMIC-v2;
* DiffMIC-v2 and its ablation :data:`VARIANTS` (the paper's Table IV: ``C2`` vanilla
  diffusion with the raw-image embedding; ``C3`` + the global prior; ``C4`` + the local
  prior; ``C5`` the image feature prior F instead of the raw embedding; ``C6`` F + the dense
  map M; ``full`` + heterologous diffusion), and the official code's departures from the
  paper, each on top of the full model (uniform starting noise, focal loss weighting, 1x1
  convolutions only) and the joint-training option of the DCG.

Runs
----
``runs/diffmic_dcg/<profile>/<hash>/`` (weights, history, priors of every split),
``runs/diffmic_c1/<profile>/<hash>/`` (the files of :func:`mdlib.runs.tasks.record_classifier`)
and ``runs/diffmic/<profile>/<hash>/`` (weights, history, test predictions, the test
split's reverse trajectory). A DiffMIC-v2 run names its DCG run in its config. Every
config records the torch thread count (``threads``), which every run sets before training.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ... import data as data_mod
from ... import paths, profiles
from ...io import atomic_path, write_json
from ...runs import tasks
from ...runs.store import Run, run_once
from .model import DiffMICConfig
from .train import StageConfig

TASK_DCG, TASK_C1, TASK_DIFF = "diffmic_dcg", "diffmic_c1", "diffmic"
SETTING_KEYS = ("datasets", "image_size", "sizes", "seeds", "limited_data", "model", "dcg_train", "train",
                "c1_train", "ablation", "sensitivity", "tsne", "bench", "jobs", "threads")
#: model fields a profile may set (the data decide n_classes, in_chans, img_size)
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(DiffMICConfig)
                   if f.name not in ("n_classes", "in_chans", "img_size"))
STAGE_KEYS = tuple(f.name for f in dataclasses.fields(StageConfig) if f.name != "seed")
C1_KEYS = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "scheduler",
           "eval_batch_size")
#: fields of the DCG (its run is shared by every diffusion model with the same ones)
DCG_FIELDS = ("n_classes", "in_chans", "img_size", "backbone", "backbone_kwargs",
              "local_backbone", "local_kwargs", "pretrained", "k", "roi_frac", "attn_dim")

#: the ablation (Table IV) and the official code's departures, as overrides of the full
#: model (the profile's ``model``); ``dcg_mode`` is the DCG's training in the second stage
VARIANTS: dict[str, dict] = {
    "C2": {"feature": "raw", "prior": "none", "timesteps": "shared"},
    "C3": {"feature": "raw", "prior": "global", "timesteps": "shared"},
    "C4": {"feature": "raw", "prior": "local", "timesteps": "shared"},
    "C5": {"feature": "fused", "prior": "none", "timesteps": "shared"},
    "C6": {"feature": "fused", "prior": "dense", "timesteps": "shared"},
    "full": {},
    "code_uniform_init": {"init": "uniform"},
    "code_focal_loss": {"loss": "focal"},
    "code_1x1_conv": {"kernel": 1},
    "joint_dcg": {"dcg_mode": "joint"},
}
VARIANT_LABELS = {
    "C1": "C1: plain backbone (CE)", "DCG": "DCG alone (fused prior)",
    "C2": "C2: diffusion, raw embedding", "C3": "C3: + global prior", "C4": "C4: + local prior",
    "C5": "C5: F instead of raw embedding", "C6": "C6: F + dense map M",
    "full": "DiffMIC-v2 (+ heterologous)", "code_uniform_init": "code: uniform y_T",
    "code_focal_loss": "code: focal loss", "code_1x1_conv": "code: 1x1 convs only",
    "joint_dcg": "DCG trained jointly",
}
ABLATION_ORDER = ("C1", "C2", "C3", "C4", "C5", "C6", "full")
SENSITIVITY_KEYS = ("datasets", "seeds", "n_points", "k", "k_ties_n_points", "hidden")


# --------------------------------------------------------------------------- settings
def settings(prof: dict) -> dict:
    """The profile's ``diffmic`` section, checked before any work starts (unknown keys,
    datasets, sizes, variants, model fields and recipes are refused with the key named)."""
    name = prof.get("name")
    s = profiles.checked_section(prof, "diffmic", SETTING_KEYS)
    for k in ("datasets", "seeds"):
        if not s.get(k):
            raise ValueError(f"profile {name}: diffmic.{k} is empty")
    known = set(data_mod.dataset_names())
    for d in list(s["datasets"]) + list((s.get("sizes") or {})) + list(s.get("limited_data") or {}):
        if d not in known:
            raise ValueError(f"profile {name}: diffmic dataset '{d}' is unknown; known: {sorted(known)}")
    for d, sizes in (s.get("sizes") or {}).items():
        sp = data_mod.spec(d)
        avail = sorted(getattr(sp, "md5", {}) or data_mod.SIZES)
        bad = [z for z in sizes if z not in avail]
        if bad:
            raise ValueError(f"profile {name}: diffmic.sizes.{d} has {bad}; available: {avail}")
    for k, known_keys in (("model", MODEL_KEYS), ("dcg_train", STAGE_KEYS), ("train", STAGE_KEYS),
                          ("c1_train", C1_KEYS)):
        bad = set(s.get(k) or {}) - set(known_keys)
        if bad:
            raise ValueError(f"profile {name}: diffmic.{k} has unknown key(s) {sorted(bad)}; "
                             f"known: {list(known_keys)}")
    DiffMICConfig(**_model_fields(s))  # refuses bad values (Np < 1, unknown prior, ...)
    StageConfig(**(s.get("dcg_train") or {}))
    StageConfig(**(s.get("train") or {}))
    ab = s.get("ablation") or {}
    bad = set(ab) - {"datasets", "variants", "seeds"}
    if bad:
        raise ValueError(f"profile {name}: diffmic.ablation has unknown key(s) {sorted(bad)}")
    unknown_v = [v for v in ab.get("variants", []) if v not in VARIANTS]
    if unknown_v:
        raise ValueError(f"profile {name}: diffmic.ablation.variants {unknown_v} unknown; "
                         f"known: {list(VARIANTS)}")
    se = s.get("sensitivity") or {}
    bad = set(se) - set(SENSITIVITY_KEYS)
    if bad:
        raise ValueError(f"profile {name}: diffmic.sensitivity has unknown key(s) {sorted(bad)}")
    for k in ("n_points", "k", "hidden"):
        vals = se.get(k) or []
        if any(int(v) < 1 for v in vals):
            raise ValueError(f"profile {name}: diffmic.sensitivity.{k}={vals}: values must be >= 1")
    for part in (ab, se):
        for st in part.get("datasets", []):
            parse_setting(st, prof)
    return s


def _model_fields(s: dict) -> dict:
    return dict(s.get("model") or {})


def study_size(prof: dict) -> int:
    """The study's image size: ``diffmic.image_size``, else the profile's ``image_size``."""
    return int((prof.get("diffmic") or {}).get("image_size") or prof["image_size"])


def parse_setting(setting: str, prof: dict) -> tuple[str, int]:
    """``"breastmnist@64"`` -> ``("breastmnist", 64)``; no size: the study's image size."""
    name, _, size = str(setting).partition("@")
    if name not in data_mod.dataset_names():
        raise ValueError(f"profile {prof.get('name')}: setting '{setting}': unknown dataset "
                         f"'{name}'; known: {data_mod.dataset_names()}")
    return name, int(size) if size else study_size(prof)


def setting_name(dataset: str, size: int, prof: dict) -> str:
    return dataset if int(size) == study_size(prof) else f"{dataset}@{int(size)}"


def table_settings(prof: dict) -> list[str]:
    """Table II's settings: every dataset at the study's size, then the extra sizes."""
    s = settings(prof)
    out = [setting_name(d, study_size(prof), prof) for d in s["datasets"]]
    for d, sizes in (s.get("sizes") or {}).items():
        out += [setting_name(d, z, prof) for z in sizes if setting_name(d, z, prof) not in out]
    return out


def load_setting_data(prof: dict, setting: str):
    """The setting's dataset with the profile's fixed training subset (``limited_data``:
    ``{fraction | per_class, seed}``, one subset for every seed and model), as
    :func:`mdlib.runs.tasks.load_data`. Returns ``(ImageDataset, kept indices or None)``."""
    from ...runs.tasks import load_data
    s = settings(prof)
    name, size = parse_setting(setting, prof)
    lim = (s.get("limited_data") or {}).get(name, prof.get("limited_data"))
    p = dict(prof, image_size=size, limited_data=lim)
    return load_data(p, name, 0)


def _limited(prof: dict, setting: str):
    s = settings(prof)
    name, _ = parse_setting(setting, prof)
    return (s.get("limited_data") or {}).get(name, prof.get("limited_data"))


def model_config(prof: dict, setting: str, **overrides) -> DiffMICConfig:
    """The profile's model for a setting, with ``overrides`` (a variant's or a sweep's);
    ``pretrained: auto`` becomes True only where timm's weights are present locally."""
    s = settings(prof)
    name, size = parse_setting(setting, prof)
    sp = data_mod.spec(name)
    fields = _model_fields(s)
    fields.update({k: v for k, v in overrides.items() if k != "dcg_mode"})
    if fields.get("pretrained") == "auto":
        names = tuple(fields.get(k, "small_cnn") for k in
                      ("backbone", "local_backbone", "raw_backbone", "roi_backbone"))
        fields["pretrained"] = all(pretrained_available(n)[0] for n in names)
    return DiffMICConfig(n_classes=sp.n_classes, in_chans=sp.channels, img_size=size, **fields)


@functools.lru_cache(maxsize=None)
def pretrained_available(backbone: str) -> tuple[bool, str]:
    """Whether timm's ImageNet weights of ``backbone`` load here (an offline machine: only
    from a local cache), with the reason when not (logged). ``pretrained: auto`` trains
    from scratch where any encoder's weights are missing."""
    from .model import build_encoder
    if backbone == "small_cnn":
        return False, "small_cnn has no pretrained weights"
    try:
        build_encoder(backbone, 3, 224, pretrained=True)
        return True, ""
    except Exception as e:  # auto falls back to training from scratch
        import logging
        logging.getLogger(__name__).warning("pretrained %s unavailable: %s", backbone, e)
        return False, str(e)


def stage_config(prof: dict, key: str, seed: int, **overrides) -> StageConfig:
    s = settings(prof)
    kw = dict(s.get(key) or {})
    kw.update(overrides)
    kw.setdefault("device", prof.get("device", "auto"))
    return StageConfig(seed=int(seed), **kw)


def c1_train_config(prof: dict, setting: str, seed: int):
    """C1's recipe (:class:`mdlib.train.TrainConfig`): the backbone of the DCG's global
    branch; ``epochs: match`` = the DCG's epochs plus the diffusion stage's (equal steps)."""
    from ...train import TrainConfig
    s = settings(prof)
    m = model_config(prof, setting)
    kw = dict(s.get("c1_train") or {})
    if kw.get("epochs", "match") == "match":
        kw["epochs"] = stage_config(prof, "dcg_train", seed).epochs + stage_config(prof, "train", seed).epochs
    kw.setdefault("batch_size", stage_config(prof, "train", seed).batch_size)
    return TrainConfig(model=m.backbone, model_kwargs=dict(m.backbone_kwargs),
                       pretrained=bool(m.pretrained), seed=int(seed),
                       device=prof.get("device", "auto"), **kw)


def threads(prof: dict) -> int:
    """Torch threads of every run (``diffmic.threads``; null: torch's default here)."""
    import torch
    t = settings(prof).get("threads")
    return int(t) if t else int(torch.get_num_threads())


def _set_threads(prof: dict) -> None:
    import torch
    if settings(prof).get("threads"):
        torch.set_num_threads(int(settings(prof)["threads"]))


# --------------------------------------------------------------------------- runs
def _base_config(prof: dict, setting: str, seed: int) -> dict:
    name, size = parse_setting(setting, prof)
    return {"dataset": name, "image_size": size, "setting": setting,
            "limited_data": _limited(prof, setting), "seed": int(seed), "threads": threads(prof)}


def _normalise(prof: dict, setting: str, overrides: dict | None) -> dict:
    """``overrides`` without the entries that equal the profile's model (so a sweep's
    default point is the very run of the default model)."""
    base = model_config(prof, setting)
    return {k: v for k, v in sorted((overrides or {}).items())
            if k == "dcg_mode" or getattr(base, k) != v}


def dcg_config(prof: dict, setting: str, seed: int, overrides: dict | None = None) -> dict:
    cfg = model_config(prof, setting, **_normalise(prof, setting, overrides))
    return {**_base_config(prof, setting, seed),
            "dcg": {k: getattr(cfg, k) for k in DCG_FIELDS},
            "train": stage_config(prof, "dcg_train", seed).to_dict()}


def dcg_run(prof: dict, setting: str, seed: int, overrides: dict | None = None,
            progress: bool = True) -> Run:
    """The DCG of ``setting`` and ``seed`` (``overrides``: e.g. another ``k``), pre-trained
    into ``runs/diffmic_dcg/<profile>/<hash>/`` unless done: ``dcg.safetensors``,
    ``history.csv``, ``metrics.csv`` (val, test of its fused prior),
    ``test_predictions.csv`` and ``priors.npz`` (its outputs on every split)."""
    from ...train import save_checkpoint
    from .train import train_dcg
    config = dcg_config(prof, setting, seed, overrides)
    cfg = model_config(prof, setting, **(overrides or {}))

    def work(run: Run) -> dict:
        _set_threads(prof)
        data, idx = load_setting_data(prof, setting)
        if idx is not None:
            run.write_csv("train_indices.csv", pd.DataFrame({"train_index": idx}))
        res = train_dcg(data, cfg, stage_config(prof, "dcg_train", seed), progress=progress)
        _record_stage(run, data, res)
        save_checkpoint(run.path("dcg.safetensors"), res.state_dict, {"config": cfg.to_dict()})
        arrays = {f"{split}__{k}": v.numpy() for split, p in res.extras["priors"].items()
                  for k, v in p.items()}
        _savez(run.path("priors.npz"), **arrays)
        return {"best_epoch": res.best_epoch, "train_wall_s": res.wall_s,
                "n_train": int(len(data.y("train")))}

    return run_once(TASK_DCG, prof["name"], config, work)


def load_priors(run: Run) -> dict:
    """A DCG run's priors: ``{split: {p_g, p_l, p_fused, upper_left, attn}}`` as tensors."""
    import torch
    out: dict = {}
    with np.load(run.path("priors.npz"), allow_pickle=False) as z:
        for key in z.files:
            split, name = key.split("__")
            out.setdefault(split, {})[name] = torch.from_numpy(z[key])
    return out


def load_dcg(run: Run):
    """A DCG run's selected model (eval mode)."""
    from ...train import load_checkpoint
    from .model import DCG
    state, meta = load_checkpoint(run.path("dcg.safetensors"))
    model = DCG(DiffMICConfig(**meta["config"]))
    model.load_state_dict(state)
    return model.eval()


def c1_config(prof: dict, setting: str, seed: int) -> dict:
    return {**_base_config(prof, setting, seed),
            "train": c1_train_config(prof, setting, seed).to_dict(),
            "augmentation": {"method": "no_aug"}}


def c1_run(prof: dict, setting: str, seed: int, progress: bool = True) -> Run:
    """C1, the plain backbone with cross-entropy, trained by the project's trainer into
    ``runs/diffmic_c1/<profile>/<hash>/`` unless done."""
    from ...runs.tasks import record_classifier
    from ...train import train_classifier
    cfg = c1_train_config(prof, setting, seed)

    def work(run: Run) -> dict:
        _set_threads(prof)
        data, idx = load_setting_data(prof, setting)
        if idx is not None:
            run.write_csv("train_indices.csv", pd.DataFrame({"train_index": idx}))
        res = train_classifier(data, cfg, None, run_dir=run.dir, progress=progress,
                               keep_model=True)
        return record_classifier(run, data, cfg, res)

    return run_once(TASK_C1, prof["name"], c1_config(prof, setting, seed), work)


def _dcg_overrides(overrides: dict) -> dict:
    return {k: v for k, v in overrides.items() if k in DCG_FIELDS}


def diffmic_config(prof: dict, setting: str, seed: int, variant: str = "full",
                   overrides: dict | None = None) -> dict:
    if variant not in VARIANTS:
        raise ValueError(f"variant '{variant}': expected one of {list(VARIANTS)}")
    overrides = _normalise(prof, setting, overrides)
    over = {**VARIANTS[variant], **overrides}
    cfg = model_config(prof, setting, **over)
    dcg_hash = Run(TASK_DCG, prof["name"], dcg_config(prof, setting, seed, _dcg_overrides(over))).hash
    return {**_base_config(prof, setting, seed), "variant": variant,
            "overrides": overrides, "model": cfg.to_dict(),
            "train": stage_config(prof, "train", seed).to_dict(),
            "dcg_mode": over.get("dcg_mode", "frozen"),
            "dcg_lr": stage_config(prof, "dcg_train", seed).lr, "dcg_run": dcg_hash}


def diffmic_run(prof: dict, setting: str, seed: int, variant: str = "full",
                overrides: dict | None = None, progress: bool = True) -> Run:
    """One DiffMIC-v2 model (``variant`` of :data:`VARIANTS`, ``overrides`` of the model:
    a sensitivity point) trained into ``runs/diffmic/<profile>/<hash>/`` unless done, on
    the DCG of the same setting and seed (trained first if missing)."""
    from ...train import save_checkpoint
    from .train import train_diffmic
    config = diffmic_config(prof, setting, seed, variant, overrides)
    over = {**VARIANTS[variant], **config["overrides"]}
    cfg = DiffMICConfig(**config["model"])

    def work(run: Run) -> dict:
        drun = dcg_run(prof, setting, seed, _dcg_overrides(over), progress=progress)
        _set_threads(prof)
        data, idx = load_setting_data(prof, setting)
        if idx is not None:
            run.write_csv("train_indices.csv", pd.DataFrame({"train_index": idx}))
        frozen = config["dcg_mode"] == "frozen"
        res = train_diffmic(data, cfg, stage_config(prof, "train", seed),
                            dcg=None if frozen else load_dcg(drun),
                            priors=load_priors(drun) if frozen else None,
                            dcg_mode=config["dcg_mode"], dcg_lr=config["dcg_lr"],
                            progress=progress)
        _record_stage(run, data, res)
        save_checkpoint(run.path("model.safetensors"), res.state_dict, {"config": cfg.to_dict()})
        if "trajectory" in res.extras:
            _savez(run.path("test_trajectory.npz"), maps=res.extras["trajectory"],
                   labels=res.test_labels)
        return {"best_epoch": res.best_epoch, "train_wall_s": res.wall_s,
                "n_train": int(len(data.y("train")))}

    return run_once(TASK_DIFF, prof["name"], config, work)


def _record_stage(run: Run, data, res) -> None:
    tasks.record_metrics(run, data.n_classes, res)


def _savez(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


# --------------------------------------------------------------------------- grids
def grid(prof: dict, parts=("table", "ablation", "sensitivity")) -> tuple[list[dict], list[dict]]:
    """Every run of the study, as two phases (the DCGs and C1 first, then the diffusion
    models that read the DCGs' priors), each a list of jobs ``{kind, setting, seed,
    variant, overrides}`` without duplicates (Table II's DiffMIC-v2 is also the ablation's
    ``full`` and the sensitivity sweeps' default point)."""
    s = settings(prof)
    first, second = [], []
    if "table" in parts:
        for st in table_settings(prof):
            for seed in s["seeds"]:
                first += [_job("c1", st, seed), _job("dcg", st, seed)]
                second.append(_job("diffmic", st, seed, "full"))
    ab = s.get("ablation") or {}
    if "ablation" in parts:
        for st in ab.get("datasets", []):
            for seed in ab.get("seeds", s["seeds"]):
                first += [_job("c1", st, seed), _job("dcg", st, seed)]
                for v in ab.get("variants", []):
                    second.append(_job("diffmic", st, seed, v))
    se = s.get("sensitivity") or {}
    if "sensitivity" in parts:
        for st in se.get("datasets", []):
            for seed in se.get("seeds", s["seeds"][:1]):
                first.append(_job("dcg", st, seed))
                second.append(_job("diffmic", st, seed, "full"))  # every sweep's default point
                for key in ("n_points", "hidden", "k"):
                    for v in se.get(key, []):
                        second.append(_job("diffmic", st, seed, "full", {key: int(v)}))
                        if key == "k":
                            first.append(_job("dcg", st, seed, overrides={"k": int(v)}))
                            if se.get("k_ties_n_points"):
                                second.append(_job("diffmic", st, seed, "full",
                                                   {"k": int(v), "n_points": int(v)}))
    return _dedup(prof, first), _dedup(prof, second)


def _job(kind: str, setting: str, seed: int, variant: str | None = None,
         overrides: dict | None = None) -> dict:
    return {"kind": kind, "setting": setting, "seed": int(seed), "variant": variant,
            "overrides": dict(overrides or {})}


def job_run(prof: dict, job: dict) -> Run:
    """The (possibly unfinished) run a job makes."""
    if job["kind"] == "c1":
        return Run(TASK_C1, prof["name"], c1_config(prof, job["setting"], job["seed"]))
    if job["kind"] == "dcg":
        return Run(TASK_DCG, prof["name"], dcg_config(prof, job["setting"], job["seed"],
                                                       job["overrides"]))
    return Run(TASK_DIFF, prof["name"], diffmic_config(prof, job["setting"], job["seed"],
                                                        job["variant"], job["overrides"]))


def _dedup(prof: dict, jobs: list[dict]) -> list[dict]:
    seen, out = set(), []
    for j in jobs:
        h = job_run(prof, j).hash
        if h not in seen:
            seen.add(h)
            out.append(dict(j, run=h))
    return out


def execute(prof: dict, job: dict, progress: bool = False) -> str:
    """Train one job (skipped when its run is done); returns the run hash."""
    _set_threads(prof)
    if job["kind"] == "c1":
        run = c1_run(prof, job["setting"], job["seed"], progress)
    elif job["kind"] == "dcg":
        run = dcg_run(prof, job["setting"], job["seed"], job["overrides"] or None, progress)
    else:
        run = diffmic_run(prof, job["setting"], job["seed"], job["variant"], job["overrides"],
                          progress)
    return run.hash


def _worker(args) -> str:
    prof, job = args
    return execute(prof, job)


def _cost(prof: dict, job: dict) -> float:
    """Rough relative cost, to start the long jobs first."""
    name, size = parse_setting(job["setting"], prof)
    sp = data_mod.spec(name)
    n = sp.split_sizes[0] if hasattr(sp, "split_sizes") else 1000
    lim = _limited(prof, job["setting"]) or {}
    n *= float(lim.get("fraction", 1.0))
    return n * (size / 28) ** 2 * {"c1": 1.0, "dcg": 0.5, "diffmic": 1.0}[job["kind"]]


def run_grid(prof: dict, parts=("table", "ablation", "sensitivity"), jobs: int | None = None,
             progress: bool = True) -> pd.DataFrame:
    """Train every run of :func:`grid` that is not done (a killed grid resumes): phase 1,
    then phase 2; ``jobs > 1`` worker processes (spawned, ``threads`` torch threads each),
    longest jobs first. Returns the jobs with their run hashes and whether they were done
    before."""
    from tqdm.auto import tqdm
    s = settings(prof)
    jobs = int(jobs or s.get("jobs") or 1)
    phases = grid(prof, parts)
    rows = []
    for i, phase in enumerate(phases, 1):
        todo = [j for j in phase if not job_run(prof, j).done]
        todo.sort(key=lambda j: -_cost(prof, j))
        for j in phase:
            rows.append(dict(j, phase=i, was_done=j not in todo))
        if not todo:
            continue
        desc = f"diffmic phase {i}/2 ({len(todo)} runs)"
        if jobs <= 1:
            for j in tqdm(todo, desc=desc, disable=not progress):
                execute(prof, j)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
                list(tqdm(ex.map(_worker, [(prof, j) for j in todo]), total=len(todo),
                          desc=desc, disable=not progress))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- results
def _read(d: Path, task: str, default_k: int) -> dict | None:
    if not (d / "DONE").is_file() or not (d / "metrics.csv").is_file():
        return None
    cfg = json.loads((d / "config.json").read_text())["config"]
    info = json.loads((d / "DONE").read_text())
    row = {"task": task, "run": d.name, "run_dir": str(d), "setting": cfg["setting"],
           "dataset": cfg["dataset"], "image_size": cfg["image_size"], "seed": cfg["seed"],
           "wall_s": info.get("wall_s"), "best_epoch": info.get("best_epoch")}
    if task == TASK_C1:
        row.update(method="C1", overrides="{}")
    elif task == TASK_DCG:
        k = cfg["dcg"]["k"]
        row.update(method="DCG", overrides=json.dumps({"k": k} if k != default_k else {}))
    else:
        row.update(method=cfg["variant"], overrides=json.dumps(cfg["overrides"], sort_keys=True),
                   dcg_run=cfg["dcg_run"])
    m = pd.read_csv(d / "metrics.csv")
    for split, k, v in m[["split", "metric", "value"]].itertuples(index=False):
        row[f"{split}_{k}"] = v
    return row


def collect(prof: dict, root: str | Path | None = None) -> pd.DataFrame:
    """Every finished run of the study (the three tasks) as one row: task, setting,
    dataset, image_size, seed, method (``C1``, ``DCG`` or a variant), overrides (JSON),
    ``val_*`` / ``test_*`` metrics, run_dir, wall_s, best_epoch."""
    base = Path(root or paths.runs_root())
    default_k = model_config(prof, table_settings(prof)[0]).k
    rows = []
    for task in (TASK_C1, TASK_DCG, TASK_DIFF):
        for d in sorted((base / task / prof["name"]).glob("*")):
            r = _read(d, task, default_k) if d.is_dir() else None
            if r:
                rows.append(r)
    return pd.DataFrame(rows)


def grid_results(prof: dict, jobs: pd.DataFrame) -> pd.DataFrame:
    """:func:`collect` restricted to the runs of a grid (``run_grid``'s table); raises if
    any of them is not finished."""
    df = collect(prof)
    want = set(jobs["run"])
    have = set(df["run"]) if len(df) else set()
    missing = want - have
    if missing:
        raise RuntimeError(f"{len(missing)} runs of the diffmic grid are not finished "
                           f"(e.g. {sorted(missing)[:3]}); rerun run_grid")
    return df[df.run.isin(want)].reset_index(drop=True)


def history(run_dir) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "history.csv")


def trajectory(run_dir) -> tuple[np.ndarray, np.ndarray]:
    """A DiffMIC-v2 run's test-split reverse trajectory ``(steps + 1, N, C, Np, Np)`` and
    the test labels."""
    with np.load(Path(run_dir) / "test_trajectory.npz", allow_pickle=False) as z:
        return z["maps"].astype(np.float32), z["labels"]


def write_wall_times(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Summed training wall time per part of the study (from the runs' DONE markers)."""
    part = np.where(df.task == TASK_C1, "C1", np.where(df.task == TASK_DCG, "DCG", "diffusion"))
    t = (df.assign(part=part).groupby(["setting", "part"])
         .agg(runs=("run", "nunique"), wall_min=("wall_s", lambda w: float(np.nansum(w)) / 60))
         .reset_index())
    t.to_csv(path, index=False)
    return t
