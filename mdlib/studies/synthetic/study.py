"""Training on generated images (paper ``002_*``; notebook 12).

Can a classifier trained only on images from the class-conditional diffusion model
classify real images? Per dataset, with the study's training data (section ``study`` of
the profile) and its generator (:func:`mdlib.runs.tasks.diffusion_model`, trained on that
training split only):

* **Synthetic pool**: one labelled pool of ``max(multiples)`` times the real training
  split's class counts, sampled once per dataset (seed ``pool_seed``), stored as uint8
  like the real images in ``runs/synthetic_pool/<profile>/<hash>/pool.npz``. The
  synthetic set of multiple ``m`` takes the first ``round(m * n_c)`` images of each class
  ``c``, so the sets are nested and keep the real class balance. The classifier seeds
  vary the training, not the pool (the pool is a fixed resource, like the generator).
* **Regimes**: ``real`` (the real training split), ``synthetic`` (the synthetic set
  alone) and ``real+synthetic`` (both). All select on the **real** validation split's
  AUC and are tested once on the real test split, with the main study's metrics.
* **Budget** (``budget: steps``): every regime gets the optimizer steps of real-only
  training (``epochs * ceil(n_real / batch)``), so the regimes differ in data, not in
  compute; ``budget: epochs`` keeps the epoch count instead (more steps for more data).
* **Explanations**: Grad-CAM (:func:`mdlib.saliency.gradcam`) and LIME (the ``lime``
  package, superpixels from scikit-image SLIC) on real test images, for models trained
  on real vs synthetic data; agreement measured by per-image correlation of the maps.

Runs go to ``runs/synthetic/<profile>/<hash>/`` with the files of a study run
(:func:`mdlib.runs.tasks.record_classifier`), so :func:`mdlib.runs.results.collect` reads them:
``method`` is the regime, ``params`` holds the multiple.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from ... import profiles
from ...io import atomic_path
from ...runs import tasks
from ...runs.store import Run, run_once

REGIMES = ("real", "synthetic", "real+synthetic")
SETTING_KEYS = ("datasets", "multiples", "seeds", "pool_seed", "backbones", "sweep_backbones",
                "backbone_multiple", "backbone_train", "budget", "jobs", "explain")


def settings(prof: dict) -> dict:
    """The profile's ``synthetic`` section, checked before any work starts."""
    s = profiles.checked_section(prof, "synthetic", SETTING_KEYS)
    mult = s.get("multiples") or []
    if not mult or any(not (isinstance(m, (int, float)) and m > 0) for m in mult):
        raise ValueError(f"profile {prof['name']}: synthetic.multiples={mult}: need numbers > 0")
    if s.get("budget", "steps") not in ("steps", "epochs"):
        raise ValueError(f"profile {prof['name']}: synthetic.budget={s.get('budget')!r}: "
                         "expected 'steps' or 'epochs'")
    from ...models import BACKBONES
    bad = [b for b in list(s.get("backbones", [])) + list(s.get("sweep_backbones", []))
           if b not in BACKBONES]
    if bad:
        raise ValueError(f"profile {prof['name']}: synthetic backbones {bad} unknown; "
                         f"known: {BACKBONES}")
    if s.get("backbone_multiple") is not None and s["backbone_multiple"] not in mult:
        raise ValueError(f"profile {prof['name']}: synthetic.backbone_multiple="
                         f"{s['backbone_multiple']} is not one of multiples {mult}")
    return s


def class_counts(y_real: np.ndarray, n_classes: int, multiple: float) -> np.ndarray:
    """Images per class of the synthetic set of ``multiple``: ``round(multiple * n_c)``
    (at least 1 for every class present in the real split)."""
    n = np.bincount(np.asarray(y_real), minlength=n_classes)
    k = np.round(float(multiple) * n).astype(int)
    return np.where(n > 0, np.maximum(k, 1), 0)


