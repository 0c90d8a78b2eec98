"""Figures and numbers made from the study's *trained* classifiers (notebooks 10 and 11).

Nothing here trains (except :func:`ensure_smoke_runs`, for the smoke profile only): the
classifiers are the finished runs of ``runs/<task>/<profile>/`` (:func:`mdlib.results.collect`),
rebuilt from their ``config.json`` and ``model.safetensors``.

Run selection (:func:`select_runs`)
-----------------------------------
One run per (dataset, method) for a seed and a backbone. When several finished runs fit
(e.g. an ablation's parameter variants, or another limited-data regime in the same task)
the one with the profile's default parameters (``variant == "default"``,
:func:`mdlib.results.add_variants`) and the profile's image size and limited-data regime
is preferred, then the most recently finished. No run at all raises :class:`NoRunsError`
with a message naming the task, the profile and the command that makes the runs.

Grad-CAM (notebook 10; paper Figs. 6 and 7)
-------------------------------------------
:func:`cams_on_test` computes Grad-CAM (:func:`mdlib.saliency.gradcam`, target = the true
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

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import paths, plots

#: the two classifiers compared in Figs. 6 and 7
CAM_METHODS = ("no_aug", "meddiffusemix")


def label(method: str) -> str:
    return plots.METHOD_LABELS.get(method, method)


# --------------------------------------------------------------------------- run selection
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
    from . import results
    try:
        return results.add_variants(df, prof)
    except Exception:  # e.g. a method the current code no longer knows
        out = df.copy()
        out["variant"] = "?"
        return out


def select_runs(df: pd.DataFrame, prof: dict, task: str = "study", seed: int = 0,
                model: str = "small_cnn", datasets=None, methods=None) -> pd.DataFrame:
    """One finished run per (dataset, method) of ``seed`` and ``model`` from
    :func:`mdlib.results.collect`'s table ``df`` (see the module docstring for the
    preference among several). Methods in the order of :data:`mdlib.study.ALL_METHODS`.
    Raises :class:`NoRunsError` when nothing fits."""
    from .study import ALL_METHODS
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
    order = {m: i for i, m in enumerate(ALL_METHODS)}
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
    (:func:`mdlib.results.ensure_smoke_runs`, every method on the smoke dataset, seconds
    each). The other arguments only sharpen the error on another profile."""
    from . import results
    if prof["name"] != "smoke":
        raise ValueError(f"ensure_smoke_runs: profile '{prof['name']}' is not 'smoke'; "
                         + how_to_make_runs(task, prof["name"]))
    results.ensure_smoke_runs(prof, task, progress=progress)


def study_runs(prof: dict, task: str = "study", seed: int = 0, model: str = "small_cnn",
               datasets=None, methods=None, need_all: bool = False) -> pd.DataFrame:
    """The runs a figure notebook shows: :func:`select_runs` of the finished runs of
    ``task`` / the profile, restricted to the datasets that have a run of every one of
    ``methods`` (``need_all``) or of any of them. On the ``smoke`` profile the missing
    seed-``seed`` runs of ``methods`` (all of :data:`mdlib.study.ALL_METHODS` when None)
    are trained first (:func:`ensure_smoke_runs`, seconds each), so that CI never depends
    on which notebooks ran before; on any other profile missing runs raise
    :class:`NoRunsError` naming the task, the profile and the command that makes them."""
    from . import results
    from .study import ALL_METHODS
    methods = tuple(methods or ALL_METHODS)
    if isinstance(datasets, str):  # e.g. papermill -p DATASETS breastmnist
        datasets = [d.strip() for d in datasets.split(",") if d.strip()]
    if prof["name"] == "smoke":
        ensure_smoke_runs(prof, task, methods, datasets, seed, model)
    sel = select_runs(results.collect(task, prof["name"]), prof, task, seed, model, datasets,
                      methods)
    names = datasets_with(sel, methods) if need_all else sorted(sel["dataset"].unique())
    missing = sorted(set(datasets or []) - set(names))
    if missing or not names:
        what = "every one of" if need_all else "any of"
        raise _no_runs(task, prof["name"],
                       f"no seed-{seed} '{model}' runs of {what} {list(methods)} for "
                       + (f"datasets {missing}" if missing else "any dataset"))
    return sel[sel["dataset"].isin(names)].reset_index(drop=True)


