"""Profile-driven runs: each resolves a profile section into one configuration, trains
it into its run directory (``runs/<task>/<profile>/<hash>/``, skipped when finished) and
reads finished runs back.

* a classifier (:func:`run_classifier`: train / select on val / test once, with any
  augmentation; :func:`record_classifier` writes what every classifier run holds);
* the guidance classifier (:func:`guidance_model`) and the class-conditional diffusion
  model (:func:`diffusion_run`, :func:`load_diffusion`), each trained on the
  (limited-data) training split only;
* what an offline augmentation's bank needs (:func:`bank_resources`);
* a finished classifier run's pieces: its config, data, model, bank, test predictions,
  Grad-CAM on the test split (:func:`run_data`, :func:`load_classifier`, ...).

Study-specific choices (which methods, their parameters, the study's subsets) are made by
the caller (``mdlib.studies.*``); nothing here knows a study.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import augment, data as data_mod, locks, paths, profiles
from ..data import to_tensor
from ..io import atomic_path
from ..train import (TrainConfig, load_checkpoint, resolve_device, save_checkpoint,
                     train_classifier, train_guidance_classifier)
from .store import Run, config_hash, run_once


def study_setup(prof: dict, dataset: str, limited_data=None, train: dict | None = None
                ) -> tuple[dict, dict]:
    """The profile and training overrides for one run of the study (notebook 06).

    ``limited_data=None`` takes the profile's ``study: {<dataset>: {limited_data: ...}}``
    setting when there is one (else the profile's own regime); any other value replaces
    the regime as a whole (``"full"`` or ``{}``: the full training split). The training
    overrides are the study setting's ``train`` updated by ``train``.
    Returns ``(profile copy, train overrides)``."""
    prof = copy.deepcopy(prof)
    per = (prof.get("study") or {}).get(dataset) or {}
    if limited_data is not None:
        prof["limited_data"] = None if limited_data in ("full", {}) else dict(limited_data)
    elif "limited_data" in per:
        prof["limited_data"] = dict(per["limited_data"]) if per["limited_data"] else None
    t = dict(per.get("train") or {})
    t.update(train or {})
    return prof, t


def train_config(prof: dict, dataset: str, seed: int, section: str = "baseline",
                 **overrides) -> TrainConfig:
    """The profile's training section, with its per-dataset overrides, as a TrainConfig."""
    cfg = profiles.section(prof, "baseline")
    cfg.update(prof.get("dataset_overrides", {}).get(dataset, {}))
    if section != "baseline":  # e.g. "guidance", "judge": the baseline recipe with its own overrides
        cfg.update({k: v for k, v in (prof.get(section) or {}).items() if k != "seed"})
    cfg.update(overrides)
    cfg["seed"] = seed
    cfg.setdefault("device", prof.get("device", "auto"))
    return TrainConfig(**cfg)


def load_data(prof: dict, dataset: str, seed: int = 0) -> tuple[data_mod.ImageDataset, np.ndarray | None]:
    """Load ``dataset`` at the profile's image size and apply its limited-data regime
    (a seeded, stratified per-class subset of the training split: ``{fraction: f}`` or
    ``{per_class: n}``, drawn with the run's seed, or with ``seed: s`` when given, so that
    every run shares one fixed subset). Returns the dataset and the kept training indices
    (None = full split)."""
    ds = data_mod.load_dataset(dataset, prof["image_size"])
    lim = prof.get("limited_data")
    if not lim:
        return ds, None
    unknown = set(lim) - {"fraction", "per_class", "seed"}
    if unknown:
        raise ValueError(f"profile {prof.get('name')}: limited_data has unknown key(s) "
                         f"{sorted(unknown)}; expected fraction or per_class, and optionally seed")
    idx = data_mod.subsample_per_class(ds.y("train"), fraction=lim.get("fraction"),
                                       per_class=lim.get("per_class"),
                                       seed=int(lim.get("seed", seed)))
    return ds.with_train_subset(idx), idx


def run_classifier(prof: dict, dataset: str, seed: int, method: str = "no_aug",
                   method_params: dict | None = None, task: str = "classifier",
                   bank_extras: dict | None = None, progress: bool = True,
                   **train_overrides) -> Run:
    """Train and evaluate one configuration into its run directory (skipped when done).

    Writes ``config.json``, ``environment.json``, ``metrics.csv`` (tidy: split, metric,
    value), ``history.csv``, ``test_predictions.csv`` (per test image: label and class
    probabilities, for paired tests), ``test_features.npz`` (penultimate features of the
    test images, for t-SNE), ``train_indices.csv`` (limited-data subset), the selected
    weights ``model.safetensors``, and for offline methods ``bank_records.csv``."""
    cfg = train_config(prof, dataset, seed, **train_overrides)
    aug = augment.get(method, **(method_params or {}))
    config = {"dataset": dataset, "image_size": prof["image_size"],
              "limited_data": prof.get("limited_data"), "train": cfg.to_dict(),
              "augmentation": aug.config()}
    if aug.offline and bank_extras is None:
        bank_extras = bank_resources(prof, dataset, seed, aug, progress=progress)
    if aug.offline:  # the generator / guidance runs the bank came from are part of the config
        config["resources"] = bank_extras.get("resources", {})

    def work(run: Run) -> dict:
        data, idx = load_data(prof, dataset, seed)
        if idx is not None:
            run.write_csv("train_indices.csv", pd.DataFrame({"train_index": idx}))
        res = train_classifier(data, cfg, aug, bank_extras=bank_extras, run_dir=run.dir,
                               progress=progress, keep_model=True)
        if aug.offline:
            run.write_json("bank.json", {"bank_dir": str(bank_extras["bank_dir"])})
        return record_classifier(run, data, cfg, res)

    return run_once(task, prof["name"], config, work)


def record_metrics(run: Run, n_classes: int, res) -> None:
    """Write a trained classifier's ``metrics.csv`` (split, metric, value),
    ``history.csv`` and ``test_predictions.csv`` (test_index, label, p0..p{C-1}) from a
    result with ``val``, ``test``, ``history``, ``test_probs`` and ``test_labels``."""
    rows = [{"split": s, "metric": k, "value": v}
            for s, m in (("val", res.val), ("test", res.test)) for k, v in m.items()]
    run.write_csv("metrics.csv", pd.DataFrame(rows))
    run.write_csv("history.csv", res.history)
    pred = pd.DataFrame(res.test_probs, columns=[f"p{c}" for c in range(n_classes)])
    pred.insert(0, "label", res.test_labels)
    pred.insert(0, "test_index", np.arange(len(pred)))
    run.write_csv("test_predictions.csv", pred)


def record_classifier(run: Run, data, cfg: TrainConfig, res) -> dict:
    """Write a trained classifier's results into its run directory: ``metrics.csv``,
    ``history.csv``, ``test_predictions.csv``, ``test_features.npz`` and
    ``model.safetensors`` (see :func:`run_classifier`). Returns the run's info."""
    import torch

    from ..models import embed
    record_metrics(run, data.n_classes, res)
    with torch.no_grad():  # test-set features of the selected model (for t-SNE)
        feats = embed(res.model.cpu(), to_tensor(data.x("test"))).numpy()
    with atomic_path(run.path("test_features.npz")) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, features=feats.astype(np.float32), labels=res.test_labels)
    save_checkpoint(run.path("model.safetensors"), res.state_dict,
                    {"model": cfg.model, "n_classes": data.n_classes,
                     "channels": data.channels, "image_size": data.size})
    return {"best_epoch": res.best_epoch, "train_wall_s": res.wall_s,
            "n_train": int(len(data.y("train")))}