def subset_indices(y_pool: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The first ``counts[c]`` pool images of each class ``c`` (nested across multiples)."""
    idx = []
    for c, k in enumerate(counts):
        where = np.flatnonzero(y_pool == c)
        if len(where) < k:
            raise ValueError(f"synthetic pool has {len(where)} images of class {c}, "
                             f"{k} needed; regenerate it with a larger max multiple")
        idx.append(where[:k])
    return np.sort(np.concatenate(idx))


def synthetic_pool(prof: dict, dataset: str, progress: bool = True
                   ) -> tuple[Run, np.ndarray, np.ndarray]:
    """The dataset's synthetic pool (sampled once, then read from its run directory; the
    generator is loaded only to sample): ``(run, images uint8 (N, H, W, C), labels (N,))``."""
    s = settings(prof)
    p, _ = tasks.study_setup(prof, dataset)
    drun, w = tasks.diffusion_run(p, dataset, 0, progress=progress)
    data, _ = tasks.load_data(p, dataset, 0)
    counts = class_counts(data.y("train"), data.n_classes, max(s["multiples"]))
    dsec = p["diffusion"]
    config = {"dataset": dataset, "image_size": data.size, "limited_data": p.get("limited_data"),
              "diffusion_run": drun.hash, "guidance_scale": w,
              "sample_steps": dsec.get("sample_steps"), "counts": counts.tolist(),
              "seed": int(s.get("pool_seed", 0))}

    def work(run: Run) -> dict:
        model = tasks.load_diffusion(drun, w)
        labels = np.repeat(np.arange(len(counts)), counts)
        x, y = model.sample(labels=labels, seed=config["seed"], steps=dsec.get("sample_steps"),
                            batch_size=int(dsec.get("sample_batch", 100)), progress=progress)
        u8 = (x.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        with atomic_path(run.path("pool.npz")) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, x=u8, y=y.numpy())
        return {"n": int(len(y))}

    run = run_once("synthetic_pool", prof["name"], config, work)
    with np.load(run.path("pool.npz"), allow_pickle=False) as z:
        return run, z["x"], z["y"]


def regime_data(real, x_pool: np.ndarray | None, y_pool: np.ndarray | None, regime: str,
                multiple: float):
    """``real`` (an :class:`~mdlib.data.ImageDataset`) with its training split replaced
    by the regime's training set; validation and test stay real."""
    if regime not in REGIMES:
        raise ValueError(f"regime '{regime}': expected one of {REGIMES}")
    if regime == "real":
        return real
    idx = subset_indices(y_pool, class_counts(real.y("train"), real.n_classes, multiple))
    xs, ys = x_pool[idx], y_pool[idx].astype(np.int64)
    if xs.shape[1:] != real.x("train").shape[1:]:
        raise ValueError(f"synthetic images {xs.shape[1:]} do not match the real ones "
                         f"{real.x('train').shape[1:]}")
    if regime == "real+synthetic":
        xs = np.concatenate([real.x("train"), xs])
        ys = np.concatenate([real.y("train"), ys])
    splits = dict(real.splits)
    splits["train"] = (xs, ys)
    groups = None if real.groups is None else dict(real.groups, train=None)  # synthetic: no groups
    return dataclasses.replace(real, splits=splits, groups=groups,
                               meta=dict(real.meta, regime=regime, multiple=multiple))


def budget_epochs(epochs: int, n_real: int, n_train: int, batch_size: int,
                  budget: str = "steps") -> int:
    """Epochs that give ``n_train`` images the optimizer steps of ``epochs`` epochs of
    ``n_real`` images (``budget="steps"``), or ``epochs`` unchanged (``"epochs"``)."""
    if budget == "epochs":
        return int(epochs)
    steps = epochs * math.ceil(n_real / batch_size)
    return max(1, int(round(steps / math.ceil(n_train / batch_size))))


def train_overrides(prof: dict, dataset: str, model: str) -> dict:
    """Training recipe of ``model`` in this study: the study's recipe of ``dataset``; for
    backbones other than the baseline model no model kwargs and the profile's
    ``synthetic.backbone_train`` overrides."""
    s = settings(prof)
    _, t = tasks.study_setup(prof, dataset)
    t = dict(t)
    if model != prof["baseline"]["model"]:
        t.update(model=model, model_kwargs={})
        t.update((s.get("backbone_train") or {}).get(model) or {})
    return t


