"""Figures of the DiffAug study (notebooks 14-16). Every function returns a matplotlib
Figure (save it with :func:`mdlib.plots.savefig`)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ...plots import show_image

SPLIT_COLORS = {"train": sns.color_palette()[0], "val": sns.color_palette()[2],
                "test": sns.color_palette()[3], "unused": "0.8"}


def overlay(img: np.ndarray, mask: np.ndarray, color=(0.1, 1.0, 0.2), alpha: float = 0.35,
            edge_only: bool = False) -> np.ndarray:
    """The image (uint8 HWC) with the mask tinted (or only its outline)."""
    from scipy import ndimage as ndi
    x = img.astype(np.float32) / 255.0
    m = mask.astype(bool)
    if edge_only:
        m = m & ~ndi.binary_erosion(m)
        alpha = 1.0
    x[m] = (1 - alpha) * x[m] + alpha * np.asarray(color)
    return x


def split_groups(split: pd.DataFrame):
    """Frames per sequence group, coloured by split."""
    g = split.groupby(["group", "split"]).size().unstack(fill_value=0)
    fig, ax = plt.subplots(figsize=(10, 2.8))
    bottom = np.zeros(len(g))
    for s in ("train", "val", "test", "unused"):
        if s in g:
            ax.bar(g.index.astype(str), g[s], bottom=bottom, color=SPLIT_COLORS[s],
                   label=f"{s} ({int(g[s].sum())} frames)")
            bottom += g[s].to_numpy()
    ax.set_xlabel("sequence (published CVC-ClinicDB frame-to-sequence table)")
    ax.set_ylabel("frames")
    ax.set_ylim(0, g.sum(1).max() * 1.08)
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25), frameon=False)
    ax.set_title("Grouped split: every sequence lies in one split")
    fig.tight_layout()
    return fig


def similarity_rule(frames: np.ndarray, sim: np.ndarray, published: np.ndarray, threshold: float):
    """Consecutive-frame similarity against frame number, the rule's threshold, and the
    published sequence boundaries."""
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.plot(frames[1:], sim[1:], lw=0.8, color="0.3",
            label="colour-histogram intersection with the last 5 frames of the current group")
    b = np.flatnonzero(published[1:] != published[:-1]) + 1
    ax.scatter(frames[b], sim[b], color="tab:red", s=18, zorder=3,
               label="first frame of a published sequence")
    ax.axhline(threshold, color="tab:blue", ls="--", label=f"rule threshold {threshold:g}")
    ax.set_xlabel("frame number")
    ax.set_ylabel("similarity to the previous frames")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def examples(images, masks, titles, ncol: int = 6, title: str = ""):
    n = len(images)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.7 * ncol, 1.85 * nrow), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        show_image(ax, overlay(images[i], masks[i], edge_only=True), titles[i] if titles else None)
        ax.axis("on")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def lesion_areas(areas_frac: np.ndarray, small_frac: float, size: int):
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(np.asarray(areas_frac) * 100, bins=40, color="0.5")
    ax.axvline(small_frac * 100, color="tab:red", ls="--",
               label=f"small: < {small_frac:.0%} of the frame ({small_frac * size * size:.0f} px at {size} px)")
    ax.set_xlabel("lesion area (% of the frame)")
    ax.set_ylabel("lesions (training split)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def reconstructions(x, xr, m, mr, n: int = 6):
    """Rows: frames, their reconstructions, masks, decoded masks."""
    fig, axes = plt.subplots(4, n, figsize=(1.6 * n, 6.8), squeeze=False)
    for j in range(n):
        show_image(axes[0, j], x[j])
        show_image(axes[1, j], xr[j])
        show_image(axes[2, j], m[j].astype(np.float32))
        show_image(axes[3, j], mr[j].astype(np.float32))
    for i, t in enumerate(("test frame", "reconstruction", "mask", "decoded mask")):
        axes[i, 0].set_ylabel(t, fontsize=8)
    fig.suptitle("Autoencoder on test frames (encode, decode)", fontsize=10)
    fig.tight_layout()
    return fig


def curves(hist: dict, x: str, ys: dict, title: str = "", logy: bool = False, smooth: int = 1):
    """One panel per entry of ``ys`` (``{column: label}``), one line per history."""
    fig, axes = plt.subplots(1, len(ys), figsize=(4.2 * len(ys), 3), squeeze=False)
    for ax, (col, lab) in zip(axes[0], ys.items()):
        for name, h in hist.items():
            if col in h:
                y = pd.Series(h[col]).rolling(smooth, min_periods=1).mean()
                ax.plot(h[x], y, label=name, lw=1)
        ax.set_xlabel(x)
        ax.set_ylabel(lab)
        if logy:
            ax.set_yscale("log")
    axes[0, -1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def gate_iou_hist(iou_single, theta: float, iou_iter=None, theta_iter: float | None = None):
    """Histograms of the gate's IoU on generated samples, single-step and (where scored)
    iterative, each with its acceptance threshold. Densities (each histogram has area 1):
    the iterative gate scores only a subset, so counts would not compare."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    bins = np.linspace(0, 1, 41)
    c1, c2 = "C0", "C1"
    ax.hist(iou_single, bins=bins, density=True, alpha=0.45, color=c1,
            label=f"single step (n={len(iou_single)})")
    ax.hist(iou_single, bins=bins, density=True, histtype="step", color=c1, lw=1.2)
    ax.axvline(theta, color=c1, ls="--", label=f"theta single = {theta:.3f}")
    if iou_iter is not None and len(iou_iter):
        ax.hist(iou_iter, bins=bins, density=True, alpha=0.45, color=c2,
                label=f"iterative (n={len(iou_iter)})")
        ax.hist(iou_iter, bins=bins, density=True, histtype="step", color=c2, lw=1.2)
        if theta_iter is not None and theta_iter != theta:
            ax.axvline(theta_iter, color=c2, ls=":", label=f"theta iterative = {theta_iter:.3f}")
    ax.set_xlabel("gate IoU (predicted vs intended mask)")
    ax.set_ylabel("density (area 1 per histogram)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gallery(real_x, real_m, acc: list, rej: list, ncol: int = 6,
            real_title: str = "real training frames"):
    """Fig. 2: a row of real training frames, rows of accepted and rejected samples; each
    sample with its intended mask outlined (green), the gate's IoU and its prompt."""
    rows = [(real_title, [(x, m, "") for x, m in zip(real_x[:ncol], real_m[:ncol])])]
    rows.append(("accepted", acc[:ncol]))
    rows.append(("rejected", rej[:ncol]))
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.3 * ncol, 2.75 * len(rows)), squeeze=False)
    import textwrap
    for i, (name, items) in enumerate(rows):
        for j in range(ncol):
            ax = axes[i, j]
            if j >= len(items):
                ax.axis("off")
                continue
            x, m, cap = items[j]
            show_image(ax, overlay(x, m, edge_only=True))
            if cap:
                ax.set_title("\n".join(textwrap.wrap(cap, 34)), fontsize=5.5)
        axes[i, 0].set_ylabel(name, fontsize=9)
    fig.suptitle("Generated polyps (outline: intended mask) with their prompts, accepted and "
                 "rejected by the gate, beside real frames", fontsize=10)
    fig.tight_layout()
    return fig