# --------------------------------------------------------------------------- a run's pieces
def run_config(run_dir) -> dict:
    return json.loads((Path(run_dir) / "config.json").read_text())["config"]


def run_handle(run_dir):
    """A :class:`mdlib.runs.Run` for the finished run directory ``run_dir``."""
    from .runs import Run
    run_dir = Path(run_dir).resolve()
    j = json.loads((run_dir / "config.json").read_text())
    run = Run(j["task"], j["profile"], j["config"], root=run_dir.parents[2])
    if run.dir.resolve() != run_dir:
        raise ValueError(f"{run_dir}: config.json does not hash to this directory ({run.hash})")
    return run


def load_run_bank(run_dir):
    """The offline bank of a classifier run (:func:`mdlib.study.load_bank`)."""
    from .study import load_bank
    return load_bank(run_handle(run_dir))


def run_data(run_dir):
    """The run's dataset at its image size, with the training split cut to the run's
    limited-data subset (``train_indices.csv``), as the run trained on it."""
    from .data import load_dataset
    cfg = run_config(run_dir)
    ds = load_dataset(cfg["dataset"], int(cfg["image_size"]))
    f = Path(run_dir) / "train_indices.csv"
    if f.is_file():
        ds = ds.with_train_subset(pd.read_csv(f)["train_index"].to_numpy())
    return ds


def load_classifier(run_dir, device: str = "auto"):
    """The run's selected classifier (``model.safetensors``), in eval mode on ``device``."""
    from .models import build_model
    from .train import load_checkpoint, resolve_device
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

    from .saliency import gradcam
    from .train import predict_proba
    x = torch.as_tensor(x).float()
    t = torch.as_tensor(np.asarray(targets)).long()
    maps = [gradcam(model, x[i:i + batch_size], t[i:i + batch_size]).cpu()
            for i in range(0, len(x), batch_size)]
    maps = torch.cat(maps).numpy() if maps else np.zeros((0,) + tuple(x.shape[-2:]), np.float32)
    return maps, predict_proba(model, x, batch_size)


def cams_on_test(run_dir, ds=None, device: str = "auto", batch_size: int = 128) -> dict:
    """Grad-CAM (true label) and probabilities of the run's classifier on the whole test
    split: ``{"maps", "probs", "labels", "p_true", "correct"}``."""
    from .train import to_tensor
    ds = ds if ds is not None else run_data(run_dir)
    model = load_classifier(run_dir, device)
    y = ds.y("test")
    maps, probs = cams_and_probs(model, to_tensor(ds.x("test")), y, batch_size)
    return {"maps": maps, "probs": probs, "labels": y,
            "p_true": probs[np.arange(len(y)), y], "correct": probs.argmax(1) == y}


# --------------------------------------------------------------------------- CAM numbers
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
    from .train import to_tensor
    ds = ds if ds is not None else run_data(run_dir)
    xb, _, rec = load_run_bank(run_dir)
    ex = bank_examples(rec, per_class, seed)
    out = {"records": ex}
    if ex.empty:
        return out
    model = load_classifier(run_dir, device)
    y1 = ex["label"].to_numpy()
    x1 = to_tensor(ds.x("train")[ex["index"].to_numpy()])
    xa = xb[ex["pos"].to_numpy()].float()
    rows = np.arange(len(y1))
    for key, x in (("1", x1), ("a", xa)):
        cam, probs = cams_and_probs(model, x, y1)
        out[f"x{key}"], out[f"cam{key}"], out[f"p{key}"] = x.numpy(), cam, probs[rows, y1]
    return out


# --------------------------------------------------------------------------- t-SNE numbers
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


def knn_loo_accuracy(x, y, k: int = 5) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour vote (Euclidean; ties go to the
    class of the nearer neighbours)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    n = len(x)
    if n < 2:
        return math.nan
    k = min(k, n - 1)
    classes, yi = np.unique(y, return_inverse=True)
    w = 1.0 + 1e-3 / (1.0 + np.arange(k))  # one vote each; nearer ones break ties
    sq = (x * x).sum(1)
    votes = np.zeros((n, len(classes)))
    for i in range(0, n, 1024):  # chunks of rows keep the distance matrix small
        d = sq[i:i + 1024, None] + sq[None, :] - 2 * x[i:i + 1024] @ x.T
        r = np.arange(len(d))
        d[r, r + i] = np.inf  # leave the point itself out
        nn = np.argsort(d, axis=1, kind="stable")[:, :k]
        np.add.at(votes, (np.repeat(r + i, k), yi[nn].ravel()), np.tile(w, len(d)))
    return float((votes.argmax(1) == yi).mean())