def load_bank(run: Run):
    """The offline bank a classifier run trained with: ``(x float32 (M,C,H,W), soft labels
    (M,K), records DataFrame)`` read from its bank directory (all generated images,
    including any that ``on_fail="drop"`` left out of training; see ``records.kept``)."""
    import torch
    info = run.read_json("bank.json")
    d = Path(info["bank_dir"])
    parts = sorted(d.glob("part_*.npz"))
    if not parts:
        raise FileNotFoundError(f"{d}: no bank parts found for run {run.dir}")
    xs, ys, recs = [], [], []
    for f in parts:
        with np.load(f, allow_pickle=False) as z:
            xs.append(z["x"])
            ys.append(z["y"])
            recs.append(pd.DataFrame({k[5:]: z[k] for k in z.files if k.startswith("rec__")}))
    return (torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)),
            pd.concat(recs, ignore_index=True))


def resource_seed(prof: dict, seed: int) -> int:
    """Seed of the guidance classifier and diffusion model that a classifier of ``seed``
    uses: with the full training split every seed shares the seed-0 ones (they are fixed
    resources, like pretrained weights), and so do they with a fixed limited-data subset
    (``limited_data: {..., seed: s}``); with a per-seed subset each seed has its own
    resources, trained on that subset only."""
    lim = prof.get("limited_data")
    return int(seed) if lim and "seed" not in lim else 0


