"""Numbers made from the study's *trained* classifiers (notebooks 10 and 11): run selection,
Grad-CAM statistics, bank examples, t-SNE and separability (the figures are in
:mod:`.figures`).

Nothing here trains (except :func:`ensure_smoke_runs`, for the smoke profile only): the
classifiers are the finished runs of ``runs/<task>/<profile>/`` (:func:`mdlib.runs.results.collect`),
rebuilt from their ``config.json`` and ``model.safetensors``.

Run selection (:func:`select_runs`)
-----------------------------------
One run per (dataset, method) for a seed and a backbone. When several finished runs fit
(e.g. an ablation's parameter variants, or another limited-data regime in the same task)
the one with the profile's default parameters (``variant == "default"``,
:func:`.study.add_variants`) and the profile's image size and limited-data regime
is preferred, then the most recently finished. No run at all raises :class:`NoRunsError`
with a message naming the task, the profile and the command that makes the runs.

Grad-CAM (notebook 10; paper Figs. 6 and 7)
-------------------------------------------
:func:`mdlib.runs.tasks.cams_on_test` computes Grad-CAM (:func:`mdlib.saliency.gradcam`, target = the true
label) and the predicted probability of the true class for the whole test split of a run;
:func:`cam_concentration` is the share of a map's mass inside its top ``20%`` pixels
(``ceil(0.2 * H * W)`` pixels; a uniform map gives ~0.2, a map with all its mass in
fewer pixels gives 1; an all-zero map, which Grad-CAM returns for a constant activation,
has no mass and gives NaN). :func:`bank_examples` picks accepted MedDiffuseMix bank
images per class of ``x1``.

t-SNE (notebook 11)
-------------------
:func:`tsne_embed`: scikit-learn ``TSNE`` (PCA init, fixed ``random_state``, perplexity
clipped by :func:`clip_perplexity` to fit small test sets; features reduced to 50 PCA
dimensions first when wider). :func:`separability`: silhouette score of the true labels
in the feature space and in the 2-D embedding, and leave-one-out k-NN accuracy (k = 5)
in both.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ... import paths
from ...data import to_tensor
from ...runs import results, tasks
from . import study as mdm_study
from .figures import METHOD_LABELS


#: the two classifiers compared in Figs. 6 and 7
CAM_METHODS = ("no_aug", "meddiffusemix")


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


class NoRunsError(RuntimeError):
    """The study's classifier runs that a figure needs are not there."""


def how_to_make_runs(task: str, profile: str) -> str:
    """The command(s) that produce the classifier runs of ``task`` / ``profile``."""
    grids = []
    for f in sorted((paths.REPO_ROOT / "studies").glob("*.yaml")):
        try:
            import yaml
            g = yaml.safe_load(f.read_text()) or {}
        except Exception:  # an unreadable grid is not this module's business
            continue
        if g.get("profile") == profile and (g.get("fixed") or {}).get("TASK", task) == task:
            grids.append(f"python -m mdlib.sweep studies/{f.name}")
    main = [g for g in grids if "studies/main" in g]  # the main comparison, if there is one
    grids = main or grids
    if not grids:
        grids = [f"python -m mdlib.sweep studies/<grid>.yaml --profile {profile}"]
    return ("Train them first (grids of notebooks/06_train_classifier.ipynb with "
            f"TASK={task}, PROFILE={profile}): " + "  or  ".join(grids))


def _no_runs(task: str, profile: str, what: str) -> NoRunsError:
    root = Path(paths.runs_root()) / task / profile
    return NoRunsError(f"{what} in {root} (task '{task}', profile '{profile}'). "
                       + how_to_make_runs(task, profile))


def _with_variants(df: pd.DataFrame, prof: dict) -> pd.DataFrame:
    try:
        return mdm_study.add_variants(df, prof)
    except Exception:  # e.g. a method the current code no longer knows
        out = df.copy()
        out["variant"] = "?"
        return out


