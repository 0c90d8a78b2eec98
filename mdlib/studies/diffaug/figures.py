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
    for ax in axes[0]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def training_panels(hist: dict, val_label: str = "validation Dice"):
    """Training curves of several models: their validation Dice on one shared axis, and each
    model's training loss on its own axis (the losses differ in kind and scale)."""
    names = list(hist)
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(4.0 * (1 + len(names)), 3), squeeze=False)
    ax = axes[0, 0]
    for k, (name, h) in enumerate(hist.items()):
        if "val_dice" in h:
            v = h.dropna(subset=["val_dice"])
            ax.plot(v["step"], v["val_dice"], marker=".", lw=1, color=f"C{k}", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(val_label)
    ax.legend(fontsize=7)
    for k, (name, h) in enumerate(hist.items()):
        a = axes[0, k + 1]
        if "train_loss" in h:
            t = h.dropna(subset=["train_loss"])
            a.plot(t["step"], t["train_loss"], lw=1, color=f"C{k}")
        a.set_xlabel("step")
        a.set_ylabel("training loss")
        a.set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


def gate_iou_hist(iou_single, theta: float, iou_iter=None, theta_iter: float | None = None,
                  iou_real_val=None):
    """Histograms of the gate's IoU on generated samples, single-step and (where scored:
    the first parts of the plan) iterative, each with its acceptance threshold, and, when
    given, the single-step gate's IoU on the real validation frames (whose median is theta
    under the ``val_median`` rule) as a black outline. Densities (each histogram has area
    1): the sets differ in size, so counts would not compare."""
    fig, ax = plt.subplots(figsize=(5.8, 3.3))
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
    if iou_real_val is not None and len(iou_real_val):
        ax.hist(iou_real_val, bins=bins, density=True, histtype="step", color="k", lw=1.2,
                label=f"single step on real validation frames (n={len(iou_real_val)})")
    ax.set_xlabel("gate IoU (predicted vs intended / true mask)")
    ax.set_ylabel("density (area 1 per histogram)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gallery(real_x, real_m, acc: list, rej: list, ncol: int = 6,
            real_title: str = "real training frames", theta: float | None = None):
    """Fig. 2: a row of real training frames, rows of accepted and rejected samples; each
    with its intended (or true) mask as a thin dashed outline, so that the blend edge stays
    visible, and under it the gate's IoU and the prompt. The caller passes the first
    samples of each kind in plan order (the title says so: nothing is hand-picked)."""
    import textwrap
    rows = [(real_title, [(x, m, "") for x, m in zip(real_x[:ncol], real_m[:ncol])])]
    rows.append(("accepted" + (f"\n(IoU > {theta:.3f})" if theta is not None else ""), acc[:ncol]))
    rows.append(("rejected" + (f"\n(IoU ≤ {theta:.3f})" if theta is not None else ""), rej[:ncol]))
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.3 * ncol, 2.95 * len(rows)), squeeze=False)
    for i, (name, items) in enumerate(rows):
        for j in range(ncol):
            ax = axes[i, j]
            if j >= len(items):
                ax.axis("off")
                continue
            x, m, cap = items[j]
            show_image(ax, x)
            if np.asarray(m).any():
                ax.contour(np.asarray(m, float), levels=[0.5], colors=["lime"], linewidths=0.8,
                           linestyles="--")
            if cap:
                ax.text(0.5, -0.03, "\n".join(textwrap.wrap(cap, 36)), transform=ax.transAxes,
                        ha="center", va="top", fontsize=6)
        axes[i, 0].set_ylabel(name, fontsize=9)
    fig.suptitle("Fig. 2: generated polyps (dashed: intended mask) with their gate IoU and "
                 "prompt, beside real frames; the first of each kind in plan order, not "
                 "selected", fontsize=10)
    fig.tight_layout(h_pad=2.2)
    return fig


