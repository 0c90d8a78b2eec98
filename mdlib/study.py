"""Study-level helpers shared by the notebooks: resolve a profile into per-run
configurations, load data with the profile's limited-data regime, run one training
configuration into its run directory (skipped when already finished), and collect
results into tidy tables.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import augment, data as data_mod, paths, profiles
from .runs import Run, run_once
from .train import TrainConfig, save_checkpoint, train_classifier

#: published reference numbers (test split, ACC / AUC) quoted from ../shared/data/MANIFEST.md:
#: MedMNIST v2, 28 px, ResNet-18, 100 epochs, model chosen by val AUC.
MEDMNIST_V2_RESNET18_28 = {
    "pneumoniamnist": {"acc": 0.854, "auc": 0.944},
    "breastmnist": {"acc": 0.863, "auc": 0.901},
    "retinamnist": {"acc": 0.524, "auc": 0.717},
}


def figures_dir(profile: str):
    """``figures/<profile>/``: a smoke run never overwrites the cpu profile's figures."""
    d = paths.figures_dir() / profile
    d.mkdir(parents=True, exist_ok=True)
    return d


def train_config(prof: dict, dataset: str, seed: int, section: str = "baseline",
                 **overrides) -> TrainConfig:
    """The profile's training section, with its per-dataset overrides, as a TrainConfig."""
    cfg = profiles.section(prof, "baseline")
    if section != "baseline":  # e.g. "guidance": the baseline recipe with its own overrides
        cfg.update(prof.get(section) or {})
    cfg.update(prof.get("dataset_overrides", {}).get(dataset, {}))
    cfg.update(overrides)
    cfg["seed"] = seed
    cfg.setdefault("device", prof.get("device", "auto"))
    return TrainConfig(**cfg)


def load_data(prof: dict, dataset: str, seed: int = 0) -> tuple[data_mod.ImageDataset, np.ndarray | None]:
    """Load ``dataset`` at the profile's image size and apply its limited-data regime
    (a seeded, stratified per-class subset of the training split). Returns the dataset and
    the kept training indices (None = full split)."""
    ds = data_mod.load_dataset(dataset, prof["image_size"])
    lim = prof.get("limited_data")
    if not lim:
        return ds, None
    idx = data_mod.subsample_per_class(ds.y("train"), fraction=lim.get("fraction"),
                                       per_class=lim.get("per_class"), seed=seed)
    return ds.with_train_subset(idx), idx


def run_classifier(prof: dict, dataset: str, seed: int, method: str = "no_aug",
                   method_params: dict | None = None, task: str = "classifier",
                   bank_extras: dict | None = None, progress: bool = True,
                   **train_overrides) -> Run:
    """Train and evaluate one configuration into its run directory (skipped when done).

    Writes ``config.json``, ``environment.json``, ``metrics.csv`` (tidy: split, metric,
    value), ``history.csv``, ``test_predictions.csv`` (per test image: label and class
    probabilities, for paired tests), ``train_indices.csv`` (limited-data subset) and the
    selected weights ``model.safetensors``."""
    cfg = train_config(prof, dataset, seed, **train_overrides)
    aug = augment.get(method, **(method_params or {}))
    config = {"dataset": dataset, "image_size": prof["image_size"],
              "limited_data": prof.get("limited_data"), "train": cfg.to_dict(),
              "augmentation": aug.config()}

    def work(run: Run) -> dict:
        data, idx = load_data(prof, dataset, seed)
        if idx is not None:
            run.write_csv("train_indices.csv", pd.DataFrame({"train_index": idx}))
        res = train_classifier(data, cfg, aug, bank_extras=bank_extras, run_dir=run.dir,
                               progress=progress)
        rows = [{"split": s, "metric": k, "value": v}
                for s, m in (("val", res.val), ("test", res.test)) for k, v in m.items()]
        run.write_csv("metrics.csv", pd.DataFrame(rows))
        run.write_csv("history.csv", res.history)
        pred = pd.DataFrame(res.test_probs, columns=[f"p{c}" for c in range(data.n_classes)])
        pred.insert(0, "label", res.test_labels)
        pred.insert(0, "test_index", np.arange(len(pred)))
        run.write_csv("test_predictions.csv", pred)
        save_checkpoint(run.path("model.safetensors"), res.state_dict,
                        {"model": cfg.model, "n_classes": data.n_classes,
                         "channels": data.channels, "image_size": data.size})
        return {"best_epoch": res.best_epoch, "train_wall_s": res.wall_s,
                "n_train": int(len(data.y("train")))}

    return run_once(task, prof["name"], config, work)