def select_runs(df: pd.DataFrame, prof: dict, task: str = "study", seed: int = 0,
                model: str = "small_cnn", datasets=None, methods=None) -> pd.DataFrame:
    """One finished run per (dataset, method) of ``seed`` and ``model`` from
    :func:`mdlib.runs.results.collect`'s table ``df`` (see the module docstring for the
    preference among several). Methods in the order of :data:`mdlib.studies.meddiffusemix.study.ALL_METHODS`.
    Raises :class:`NoRunsError` when nothing fits."""
    profile = prof["name"]
    if df is None or len(df) == 0:
        raise _no_runs(task, profile, "no finished classifier runs")
    sel = df[(df["seed"].astype(int) == int(seed)) & (df["model"] == model)]
    if datasets is not None:
        sel = sel[sel["dataset"].isin(list(datasets))]
    if methods is not None:
        sel = sel[sel["method"].isin(list(methods))]
    if sel.empty:
        have = df.groupby(["model", "seed"]).size().to_dict()
        raise _no_runs(task, profile, f"no finished run of seed {seed}, model '{model}'"
                       + (f", datasets {list(datasets)}" if datasets is not None else "")
                       + (f", methods {list(methods)}" if methods is not None else "")
                       + f" (runs per (model, seed) there: {have})")
    sel = _with_variants(sel, prof)
    regime = json.dumps(prof.get("limited_data"), sort_keys=True)
    sel = sel.assign(
        _default=(sel["variant"] == "default"),
        _regime=(sel["limited_data"] == regime) if "limited_data" in sel else True,
        _size=(sel["image_size"] == prof.get("image_size")) if "image_size" in sel else True,
        _mtime=[(Path(d) / "DONE").stat().st_mtime if (Path(d) / "DONE").exists() else 0.0
                for d in sel["run_dir"]])
    sel = sel.sort_values(["_default", "_regime", "_size", "_mtime"], ascending=False)
    sel = sel.groupby(["dataset", "method"], sort=False).head(1)
    order = {m: i for i, m in enumerate(mdm_study.ALL_METHODS)}
    sel = sel.assign(_order=sel["method"].map(lambda m: order.get(m, len(order))))
    sel = sel.sort_values(["dataset", "_order"]).drop(
        columns=["_default", "_regime", "_size", "_mtime", "_order"])
    return sel.reset_index(drop=True)


def datasets_with(sel: pd.DataFrame, methods) -> list[str]:
    """Datasets of ``sel`` that have a run of every one of ``methods``."""
    methods = set(methods)
    return sorted(d for d, g in sel.groupby("dataset") if methods <= set(g["method"]))


def ensure_smoke_runs(prof: dict, task: str, methods=None, datasets=None, seed: int = 0,
                      model: str | None = None, progress: bool = False) -> None:
    """Smoke profile only: create the missing smoke configurations of ``task``
    (:func:`.study.ensure_smoke_runs`, every method on the smoke dataset, seconds
    each). The other arguments only sharpen the error on another profile."""
    if prof["name"] != "smoke":
        raise ValueError(f"ensure_smoke_runs: profile '{prof['name']}' is not 'smoke'; "
                         + how_to_make_runs(task, prof["name"]))
    mdm_study.ensure_smoke_runs(prof, task, progress=progress)


def study_runs(prof: dict, task: str = "study", seed: int = 0, model: str = "small_cnn",
               datasets=None, methods=None, need_all: bool = False) -> pd.DataFrame:
    """The runs a figure notebook shows: :func:`select_runs` of the profile's current runs
    of ``task`` (:func:`.study.current_runs`), restricted to the datasets that have a run of every one of
    ``methods`` (``need_all``) or of any of them. On the ``smoke`` profile the missing
    seed-``seed`` runs of ``methods`` (all of :data:`mdlib.studies.meddiffusemix.study.ALL_METHODS` when None)
    are trained first (:func:`ensure_smoke_runs`, seconds each), so that CI never depends
    on which notebooks ran before; on any other profile missing runs raise
    :class:`NoRunsError` naming the task, the profile and the command that makes them."""
    methods = tuple(methods or mdm_study.ALL_METHODS)
    if isinstance(datasets, str):  # e.g. papermill -p DATASETS breastmnist
        datasets = [d.strip() for d in datasets.split(",") if d.strip()]
    sel = select_runs(results.collect(task, prof["name"], runs=mdm_study.current_runs(prof, task)),
                      prof, task, seed, model, datasets, methods)
    names = datasets_with(sel, methods) if need_all else sorted(sel["dataset"].unique())
    missing = sorted(set(datasets or []) - set(names))
    if missing or not names:
        what = "every one of" if need_all else "any of"
        raise _no_runs(task, prof["name"],
                       f"no seed-{seed} '{model}' runs of {what} {list(methods)} for "
                       + (f"datasets {missing}" if missing else "any dataset"))
    return sel[sel["dataset"].isin(names)].reset_index(drop=True)


def load_run_bank(run_dir):
    """The offline bank of a classifier run (:func:`mdlib.runs.tasks.load_bank`)."""
    return tasks.load_bank(tasks.run_handle(run_dir))


def cam_concentration(maps, top: float = 0.2) -> np.ndarray:
    """Per map, the share of its mass in its ``ceil(top * H * W)`` largest pixels (NaN
    for a map without mass)."""
    if not 0 < top <= 1:
        raise ValueError(f"top={top}: must lie in (0, 1]")
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim == 2:
        m = m[None]
    if len(m) == 0:
        return np.zeros(0)
    m = m.reshape(len(m), -1)
    if (m < 0).any():
        raise ValueError("cam_concentration: maps must be non-negative")
    k = max(1, math.ceil(top * m.shape[1]))
    top_sum = np.partition(m, m.shape[1] - k, axis=1)[:, -k:].sum(1)
    total = m.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, top_sum / np.where(total > 0, total, 1), np.nan)