def seeds_plot(df: pd.DataFrame, order: list, metric: str = "test_dice", ylabel: str = "test Dice"):
    """Table 2 per seed: each arm's seeds as dots (one colour per seed), its mean as a black
    bar with ± 1 std; the same seed's runs without and with synthetic data joined by a thin
    line (``order`` lists each pair as neighbours), which is what the paired test compares."""
    d = df[df.label.isin(order)]
    seeds = sorted(d.seed.unique())
    colors = dict(zip(seeds, sns.color_palette("tab10", len(seeds))))
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(order), 3.8))
    for i, lab in enumerate(order):
        v = d[d.label == lab].set_index("seed")[metric]
        ax.errorbar([i], [v.mean()], yerr=[v.std(ddof=1)] if len(v) > 1 else None, fmt="_",
                    ms=18, mew=2, color="k", capsize=4, zorder=3)
        for sd, y in v.items():
            ax.plot(i, y, "o", ms=5, color=colors[sd], zorder=4,
                    label=f"seed {sd}" if i == 0 else None)
        if i % 2 == 1:                     # the pair (order[i - 1], order[i]), seed by seed
            w = d[d.label == order[i - 1]].set_index("seed")[metric]
            for sd in v.index.intersection(w.index):
                ax.plot([i - 1, i], [w[sd], v[sd]], color=colors[sd], lw=0.8, alpha=0.6, zorder=2)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=35, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.set_ylabel(ylabel)
    n = d.groupby("label").seed.nunique()
    ax.set_title(f"Table 2: {ylabel} per seed (n = {', '.join(map(str, sorted(set(n))))} seeds; "
                 "black: mean ± 1 std;\nlines: the same seed without and with synthetic data)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def multiples_plot(table7: pd.DataFrame, tests: pd.DataFrame, runs: pd.DataFrame,
                   metric: str = "test_dice", ylabel: str = "Dice"):
    """Table 7 as the paired difference to real-only training, per amount of synthetic data:
    the mean over seeds with the 95% CI of the paired difference (the quantity the t-test
    uses, ``diff_seed_ci95`` of :func:`.analysis.test_family`), each seed's own difference
    as a dot, zero as a line."""
    t7 = table7[table7.multiple > 0].sort_values("multiple")
    base = table7[table7.multiple == 0].label.iloc[0]
    b = runs[runs.label == base].set_index("seed")[metric]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    xs, ms, cis = [], [], []
    for r in t7.itertuples():
        t = tests[(tests.a == r.label) & (tests.b == base) & (tests.metric == metric)]
        v = runs[runs.label == r.label].set_index("seed")[metric]
        dd = (v - b).dropna()
        jit = r.multiple * (1.05 + 0.035 * np.arange(len(dd)))   # seeds side by side
        ax.plot(jit, dd, ".", color="0.35", ms=5, zorder=2, label="one seed" if not xs else None)
        xs.append(r.multiple)
        ms.append(float(t.diff_seed_mean.iloc[0]) if len(t) else dd.mean())
        cis.append(float(t.diff_seed_ci95.iloc[0]) if len(t) else np.nan)
    ax.errorbar(xs, ms, yerr=np.nan_to_num(cis), fmt="o", color="C0", capsize=3, zorder=3,
                label="mean over seeds, 95% CI")
    ax.axhline(0, color="0.3", ls="--", lw=1, label=f"{base}, real frames only")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{v:g}x" for v in xs])
    ax.set_xlabel("synthetic images per real training frame (log scale)")
    ax.set_ylabel(f"Δ test {ylabel} vs real only\n(paired by seed)")
    ax.set_title(f"Table 7: {base} + DiffAug minus {base}, same seeds", fontsize=10)
    fig.tight_layout()
    h, lab = ax.get_legend_handles_labels()
    fig.legend(h, lab, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=7)
    return fig


def prompt_following(pairs: pd.DataFrame):
    """Paired prompt variants (same frame, mask and noise; one word changed): for each
    change, the per-pair difference on both measures (judge's predicted area, region
    redness) as dots with their median and its bootstrap 95% CI, zero as a line; a change
    that works moves its own measure and not the other."""
    rng = np.random.default_rng(0)
    changes = (("small", "large", "size word"), ("pale", "reddish", "colour word"))
    measures = (("area", "predicted area near the mask\n(fraction of the frame)"),
                ("redness", "red - green contrast\nto the mucosa"))
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    for ax, (col, lab) in zip(axes, measures):
        for k, (a, b, name) in enumerate(changes):
            if f"{col}_{a}" not in pairs or f"{col}_{b}" not in pairs:
                continue
            d = (pairs[f"{col}_{b}"] - pairs[f"{col}_{a}"]).dropna().to_numpy(float)
            if not len(d):
                continue
            jit = k + rng.uniform(-0.12, 0.12, len(d))
            ax.plot(jit, d, ".", color="0.55", ms=4, zorder=2)
            med = float(np.median(d))
            boot = np.median(rng.choice(d, size=(2000, len(d))), axis=1)
            lo, hi = np.percentile(boot, [2.5, 97.5])
            ax.errorbar([k + 0.3], [med], yerr=[[med - lo], [hi - med]], fmt="o", color="tab:red",
                        capsize=3, zorder=3, label="median, bootstrap 95% CI" if k == 0 else None)
        ax.axhline(0, color="0.3", ls="--", lw=1)
        ax.set_xticks(range(len(changes)))
        ax.set_xticklabels([f'"{b}" − "{a}"' for a, b, _ in changes])
        ax.set_xlim(-0.5, len(changes) - 0.4)
        ax.set_ylabel(f"Δ {lab}")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"Same frame, mask and noise; one word of the prompt changed (n = {len(pairs)} "
                 "pairs; dots: pairs)", fontsize=10)
    fig.tight_layout()
    return fig


def throughput(tab: pd.DataFrame):
    """Table 4 as dots on a log axis (a bar's length means nothing there), each labelled
    with its images/s and the Dice of the timed model; the conditions in the title."""
    t = tab[tab.method.str.contains("U-Net|segmenter")].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 2.6))
    y = np.arange(len(t))
    ax.hlines(y, t.images_per_s.min() / 3, t.images_per_s, color="0.85", lw=1, zorder=1)
    ax.scatter(t.images_per_s, y, s=60, color=sns.color_palette()[:len(t)], zorder=3)
    for yy, (v, d) in enumerate(zip(t.images_per_s, t.test_dice)):
        ax.text(v * 1.3, yy, f"{v:.1f} images/s, Dice {d:.3f}", va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(t.method)
    ax.set_xscale("log")
    ax.set_xlim(t.images_per_s.min() / 3, float(t.images_per_s.max()) * 12)
    ax.set_ylim(len(t) - 0.4, -0.6)
    ax.set_xlabel("test images per second (median of interleaved repetitions, log scale)")
    r = t.iloc[0]
    ax.set_title(f"Table 4: {int(r.threads)} thread, batch {int(r.batch)}, the same "
                 f"{int(r.images)} test frames; one trained model per row (Dice: whole test split)",
                 fontsize=8)
    fig.tight_layout()
    return fig
