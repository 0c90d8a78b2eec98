"""Figures shared by the notebooks. Every function reads arrays or saved result tables and
returns a matplotlib Figure; :func:`savefig` writes it atomically (PNG, 150 dpi)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .data import ImageDataset
from .io import atomic_path

sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def savefig(fig, path: str | os.PathLike, dpi: int = 150) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def hwc(a) -> np.ndarray:
    """Channels last: an image (C,H,W) or a batch (N,C,H,W) becomes (H,W,C) / (N,H,W,C);
    arrays already channels-last are returned as they are."""
    a = np.asarray(a)
    if a.ndim in (3, 4) and a.shape[-3] in (1, 3) and a.shape[-1] not in (1, 3):
        return np.moveaxis(a, -3, -1)
    return a


def show_image(ax, img: np.ndarray, title: str | None = None, cmap_grey: str = "gray") -> None:
    """``img``: (H,W), (H,W,1) or (H,W,3), uint8 or float in [0,1]."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    kw = dict(cmap=cmap_grey, vmin=0, vmax=255 if img.dtype == np.uint8 else 1) if img.ndim == 2 else {}
    ax.imshow(img, interpolation="nearest", **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if title:
        ax.set_title(title, fontsize=9)


def example_grid(ds: ImageDataset, split: str = "train", per_class: int = 8, seed: int = 0):
    """One row per class, ``per_class`` random real examples."""
    rng = np.random.default_rng(seed)
    x, y = ds.splits[split]
    k = ds.n_classes
    fig, axes = plt.subplots(k, per_class, figsize=(1.2 * per_class, 1.3 * k), squeeze=False)
    for c in range(k):
        idx = np.flatnonzero(y == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            if j < len(pick):
                show_image(ax, x[pick[j]])
            else:
                ax.axis("off")
        axes[c, 0].set_ylabel(ds.class_names[c], rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"{ds.name} ({ds.size} px, {split} split): random examples per class", y=1.0)
    fig.tight_layout()
    return fig


def split_summary(ds: ImageDataset) -> pd.DataFrame:
    rows = []
    for s, (x, y) in ds.splits.items():
        counts = np.bincount(y, minlength=ds.n_classes)
        for c in range(ds.n_classes):
            rows.append({"dataset": ds.name, "split": s, "class": c,
                         "class_name": ds.class_names[c], "n": int(counts[c]),
                         "fraction": float(counts[c] / len(y))})
    return pd.DataFrame(rows)


def class_balance_plot(summary: pd.DataFrame):
    datasets = summary["dataset"].unique()
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.2), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        sub = summary[summary.dataset == d]
        sns.barplot(sub, x="split", y="n", hue="class_name", ax=ax)
        ax.set_title(d)
        ax.set_ylabel("images")
        ax.legend(fontsize=7, title=None)
    fig.tight_layout()
    return fig


def intensity_stats(ds: ImageDataset) -> pd.DataFrame:
    """Per split and class: mean and std of the per-image mean intensity (in [0, 1]), and
    of the per-image contrast (std), vectorised over images."""
    rows = []
    for s, (x, y) in ds.splits.items():
        xf = x.reshape(len(x), -1).astype(np.float32) / 255.0
        m, sd = xf.mean(1), xf.std(1)
        for c in range(ds.n_classes):
            sel = y == c
            if not sel.any():
                continue
            rows.append({"dataset": ds.name, "split": s, "class_name": ds.class_names[c],
                         "n": int(sel.sum()), "mean_intensity": float(m[sel].mean()),
                         "std_of_mean": float(m[sel].std()),
                         "mean_contrast": float(sd[sel].mean())})
    return pd.DataFrame(rows)


def intensity_hist(datasets: list[ImageDataset], split: str = "train", bins: int = 64):
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.0), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        x, y = ds.splits[split]
        for c in range(ds.n_classes):
            v = x[y == c].reshape(-1)
            h, e = np.histogram(v, bins=bins, range=(0, 255), density=True)
            ax.plot((e[:-1] + e[1:]) / 2 / 255.0, h * 255.0, label=ds.class_names[c])
        ax.set_title(f"{ds.name} ({split})")
        ax.set_xlabel("pixel intensity")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def baseline_vs_reference(summary: pd.DataFrame, reference: dict):
    """Bars: mean +- std over seeds of test ACC and AUC per dataset; markers: reference."""
    metrics = ["acc", "auc"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    xs = np.arange(len(summary))
    for ax, met in zip(axes, metrics):
        ax.bar(xs, summary[f"{met}_mean"], yerr=summary[f"{met}_std"], capsize=4,
               color=sns.color_palette()[0], label="this study (small CNN, No Aug)")
        ref = [reference.get(d, {}).get(met, np.nan) for d in summary["dataset"]]
        ax.scatter(xs, ref, marker="D", color="crimson", zorder=3,
                   label="MedMNIST v2 ResNet-18 (28 px)")
        ax.set_xticks(xs, summary["dataset"], rotation=15)
        ax.set_ylim(0.4, 1.0)
        ax.set_title(f"test {met.upper()}")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def training_curves(histories: pd.DataFrame):
    """``histories``: columns dataset, seed, epoch, train_loss, val_auc."""
    datasets = histories["dataset"].unique()
    fig, axes = plt.subplots(2, len(datasets), figsize=(4.0 * len(datasets), 5.2), squeeze=False)
    for j, d in enumerate(datasets):
        sub = histories[histories.dataset == d]
        sns.lineplot(sub, x="epoch", y="train_loss", hue="seed", ax=axes[0, j], palette="tab10")
        sns.lineplot(sub, x="epoch", y="val_auc", hue="seed", ax=axes[1, j], palette="tab10")
        axes[0, j].set_title(d)
    fig.tight_layout()
    return fig


def overlay(ax, img: np.ndarray, cam: np.ndarray, title: str | None = None, alpha: float = 0.45):
    """Image with a saliency map (jet) on top; ``cam`` (H,W) in [0,1]."""
    show_image(ax, img, title)
    ax.imshow(np.asarray(cam), cmap="jet", vmin=0, vmax=1, alpha=alpha, interpolation="bilinear")


def gradcam_comparison(images: np.ndarray, labels: np.ndarray, class_names, columns: dict,
                       title: str = ""):
    """One row per image; first column the image, then one overlay per entry of ``columns``
    (name -> (N,H,W) maps). A column named with 'diff' is shown as a plain map on a fixed
    0 .. 1e-3 scale (the agreement tolerance), so black means agreement."""
    n, m = len(images), 1 + len(columns)
    fig, axes = plt.subplots(n, m, figsize=(1.6 * m, 1.6 * n), squeeze=False)
    for i in range(n):
        show_image(axes[i, 0], images[i], class_names[int(labels[i])] if i >= 0 else None)
        for j, (name, maps) in enumerate(columns.items(), start=1):
            ax = axes[i, j]
            if "diff" in name:
                ax.imshow(maps[i], cmap="magma", vmin=0, vmax=1e-3, interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
            else:
                overlay(ax, images[i], maps[i])
            if i == 0:
                ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return fig


def gradcam_panel(panels: dict, class_names: dict):
    """Paper Fig. 6: one column pair per dataset (image, Grad-CAM), rows = examples of the
    negative and the positive class. ``panels``: dataset -> (images, labels, maps)."""
    names = list(panels)
    rows = max(len(v[0]) for v in panels.values())
    fig, axes = plt.subplots(rows, 2 * len(names), figsize=(3.0 * len(names), 1.6 * rows),
                             squeeze=False)
    for j, d in enumerate(names):
        imgs, labels, maps = panels[d]
        for i in range(rows):
            a, b = axes[i, 2 * j], axes[i, 2 * j + 1]
            if i >= len(imgs):
                a.axis("off"), b.axis("off")
                continue
            show_image(a, imgs[i])
            overlay(b, imgs[i], maps[i])
            a.set_ylabel(class_names[d][int(labels[i])], fontsize=8)
        axes[0, 2 * j].set_title(d, fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def samples_vs_real(real_x: np.ndarray, real_y: np.ndarray, samples: np.ndarray,
                    sample_y: np.ndarray, class_names, per_class: int = 8, seed: int = 0,
                    title: str = ""):
    """Per class: a row of real images and a row of generated ones. Images uint8 NHWC or
    float NCHW in [0, 1]."""
    return sample_rows([("real", real_x, real_y), ("generated", samples, sample_y)],
                       class_names, per_class, seed, title)


def sample_rows(rows: list, class_names, per_class: int = 8, seed: int = 0, title: str = ""):
    """Per class, one row of ``per_class`` seeded random images from each image set of
    ``rows`` (``[(tag, images, labels), ...]``; images uint8 NHWC or float NCHW in [0, 1])."""
    rows = [(tag, hwc(x), np.asarray(y)) for tag, x, y in rows]
    rng = np.random.default_rng(seed)
    k, n = len(class_names), len(rows)
    fig, axes = plt.subplots(n * k, per_class, figsize=(1.1 * per_class, 1.2 * n * k),
                             squeeze=False)
    for c in range(k):
        for r, (tag, xs, ys) in enumerate(rows):
            idx = np.flatnonzero(ys == c)
            pick = rng.choice(idx, min(per_class, len(idx)), replace=False) if len(idx) else []
            for j in range(per_class):
                ax = axes[n * c + r, j]
                if j < len(pick):
                    show_image(ax, xs[pick[j]])
                else:
                    ax.axis("off")
            axes[n * c + r, 0].set_ylabel(f"{class_names[c]}\n{tag}", rotation=0, ha="right",
                                          va="center", fontsize=8)
    if title:
        fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return fig


def loss_curves(curves: dict, smooth: int = 50):
    """``curves``: name -> (steps, losses). Raw loss faint, running mean bold."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for i, (name, (st, lo)) in enumerate(curves.items()):
        st, lo = np.asarray(st), np.asarray(lo)
        col = sns.color_palette()[i % 10]
        ax.plot(st, lo, color=col, alpha=0.2, lw=0.6)
        if len(lo) >= smooth:
            ker = np.ones(smooth) / smooth
            ax.plot(st[smooth - 1:], np.convolve(lo, ker, mode="valid"), color=col, label=name)
        else:
            ax.plot(st, lo, color=col, label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("diffusion loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