def run_regime(prof: dict, dataset: str, seed: int, model: str, regime: str,
               multiple: float = 0, progress: bool = True) -> Run:
    """Train and test one (dataset, seed, model, regime, multiple) into
    ``runs/synthetic/<profile>/<hash>/`` (skipped when done)."""
    s = settings(prof)
    p, _ = tasks.study_setup(prof, dataset)
    real, idx = tasks.load_data(p, dataset, 0)
    t = train_overrides(prof, dataset, model)
    base = tasks.train_config(p, dataset, seed, **t)
    pool_run, xp, yp = (None, None, None)
    if regime != "real":
        pool_run, xp, yp = synthetic_pool(prof, dataset, progress=progress)
    else:
        multiple = 0
    data = regime_data(real, xp, yp, regime, multiple)
    n_real, n_train = len(real.y("train")), len(data.y("train"))
    epochs = budget_epochs(base.epochs, n_real, n_train, base.batch_size, s.get("budget", "steps"))
    cfg = tasks.train_config(p, dataset, seed, **{**t, "epochs": epochs})
    config = {"dataset": dataset, "image_size": p["image_size"],
              "limited_data": p.get("limited_data"), "train": cfg.to_dict(),
              "augmentation": {"method": regime, "multiple": float(multiple)},
              "synthetic": {"pool_run": pool_run.hash if pool_run else None,
                            "n_real": int(n_real), "n_train": int(n_train),
                            "budget": s.get("budget", "steps"), "base_epochs": base.epochs}}

    def work(run: Run) -> dict:
        from ...train import train_classifier
        if idx is not None:
            run.write_csv("train_indices.csv", pd.DataFrame({"train_index": idx}))
        res = train_classifier(data, cfg, None, run_dir=run.dir, progress=progress,
                               keep_model=True)
        return tasks.record_classifier(run, data, cfg, res)

    return run_once("synthetic", prof["name"], config, work)


def grid(prof: dict, datasets=None) -> list[dict]:
    """Every run of the study: the size sweep (all multiples, every regime) for
    ``sweep_backbones`` and the three regimes at ``backbone_multiple`` for the other
    backbones; ``real`` once per (dataset, model, seed)."""
    s = settings(prof)
    jobs = []
    sweep = list(s.get("sweep_backbones") or [prof["baseline"]["model"]])
    for ds in datasets or s["datasets"]:
        for model in list(dict.fromkeys(sweep + list(s.get("backbones") or []))):
            mults = s["multiples"] if model in sweep else [s.get("backbone_multiple", 1)]
            for seed in s["seeds"]:
                jobs.append(dict(dataset=ds, seed=seed, model=model, regime="real", multiple=0))
                for regime in REGIMES[1:]:
                    for m in mults:
                        jobs.append(dict(dataset=ds, seed=seed, model=model, regime=regime,
                                         multiple=m))
    return jobs


def _pool_job(args) -> str:
    prof, dataset = args
    import torch
    torch.set_num_threads(1)
    run, _, _ = synthetic_pool(prof, dataset, progress=False)
    return run.hash


def _train_job(args) -> str:
    prof, job = args
    import torch
    torch.set_num_threads(1)
    return run_regime(prof, progress=False, **job).hash


def run_grid(prof: dict, datasets=None, jobs: int | None = None, progress: bool = True
             ) -> pd.DataFrame:
    """Sample the pools, then train every run of :func:`grid` (finished runs are skipped,
    so a killed grid resumes). ``jobs > 1``: that many worker processes with one thread
    each (pools first, one per dataset). Returns the grid with each run's hash."""
    from tqdm.auto import tqdm
    s = settings(prof)
    datasets = list(datasets or s["datasets"])
    todo = grid(prof, datasets)
    jobs = int(jobs or s.get("jobs") or 1)
    if jobs <= 1:
        for ds in datasets:
            synthetic_pool(prof, ds, progress=progress)
        hashes = [run_regime(prof, progress=False, **j).hash
                  for j in tqdm(todo, desc="synthetic grid", disable=not progress)]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
            list(tqdm(ex.map(_pool_job, [(prof, d) for d in datasets]), total=len(datasets),
                      desc="synthetic pools", disable=not progress))
            hashes = list(tqdm(ex.map(_train_job, [(prof, j) for j in todo]), total=len(todo),
                               desc="synthetic grid", disable=not progress))
    return pd.DataFrame(todo).assign(run=hashes)