def separability(features, labels, embedding=None, k: int = 5) -> dict:
    """Class separation of ``features`` (and of their 2-D ``embedding``): silhouette
    score of the true labels (NaN with fewer than 2 classes) and leave-one-out k-NN
    accuracy."""
    from sklearn.metrics import silhouette_score
    y = np.asarray(labels)
    n_cls = len(np.unique(y))

    def sil(x):
        if n_cls < 2 or n_cls >= len(y):
            return math.nan
        return float(silhouette_score(np.asarray(x, dtype=np.float64), y))

    out = {"silhouette_features": sil(features),
           f"knn{k}_acc_features": knn_loo_accuracy(features, y, k)}
    if embedding is not None:
        out["silhouette_tsne"] = sil(embedding)
        out[f"knn{k}_acc_tsne"] = knn_loo_accuracy(embedding, y, k)
    return out


def load_features(run_dir) -> tuple[np.ndarray, np.ndarray]:
    """``test_features.npz`` of a run: penultimate features (N, D) and labels (N,)."""
    with np.load(Path(run_dir) / "test_features.npz", allow_pickle=False) as z:
        return z["features"], z["labels"]


# --------------------------------------------------------------------------- figures
_HEAD = dict(fontsize=8.5, fontweight="bold")
_OK, _BAD = "#1a7f37", "#b42318"



def _cam_grid(cells, col_titles, row_labels, title: str = "", note: str = "",
              cam_alpha: float = 0.45, panel: float = 1.3):
    """A grid of image / Grad-CAM panels of ``panel`` inches, laid out in inches (square
    panels, fixed gaps) with bold column headings, row labels on the left, a Grad-CAM
    colour bar on the right, an optional title above and a note below.
    ``cells[i][j]``: dict with ``img`` and optionally ``cam`` (overlay), ``text`` (panel
    title) and ``color`` (its colour); ``None`` leaves the panel empty."""
    n, m = len(cells), len(col_titles)
    texts = any(c is not None and c.get("text") for r in cells for c in r)
    s, gx = panel, 0.06
    gy = 0.24 if texts else 0.08
    left, right = 0.05, 0.75                     # colour bar and its labels on the right
    top = (0.22 if texts else 0.02) + 0.26 + (0.34 if title else 0.0)
    bottom = 0.05 + (0.3 if note else 0.0)
    W = left + m * s + (m - 1) * gx + right
    H = top + n * s + (n - 1) * gy + bottom
    fig = plt.figure(figsize=(W, H))
    axes = np.empty((n, m), dtype=object)
    for i in range(n):
        y0 = H - top - (i + 1) * s - i * gy
        for j in range(m):
            ax = axes[i, j] = fig.add_axes([(left + j * (s + gx)) / W, y0 / H, s / W, s / H])
            c = cells[i][j]
            if c is None:
                ax.axis("off")
                continue
            img = plots.hwc(c["img"])
            if c.get("cam") is not None:
                plots.overlay(ax, img, c["cam"], alpha=cam_alpha)
            else:
                plots.show_image(ax, img)
            if c.get("text"):
                ax.set_title(c["text"], fontsize=7, pad=2, color=c.get("color", "black"))
            for sp in ax.spines.values():
                sp.set_visible(False)
        axes[i, 0].set_ylabel(row_labels[i], fontsize=7.5, rotation=0, ha="right", va="center",
                              labelpad=4)
    y_head = (H - top + (0.22 if texts else 0.02) + 0.04) / H
    for j, t in enumerate(col_titles):
        fig.text((left + j * (s + gx) + s / 2) / W, y_head, t, ha="center", va="bottom", **_HEAD)
    grid_top, grid_bottom = H - top, bottom
    cax = fig.add_axes([(left + m * s + (m - 1) * gx + 0.12) / W, grid_bottom / H,
                        0.09 / W, (grid_top - grid_bottom) / H])
    cb = fig.colorbar(plt.cm.ScalarMappable(plt.Normalize(0, 1), "jet"), cax=cax)
    cb.set_label("Grad-CAM", fontsize=7.5)
    cb.ax.tick_params(labelsize=6.5)
    cb.outline.set_visible(False)
    if title:
        fig.text((left + (m * s + (m - 1) * gx) / 2) / W, (H - 0.06) / H, title, ha="center",
                 va="top", fontsize=9.5)
    if note:
        fig.text((left + (m * s + (m - 1) * gx) / 2) / W, 0.04 / H, note, ha="center",
                 va="bottom", fontsize=6.5, color="#444444", wrap=True)
    return fig