def seeds_plot(df: pd.DataFrame, order: list, metric: str = "test_dice", ylabel: str = "test Dice"):
    """One dot per seed, mean ± std bar, per arm."""
    d = df[df.label.isin(order)]
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * len(order), 3.6))
    sns.pointplot(d, x="label", y=metric, order=order, errorbar="sd", linestyle="none",
                  capsize=0.2, color="k", markers="_", ax=ax)
    sns.stripplot(d, x="label", y=metric, order=order, hue="seed", palette="tab10", size=5,
                  jitter=0.08, ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel(f"{ylabel} (dots: seeds; bar: mean ± std)")
    ax.tick_params(axis="x", rotation=35, labelsize=8)
    for t in ax.get_xticklabels():
        t.set_horizontalalignment("right")
    ax.legend(title="seed", fontsize=7, title_fontsize=7)
    fig.tight_layout()
    return fig


def multiples_plot(summary: pd.DataFrame, base: pd.Series | None = None, metric: str = "test_dice",
                   ylabel: str = "test Dice"):
    """Table 7: metric against synthetic images per real one; mean and 95% CI over seeds.
    The real-only model's mean is a dashed line and its 95% CI two dotted lines (not a
    shaded band, which would tint the whole panel when the interval is wide)."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    s = summary.sort_values("multiple")
    ax.errorbar(s["multiple"], s[f"{metric}_mean"], yerr=s[f"{metric}_ci95"].fillna(0), fmt="o-",
                capsize=3, label="U-Net + DiffAug: mean, 95% CI")
    if base is not None:
        m, c = base[f"{metric}_mean"], base[f"{metric}_ci95"]
        ax.axhline(m, color="0.3", ls="--", label="U-Net, real frames only: mean")
        if np.isfinite(c):
            for k, v in enumerate((m - c, m + c)):
                ax.axhline(v, color="0.45", ls=":", lw=1, label="its 95% CI" if k == 0 else None)
    ax.set_xscale("log", base=2)
    ax.set_xticks(s["multiple"])
    ax.set_xticklabels([f"{v:g}x" for v in s["multiple"]])
    ax.set_xlabel("synthetic images per real training frame")
    n = sorted(set(summary["seeds"].astype(int))) if "seeds" in summary else []
    ax.set_ylabel(f"{ylabel} (over {', '.join(map(str, n))} seeds)" if n else ylabel)
    ax.legend(fontsize=7, loc="lower left", framealpha=0.9)
    fig.tight_layout()
    return fig


def prompt_following(pairs: pd.DataFrame):
    """Paired prompt variants: judge's predicted area (small vs large) and region redness
    (pale vs reddish), one line per sample."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    for ax, (a, b, col, lab) in zip(axes, (("small", "large", "area", "predicted area near the mask\n(fraction of the frame)"),
                                           ("pale", "reddish", "redness", "red - green contrast to the mucosa"))):
        va, vb = pairs[f"{col}_{a}"], pairs[f"{col}_{b}"]
        for x0, x1 in zip(va, vb):
            ax.plot([0, 1], [x0, x1], color="0.7", lw=0.7)
        ax.plot([0, 1], [va.median(), vb.median()], color="tab:red", lw=2, marker="o", label="median")
        ax.set_xticks([0, 1])
        ax.set_xticklabels([f'"{a}"', f'"{b}"'])
        ax.set_xlim(-0.3, 1.3)
        ax.set_ylabel(lab)
        ax.legend(fontsize=8)
    fig.suptitle("Same frame, mask and noise; one word of the prompt changed", fontsize=10)
    fig.tight_layout()
    return fig


def throughput(tab: pd.DataFrame):
    """Table 4 as bars on a log axis, each labelled with its images/s and Dice."""
    t = tab[tab.method.str.contains("U-Net|segmenter")]
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.barh(t.method, t.images_per_s, color=sns.color_palette()[:len(t)])
    for y, (v, d) in enumerate(zip(t.images_per_s, t.test_dice)):
        ax.text(v * 1.15, y, f"{v:.1f} images/s, Dice {d:.3f}", va="center", fontsize=8,
                bbox=dict(facecolor="white", edgecolor="none", pad=1))
    ax.set_xscale("log")
    ax.set_xlim(right=float(t.images_per_s.max()) * 30)   # room for the labels
    ax.set_xlabel("test images per second (median of interleaved repetitions, log scale)")
    ax.invert_yaxis()
    fig.tight_layout()
    return fig