def bank_resources(prof: dict, dataset: str, seed: int, aug, progress: bool = True) -> dict:
    """What an offline method's bank needs (``BankContext.extras``): the diffusion model
    (if it uses one), the guidance classifier and its cached Grad-CAM maps of the
    training split (MedDiffuseMix), and ``bank_dir`` under ``runs/banks/<profile>/`` keyed
    by the method, seed, data and resource runs, so that classifiers of other backbones
    reuse the same bank. All trained on the (limited-data) training split only."""
    from .. import saliency
    rs = resource_seed(prof, seed)
    extras: dict = {"progress": progress, "resources": {}}
    need = aug.requires()
    if "diffusion" in need:
        dm, drun = diffusion_model(prof, dataset, rs, progress=progress)
        extras["diffusion"] = dm
        extras["resources"]["diffusion"] = drun.hash
        extras["resources"]["guidance_scale"] = dm.guidance_scale
    if "guidance" in need or "saliency" in need:
        g, grun = guidance_model(prof, dataset, rs, progress=progress)
        extras["guidance"] = g
        extras["resources"]["guidance"] = grun.hash
        if "saliency" in need:
            data, _ = load_data(prof, dataset, seed)
            sb = int((prof.get("saliency") or {}).get("batch_size", 256))
            cache = grun.path(f"saliency_train_seed{seed}")
            with locks.lock(f"{cache}.lock", what=f"saliency cache {cache}"):  # computed once
                extras["saliency"] = saliency.compute_split_saliency(
                    g, to_tensor(data.x("train")), data.y("train"), batch_size=sb, cache_path=cache)
    key = {"dataset": dataset, "image_size": prof["image_size"],
           "limited_data": prof.get("limited_data"), "seed": seed, "method": aug.config(),
           "resources": extras["resources"]}
    extras["bank_dir"] = paths.runs_root() / "banks" / prof["name"] / config_hash(key)
    return extras


def guidance_model(prof: dict, dataset: str, seed: int = 0, progress: bool = True,
                   section: str = "guidance"):
    """The guidance classifier ``g`` of MedDiffuseMix for ``dataset`` (``section="guidance"``:
    the baseline recipe with the profile's ``guidance`` overrides), or another classifier
    trained the same way from another profile section, e.g. the independent judge of
    saliency preservation (``section="judge"``: another architecture, and the section's own
    ``seed``). Trained on the (limited-data) training split, selected on validation AUC,
    never shown the test split; trained once into ``runs/<section>/<profile>/<hash>/`` and
    loaded from there afterwards. Returns ``(model in eval mode, run)``."""
    from ..models import build_model
    sec = dict(prof.get(section) or {})
    if section != "guidance" and not sec:
        raise KeyError(f"profile '{prof.get('name')}' has no section '{section}'")
    seed = int(sec.pop("seed", seed))
    cfg = train_config(prof, dataset, seed, section=section)
    config = {"dataset": dataset, "image_size": prof["image_size"],
              "limited_data": prof.get("limited_data"), "train": cfg.to_dict()}

    def work(run: Run) -> dict:
        data, idx = load_data(prof, dataset, seed)
        if idx is not None:
            run.write_csv("train_indices.csv", pd.DataFrame({"train_index": idx}))
        _, res = train_guidance_classifier(data, cfg, progress=progress, return_result=True)
        run.write_csv("history.csv", res.history)
        run.write_csv("metrics.csv", pd.DataFrame(
            [{"split": "val", "metric": k, "value": v} for k, v in res.val.items()]))
        save_checkpoint(run.path("model.safetensors"), res.state_dict,
                        {"model": cfg.model, "n_classes": data.n_classes})
        return {"best_epoch": res.best_epoch, "train_wall_s": res.wall_s,
                "n_train": int(len(data.y("train")))}

    run = run_once(section, prof["name"], config, work)
    data = data_mod.load_dataset(dataset, prof["image_size"])
    model = build_model(cfg.model, data.channels, data.n_classes, data.size,
                        **cfg.model_kwargs)
    model.load_state_dict(load_checkpoint(run.path("model.safetensors"))[0])
    return model.eval(), run


#: keys of a profile's ``diffusion`` section that are not DiffusionConfig fields
_DIFFUSION_STUDY_KEYS = ("datasets", "max_seconds", "n_eval_per_class", "sample_batch", "threads",
                         "guidance_scale")