def cam_stats_row(dataset: str, method: str, run_row, cams: dict, top: float = 0.2) -> dict:
    """One row of the CAM statistics table (notebook 10)."""
    conc = cam_concentration(cams["maps"], top)
    ok = np.isfinite(conc)
    return {"dataset": dataset, "method": method, "run": run_row["run"],
            "n_test": int(len(conc)), "n_empty_maps": int((~ok).sum()),
            f"cam_top{round(top * 100)}_share": float(conc[ok].mean()) if ok.any() else math.nan,
            f"cam_top{round(top * 100)}_share_std": float(conc[ok].std()) if ok.any() else math.nan,
            "p_true_mean": float(cams["p_true"].mean()),
            "test_acc": float(run_row["test_acc"]),
            "test_acc_reloaded": float(cams["correct"].mean())}


def pick_per_class(y, per_class: int, seed: int = 0) -> np.ndarray:
    """Up to ``per_class`` seeded random indices of each class, grouped by class."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        out.append(np.sort(rng.choice(idx, min(per_class, len(idx)), replace=False)))
    return np.concatenate(out) if out else np.zeros(0, dtype=int)


def bank_examples(records: pd.DataFrame, per_class: int, seed: int = 0) -> pd.DataFrame:
    """Accepted MedDiffuseMix bank images (status ``accepted``; ``accepted_unchecked``
    for a bank made without the check), up to ``per_class`` per class of ``x1``, seeded.
    The returned rows keep the bank position in column ``pos``."""
    rec = records.reset_index(drop=True).assign(pos=lambda r: np.arange(len(r)))
    acc = rec[rec["status"] == "accepted"]
    if acc.empty:
        acc = rec[rec["status"] == "accepted_unchecked"]
    if acc.empty:
        return acc
    pick = pick_per_class(acc["label"].to_numpy(), per_class, seed)
    return acc.iloc[pick]


def bank_gradcam(run_dir, ds=None, per_class: int = 2, seed: int = 0,
                 device: str = "auto") -> dict:
    """Fig. 7's data for a MedDiffuseMix run: :func:`bank_examples` of its bank, the
    training images ``x1`` they were made from, and the run's classifier's Grad-CAM and
    probability of ``x1``'s label on both. Returns ``{"records", "x1", "cam1", "p1",
    "xa", "cama", "pa"}`` (images float ``(N,C,H,W)`` in [0, 1]; empty when the bank has
    no accepted image)."""
    ds = ds if ds is not None else tasks.run_data(run_dir)
    xb, _, rec = load_run_bank(run_dir)
    ex = bank_examples(rec, per_class, seed)
    out = {"records": ex}
    if ex.empty:
        return out
    model = tasks.load_classifier(run_dir, device)
    y1 = ex["label"].to_numpy()
    x1 = to_tensor(ds.x("train")[ex["index"].to_numpy()])
    xa = xb[ex["pos"].to_numpy()].float()
    rows = np.arange(len(y1))
    for key, x in (("1", x1), ("a", xa)):
        cam, probs = tasks.cams_and_probs(model, x, y1)
        out[f"x{key}"], out[f"cam{key}"], out[f"p{key}"] = x.numpy(), cam, probs[rows, y1]
    out["x2"] = to_tensor(ds.x("train")[ex["partner"].to_numpy()]).numpy()
    out["mask"] = bank_masks(run_dir, ds, ex)
    return out


def bank_masks(run_dir, ds, records: pd.DataFrame) -> np.ndarray:
    """MedDiffuseMix's smoothed mask ``M_s`` for bank records (their ``index`` / ``partner``),
    recomputed from the guidance classifier the run's bank was made with (the run's
    ``resources``; its Grad-CAM of the training images, the method's parameters from the
    run's config)."""
    import copy

    import torch

    from ... import augment, profiles
    from ...saliency import gradcam
    cfg = tasks.run_config(run_dir)
    params = {k: v for k, v in cfg["augmentation"].items() if k != "method"}
    aug = augment.get("meddiffusemix", **params)
    run = tasks.run_handle(run_dir)
    prof = copy.deepcopy(profiles.load(run.profile))
    prof["image_size"] = int(cfg["image_size"])
    prof["limited_data"] = cfg.get("limited_data")
    g, grun = tasks.guidance_model(prof, cfg["dataset"], tasks.resource_seed(prof, cfg["train"]["seed"]),
                                   progress=False)
    want = cfg.get("resources", {}).get("guidance")
    if want is not None and grun.hash != want:
        raise ValueError(f"{run_dir}: its bank's guidance classifier {want} is not {grun.hash}")
    x = to_tensor(ds.x("train"))
    i1, i2 = records["index"].to_numpy(), records["partner"].to_numpy()
    y = torch.from_numpy(ds.y("train"))
    s1 = gradcam(g, x[i1], y[i1]).cpu()
    s2 = gradcam(g, x[i2], y[i2]).cpu()
    _, _, _, m = augment.regions(s1, s2, aug.params["tau_h"], aug.params["tau_b"])
    return augment.smooth_mask(m, aug.params["sigma"] if aug.params["smooth"] else 0.0).numpy()