def fig6_gradcam(images, labels, class_names, columns: dict, test_index=None, title: str = ""):
    """Paper Fig. 6: one row per test image; the image, then for each classifier of
    ``columns`` (name -> dict with ``maps``, ``p_true``, ``correct`` for these images)
    its Grad-CAM for the true label, titled with the probability it gives the true
    class (green: predicted correctly, red: not)."""
    rows, row_labels = [], []
    for i in range(len(images)):
        cells = [{"img": images[i]}]
        for name, c in columns.items():
            ok = bool(c["correct"][i])
            cells.append({"img": images[i], "cam": c["maps"][i],
                          "text": f"p(y) = {float(c['p_true'][i]):.2f}",
                          "color": _OK if ok else _BAD})
        rows.append(cells)
        lab = class_names[int(labels[i])]
        row_labels.append(lab if test_index is None else f"{lab}\ntest #{int(test_index[i])}")
    heads = ["test image"] + [f"{n}" for n in columns]
    note = ("Grad-CAM for the true label; panel titles: predicted probability of the true "
            "class\n(green: classified correctly, red: misclassified).")
    return _cam_grid(rows, heads, row_labels, title, note)


def fig7_bank_gradcam(x1, cam1, p1, xa, cama, pa, row_labels, alphas=None, title: str = ""):
    """Paper Fig. 7: per row a training image ``x1``, its Grad-CAM, its MedDiffuseMix bank
    image and that image's Grad-CAM (same classifier, ``x1``'s label); CAM panels titled
    with the probability of ``x1``'s label, the bank image with its alpha."""
    rows = []
    for i in range(len(x1)):
        a = "" if alphas is None else f"α = {float(alphas[i]):.2f}"
        rows.append([{"img": x1[i]},
                     {"img": x1[i], "cam": cam1[i], "text": f"p(y) = {float(p1[i]):.2f}"},
                     {"img": xa[i], "text": a},
                     {"img": xa[i], "cam": cama[i], "text": f"p(y) = {float(pa[i]):.2f}"}])
    heads = ["original $x_1$", "Grad-CAM", "MedDiffuseMix", "Grad-CAM"]
    note = ("Grad-CAM for the label of $x_1$; p(y): predicted probability of that label; "
            "α: weight of the same-class\npartner $x_2$ inside the mixing mask (Eq. 4), after the saliency-preservation check.")
    return _cam_grid(rows, heads, list(row_labels), title, note)


def tsne_figure(panels: list[dict], class_names, title: str = "", ncols: int = 4):
    """One scatter per method: ``panels`` = [{"title", "emb" (N,2), "labels" (N,)}, ...],
    points coloured by class, a shared legend."""
    import seaborn as sns
    n = len(panels)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.45 * ncols, 2.45 * nrows + 0.3),
                             squeeze=False)
    pal = sns.color_palette("colorblind", max(len(class_names), 3))
    for ax, p in zip(axes.flat, panels):
        emb, y = np.asarray(p["emb"]), np.asarray(p["labels"])
        for c in range(len(class_names)):
            sel = y == c
            ax.scatter(emb[sel, 0], emb[sel, 1], s=7, color=pal[c], alpha=0.75, linewidths=0,
                       label=class_names[c], rasterized=True)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for sp in ax.spines.values():
            sp.set_color("#999999")
            sp.set_linewidth(0.6)
        ax.set_title(p["title"], fontsize=8.5)
        ax.set_aspect("equal", adjustable="datalim")
    for ax in axes.flat[n:]:
        ax.axis("off")
    handles = [plt.Line2D([], [], marker="o", ls="", color=pal[c], markersize=5)
               for c in range(len(class_names))]
    fig.legend(handles, list(class_names), loc="lower center", ncol=min(len(class_names), 6),
               fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.01))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