def collect(prof: dict) -> pd.DataFrame:
    """Finished runs of this study: one row each, with ``regime`` and ``multiple``."""
    import json

    from ...runs.results import collect as collect_runs
    df = collect_runs("synthetic", prof["name"])
    if df.empty:
        return df
    df = df.rename(columns={"method": "regime"})
    df["multiple"] = [float(json.loads(p).get("multiple", 0)) for p in df["params"]]
    return df


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd and 95% CI over seeds per dataset, model, regime and multiple."""
    from ...runs.results import summarise
    return summarise(df, by=("dataset", "model", "regime", "multiple"))


# --------------------------------------------------------------------------- explanations
def lime_maps(model, x, targets, num_samples: int = 1000, n_segments: int = 25,
              seed: int = 0, batch_size: int = 500, hide: str = "mean"
              ) -> tuple[np.ndarray, np.ndarray]:
    """LIME (``lime.lime_image``) attribution maps of ``model`` for images ``x`` (float
    ``(N, C, H, W)`` in [0, 1]) and their ``targets``: each superpixel's weight (SLIC
    superpixels, ``n_segments``) painted onto its pixels. ``hide``: how a superpixel is
    hidden in a perturbed image: ``"mean"`` (LIME's own default: replaced by its mean
    intensity, so a hidden region keeps its brightness and only loses its texture) or
    ``"black"`` (set to 0; on a 28 px radiograph or ultrasound image black patches are far
    from the data, the classifier's output collapses for most perturbations and the map
    comes out nearly uniform).
    The perturbed images of one explanation go through the model in batches.
    Returns ``(maps float32 (N, H, W), superpixel label maps int (N, H, W))``."""
    import torch
    from lime import lime_image
    from skimage.segmentation import slic

    from ...train import predict_proba
    x = torch.as_tensor(x, dtype=torch.float32)
    c = x.shape[1]
    dev = next(model.parameters()).device

    def classify(batch: np.ndarray) -> np.ndarray:  # (B, H, W, 3) float64
        t = torch.from_numpy(np.ascontiguousarray(batch[..., :c], dtype=np.float32))
        return predict_proba(model, t.permute(0, 3, 1, 2), batch_size, dev)

    def segment(img: np.ndarray) -> np.ndarray:
        if c == 1:
            return slic(img[..., 0], n_segments=n_segments, compactness=0.1,
                        channel_axis=None, start_label=0)
        return slic(img, n_segments=n_segments, compactness=10, start_label=0)

    if hide not in ("mean", "black"):
        raise ValueError(f"hide={hide!r}: expected 'mean' or 'black'")
    hide_color = None if hide == "mean" else 0
    explainer = lime_image.LimeImageExplainer(random_state=seed)
    maps, segs = [], []
    for img, tgt in zip(x.permute(0, 2, 3, 1).numpy().astype(np.float64), np.asarray(targets)):
        rgb = np.repeat(img, 3, axis=2) if c == 1 else img
        exp = explainer.explain_instance(rgb, classify, labels=(int(tgt),), top_labels=None,
                                         hide_color=hide_color, num_samples=num_samples,
                                         batch_size=batch_size, segmentation_fn=segment,
                                         random_seed=seed)
        w = np.zeros(int(exp.segments.max()) + 1)
        for k, v in exp.local_exp[int(tgt)]:
            w[k] = v
        maps.append(w[exp.segments].astype(np.float32))
        segs.append(exp.segments)
    return np.stack(maps), np.stack(segs)


def map_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image Pearson correlation of two stacks of maps ``(N, H, W)`` (NaN where a
    map is constant)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a ** 2).sum(1) * (b ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(1) / den, np.nan)


def explain(run_dirs: dict, x, y, lime_samples: int = 1000, lime_segments: int = 25,
            seed: int = 0, lime_hide: str = "mean") -> dict:
    """Grad-CAM and LIME maps of several trained classifiers (``{label: run_dir}``) on
    the same real images ``x`` (float ``(N, C, H, W)``), each for the true class ``y``.
    Returns ``{label: {"gradcam", "lime", "prob"}}``, maps ``(N, H, W)`` and the
    probability of the true class."""
    import torch

    x = torch.as_tensor(x, dtype=torch.float32)
    y = np.asarray(y)
    out = {}
    for label, rd in run_dirs.items():
        model = tasks.load_classifier(rd, device="cpu")
        cam, probs = tasks.cams_and_probs(model, x, y)
        lm, _ = lime_maps(model, x, y, num_samples=lime_samples, n_segments=lime_segments,
                          seed=seed, hide=lime_hide)
        out[label] = {"gradcam": cam, "lime": lm, "prob": probs[np.arange(len(y)), y]}
    return out


def explanation_stats(expl: dict, dataset: str, a: str, b: str) -> pd.DataFrame:
    """Agreement of the explanations: per image, the correlation of model ``a``'s and
    ``b``'s Grad-CAM maps, of their LIME maps, and of Grad-CAM with LIME within each
    model; one row per image."""
    rows = pd.DataFrame({
        "dataset": dataset,
        f"gradcam_{a}_vs_{b}": map_correlation(expl[a]["gradcam"], expl[b]["gradcam"]),
        f"lime_{a}_vs_{b}": map_correlation(expl[a]["lime"], expl[b]["lime"]),
        f"gradcam_vs_lime_{a}": map_correlation(expl[a]["gradcam"], expl[a]["lime"]),
        f"gradcam_vs_lime_{b}": map_correlation(expl[b]["gradcam"], expl[b]["lime"]),
        f"p_true_{a}": expl[a]["prob"], f"p_true_{b}": expl[b]["prob"]})
    rows.insert(1, "image", np.arange(len(rows)))
    return rows