def diffusion_config(prof: dict, data, seed: int = 0, **overrides):
    """The profile's ``diffusion`` section for a loaded dataset, updated by the profile's
    ``diffusion_by_size`` entry for the dataset's image size (if any), then by its
    ``diffusion_by_dataset`` entries for the dataset (if any: ``<name>``, e.g. a larger UNet
    for one dataset, then ``<name>@<size>`` for the dataset at one image size; a sweep
    configuration's profile fingerprint holds only its own dataset's entries, so editing
    them leaves the other configurations' runs current) and then by
    ``overrides``, split into ``(DiffusionConfig, the study-level keys: datasets,
    max_seconds, threads, guidance_scale, ...)``."""
    from ..diffusion import DiffusionConfig
    sec = profiles.section(prof, "diffusion")
    sec.update((prof.get("diffusion_by_size") or {}).get(int(data.size)) or {})
    by_ds = prof.get("diffusion_by_dataset") or {}
    if not isinstance(by_ds, dict):
        raise ValueError(f"profile {prof.get('name')}: diffusion_by_dataset must map dataset names "
                         f"to overrides of the diffusion section, got {by_ds!r}")
    sec.update(by_ds.get(data.name) or {})
    sec.update(by_ds.get(f"{data.name}@{int(data.size)}") or {})
    sec.update(overrides)
    study_keys = {k: sec.pop(k) for k in _DIFFUSION_STUDY_KEYS if k in sec}
    sec.setdefault("device", prof.get("device", "auto"))
    cfg = DiffusionConfig(image_size=data.size, channels=data.channels,
                          n_classes=data.n_classes, seed=seed, **sec)
    return cfg, study_keys


def diffusion_run(prof: dict, dataset: str, seed: int = 0, progress: bool = True,
                  **overrides) -> tuple[Run, float]:
    """The run of the class-conditional diffusion model for ``dataset``, trained on the
    (limited-data) training split only, into ``runs/diffusion/<profile>/<hash>/model``
    (diffusers format; a killed training resumes from its last checkpoint) if not already
    done, without loading it. ``overrides`` replace fields of the profile's ``diffusion``
    section (e.g. ``loss="huber"``). Returns ``(run, the profile's guidance scale)``."""
    import torch

    from ..diffusion import read_state, train_diffusion
    data, idx = load_data(prof, dataset, seed)
    cfg, study_keys = diffusion_config(prof, data, seed, **overrides)
    config = {"dataset": dataset, "image_size": data.size, "limited_data": prof.get("limited_data"),
              "diffusion": cfg.to_dict(), "max_seconds": study_keys.get("max_seconds")}
    if study_keys.get("threads"):  # bit-identical weights need the same thread count
        config["threads"] = int(study_keys["threads"])
    run = Run("diffusion", prof["name"], config)
    with run.claim() as todo:  # one process trains it; the others wait and find it done
        if todo:
            threads = study_keys.get("threads")
            old = torch.get_num_threads()
            if threads:
                torch.set_num_threads(int(threads))
            try:
                run.start()
                if idx is not None:
                    run.write_csv("train_indices.csv", pd.DataFrame({"train_index": idx}))
                train_diffusion(data.x("train"), data.y("train"), cfg, run.path("model"),
                                progress=progress, max_seconds=study_keys.get("max_seconds"))
            finally:
                torch.set_num_threads(old)
            st = read_state(run.path("model"))
            run.finish(steps=int(st["step"]), train_wall_s=float(st.get("wall_s", 0.0)),
                       stopped_early=bool(st.get("stopped_early", False)),
                       n_train=int(len(data.y("train"))))
    return run, float(study_keys.get("guidance_scale", 1.0))


def load_diffusion(run: Run, guidance_scale: float = 1.0):
    """The trained model of a :func:`diffusion_run` run, with its guidance scale."""
    from ..diffusion import DiffusionModel
    model = DiffusionModel.load(run.path("model"))
    model.guidance_scale = guidance_scale
    return model


def diffusion_model(prof: dict, dataset: str, seed: int = 0, progress: bool = True,
                    **overrides):
    """:func:`diffusion_run`, then the model loaded. Returns ``(DiffusionModel, run)``."""
    run, w = diffusion_run(prof, dataset, seed, progress, **overrides)
    return load_diffusion(run, w), run