def clip_perplexity(perplexity: float, n: int) -> float:
    """t-SNE needs perplexity < n; keep it at most (n - 1) / 3 (and at least 1)."""
    return float(max(1.0, min(float(perplexity), (n - 1) / 3.0)))


def tsne_embed(features, perplexity: float = 30.0, seed: int = 0, max_dims: int = 50
               ) -> np.ndarray:
    """2-D t-SNE of ``features`` (N, D): PCA to ``max_dims`` dimensions first when wider,
    then ``TSNE(init="pca", learning_rate="auto", random_state=seed)``."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    x = np.asarray(features, dtype=np.float64)
    if len(x) < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {len(x)}")
    if x.shape[1] > max_dims and len(x) > max_dims:
        x = PCA(max_dims, random_state=seed).fit_transform(x)
    tsne = TSNE(2, perplexity=clip_perplexity(perplexity, len(x)), init="pca",
                learning_rate="auto", random_state=seed, n_jobs=1)
    return tsne.fit_transform(x).astype(np.float32)


def knn_loo_accuracy(x, y, k: int = 5, groups=None) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour vote (Euclidean; ties go to the
    class of the nearer neighbours). ``groups``: one label per point; a point's
    neighbours are then taken from other groups only (leave-one-group-out), because
    images of one group (e.g. rotated copies of one LC25000 tile) are near-copies whose
    neighbourhood says nothing about class separation."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    n = len(x)
    if n < 2:
        return math.nan
    g = None if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    k = min(k, n - 1 if g is None else int(n - np.bincount(g).max()))
    if k < 1:
        return math.nan
    classes, yi = np.unique(y, return_inverse=True)
    w = 1.0 + 1e-3 / (1.0 + np.arange(k))  # one vote each; nearer ones break ties
    sq = (x * x).sum(1)
    votes = np.zeros((n, len(classes)))
    for i in range(0, n, 1024):  # chunks of rows keep the distance matrix small
        d = sq[i:i + 1024, None] + sq[None, :] - 2 * x[i:i + 1024] @ x.T
        r = np.arange(len(d))
        d[r, r + i] = np.inf  # leave the point itself out
        if g is not None:  # and every point of its group
            d[g[i:i + 1024, None] == g[None, :]] = np.inf
        nn = np.argsort(d, axis=1, kind="stable")[:, :k]
        np.add.at(votes, (np.repeat(r + i, k), yi[nn].ravel()), np.tile(w, len(d)))
    return float((votes.argmax(1) == yi).mean())


def separability(features, labels, embedding=None, k: int = 5, groups=None) -> dict:
    """Class separation of ``features`` (and of their 2-D ``embedding``): silhouette
    score of the true labels (NaN with fewer than 2 classes) and leave-one-out k-NN
    accuracy (leave-one-group-out with ``groups``, see :func:`knn_loo_accuracy`)."""
    from sklearn.metrics import silhouette_score
    y = np.asarray(labels)
    n_cls = len(np.unique(y))

    def sil(x):
        if n_cls < 2 or n_cls >= len(y):
            return math.nan
        return float(silhouette_score(np.asarray(x, dtype=np.float64), y))

    out = {"silhouette_features": sil(features),
           f"knn{k}_acc_features": knn_loo_accuracy(features, y, k, groups)}
    if embedding is not None:
        out["silhouette_tsne"] = sil(embedding)
        out[f"knn{k}_acc_tsne"] = knn_loo_accuracy(embedding, y, k, groups)
    out["knn_neighbours"] = "other groups" if groups is not None else "all other images"
    return out


def load_features(run_dir) -> tuple[np.ndarray, np.ndarray]:
    """``test_features.npz`` of a run: penultimate features (N, D) and labels (N,)."""
    from ...runs.archive import require_files
    require_files(run_dir, "test_features.npz")
    with np.load(Path(run_dir) / "test_features.npz", allow_pickle=False) as z:
        return z["features"], z["labels"]