def guidance_model(prof: dict, dataset: str, seed: int = 0, progress: bool = True):
    """The guidance classifier ``g`` of MedDiffuseMix for ``dataset``: trained on the
    (limited-data) training split, selected on validation AUC, never shown the test split.
    Trained once into ``runs/guidance/<profile>/<hash>/`` and loaded from there afterwards.
    Returns ``(model in eval mode, run)``."""
    from . import saliency
    from .models import build_model
    from .train import load_checkpoint
    cfg = train_config(prof, dataset, seed, section="guidance")
    config = {"dataset": dataset, "image_size": prof["image_size"],
              "limited_data": prof.get("limited_data"), "train": cfg.to_dict()}

    def work(run: Run) -> dict:
        data, idx = load_data(prof, dataset, seed)
        if idx is not None:
            run.write_csv("train_indices.csv", pd.DataFrame({"train_index": idx}))
        _, res = saliency.train_guidance_classifier(data, cfg, progress=progress,
                                                    return_result=True)
        run.write_csv("history.csv", res.history)
        run.write_csv("metrics.csv", pd.DataFrame(
            [{"split": "val", "metric": k, "value": v} for k, v in res.val.items()]))
        save_checkpoint(run.path("model.safetensors"), res.state_dict,
                        {"model": cfg.model, "n_classes": data.n_classes})
        return {"best_epoch": res.best_epoch, "train_wall_s": res.wall_s,
                "n_train": int(len(data.y("train")))}

    run = run_once("guidance", prof["name"], config, work)
    data = data_mod.load_dataset(dataset, prof["image_size"])
    model = build_model(cfg.model, data.channels, data.n_classes, data.size,
                        **cfg.model_kwargs)
    model.load_state_dict(load_checkpoint(run.path("model.safetensors"))[0])
    return model.eval(), run


#: keys of a profile's ``diffusion`` section that are not DiffusionConfig fields
_DIFFUSION_STUDY_KEYS = ("datasets", "max_seconds", "n_eval_per_class", "sample_batch", "threads")


def diffusion_model(prof: dict, dataset: str, seed: int = 0, progress: bool = True,
                    **overrides):
    """The class-conditional diffusion model for ``dataset``, trained on the
    (limited-data) training split only, into ``runs/diffusion/<profile>/<hash>/model``
    (diffusers format; a killed training resumes from its last checkpoint). ``overrides``
    replace fields of the profile's ``diffusion`` section (e.g. ``loss="huber"``).
    Returns ``(DiffusionModel, run)``."""
    import torch

    from .diffusion import DiffusionConfig, DiffusionModel, read_state, train_diffusion
    sec = profiles.section(prof, "diffusion")
    sec.update(overrides)
    study_keys = {k: sec.pop(k) for k in _DIFFUSION_STUDY_KEYS if k in sec}
    data, idx = load_data(prof, dataset, seed)
    sec.setdefault("device", prof.get("device", "auto"))
    cfg = DiffusionConfig(image_size=data.size, channels=data.channels,
                          n_classes=data.n_classes, seed=seed, **sec)
    config = {"dataset": dataset, "image_size": data.size, "limited_data": prof.get("limited_data"),
              "diffusion": cfg.to_dict(), "max_seconds": study_keys.get("max_seconds")}
    run = Run("diffusion", prof["name"], config)
    if not run.done:
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
    return DiffusionModel.load(run.path("model")), run


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