def run_metrics(run: Run, split: str = "test") -> dict:
    m = run.read_csv("metrics.csv")
    out = dict(zip(m.loc[m.split == split, "metric"], m.loc[m.split == split, "value"]))
    out.update({k: run.config[k] for k in ("dataset",)})
    out["method"] = run.config["augmentation"]["method"]
    out["model"] = run.config["train"]["model"]
    out["seed"] = run.config["train"]["seed"]
    info = run.info()
    out["wall_s"] = info.get("train_wall_s")
    out["best_epoch"] = info.get("best_epoch")
    out["run"] = run.hash
    return out


def check_metrics_sane(df: pd.DataFrame, n_classes: dict | None = None) -> None:
    """Raise AssertionError unless every recorded metric is finite and in range."""
    assert len(df) > 0, "no results recorded"
    for col in ("acc", "precision", "recall", "f1", "auc", "ece"):
        assert col in df, f"metric column '{col}' missing"
        v = df[col].to_numpy(float)
        assert np.isfinite(v).all(), f"{col} has non-finite values: {v}"
        assert ((v >= 0) & (v <= 1)).all(), f"{col} outside [0, 1]: {v}"


# --------------------------------------------------------------------------- a finished run
def run_config(run_dir) -> dict:
    return json.loads((Path(run_dir) / "config.json").read_text())["config"]


def run_handle(run_dir):
    """A :class:`mdlib.runs.Run` for the finished run directory ``run_dir``."""
    run_dir = Path(run_dir).resolve()
    j = json.loads((run_dir / "config.json").read_text())
    run = Run(j["task"], j["profile"], j["config"], root=run_dir.parents[2])
    if run.dir.resolve() != run_dir:
        raise ValueError(f"{run_dir}: config.json does not hash to this directory ({run.hash})")
    return run


def run_data(run_dir):
    """The run's dataset at its image size, with the training split cut to the run's
    limited-data subset (``train_indices.csv``), as the run trained on it."""
    from ..data import load_dataset
    cfg = run_config(run_dir)
    ds = load_dataset(cfg["dataset"], int(cfg["image_size"]))
    f = Path(run_dir) / "train_indices.csv"
    if f.is_file():
        ds = ds.with_train_subset(pd.read_csv(f)["train_index"].to_numpy())
    return ds


def load_classifier(run_dir, device: str = "auto"):
    """The run's selected classifier (``model.safetensors``), in eval mode on ``device``."""
    from ..models import build_model
    from .archive import require_files
    require_files(run_dir, "model.safetensors")
    cfg = run_config(run_dir)["train"]
    state, meta = load_checkpoint(Path(run_dir) / "model.safetensors")
    model = build_model(meta.get("model", cfg["model"]), int(meta["channels"]),
                        int(meta["n_classes"]), int(meta["image_size"]),
                        **(cfg.get("model_kwargs") or {}))
    model.load_state_dict(state)
    return model.eval().to(resolve_device(device))


def saved_test_probs(run_dir) -> np.ndarray:
    """Class probabilities of the test images as the run recorded them."""
    from .results import test_predictions
    return test_predictions(run_dir)[0]


def cams_and_probs(model, x, targets, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps ``(N,H,W)`` for ``targets`` and class probabilities ``(N,K)`` of the
    images ``x`` (float ``(N,C,H,W)`` in [0, 1])."""
    import torch

    from ..saliency import gradcam
    from ..train import predict_proba
    x = torch.as_tensor(x).float()
    t = torch.as_tensor(np.asarray(targets)).long()
    maps = [gradcam(model, x[i:i + batch_size], t[i:i + batch_size]).cpu()
            for i in range(0, len(x), batch_size)]
    maps = torch.cat(maps).numpy() if maps else np.zeros((0,) + tuple(x.shape[-2:]), np.float32)
    return maps, predict_proba(model, x, batch_size)


def cams_on_test(run_dir, ds=None, device: str = "auto", batch_size: int = 128) -> dict:
    """Grad-CAM (true label) and probabilities of the run's classifier on the whole test
    split: ``{"maps", "probs", "labels", "p_true", "correct"}``."""
    ds = ds if ds is not None else run_data(run_dir)
    model = load_classifier(run_dir, device)
    y = ds.y("test")
    maps, probs = cams_and_probs(model, to_tensor(ds.x("test")), y, batch_size)
    return {"maps": maps, "probs": probs, "labels": y,
            "p_true": probs[np.arange(len(y)), y], "correct": probs.argmax(1) == y}

