"""Figures of notebook 12 (training on generated images). Every function takes result tables or arrays and returns a matplotlib
Figure (save it with :func:`mdlib.plots.savefig`)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ...plots import hwc, overlay, show_image

METRIC_LABELS = {"test_acc": "test accuracy", "test_auc": "test AUC", "test_f1": "test F1"}
REGIME_COLORS = {"real": "0.35", "synthetic": sns.color_palette()[3],
                 "real+synthetic": sns.color_palette()[0]}
REGIME_LABELS = {"real": "real only", "synthetic": "synthetic only",
                 "real+synthetic": "real + synthetic"}


def size_sweep(summary: pd.DataFrame, model: str, metrics=("test_acc", "test_auc"),
               datasets=None, majority: dict | None = None):
    """Accuracy / AUC against the synthetic-set size (multiples of the real training
    split), one line per training regime, 95% CI over seeds as error bars; real-only
    training (no synthetic images) as a horizontal line with its CI band;
    ``majority`` (dataset -> accuracy of always predicting the test split's most frequent
    class) dotted on the accuracy panels."""
    s = summary[summary.model == model]
    datasets = list(datasets or s.dataset.unique())
    fig, axes = plt.subplots(len(metrics), len(datasets), squeeze=False,
                             figsize=(4.2 * len(datasets), 3.0 * len(metrics)))
    for j, ds in enumerate(datasets):
        d = s[s.dataset == ds]
        mults = sorted(d[d.regime != "real"].multiple.unique())
        for i, m in enumerate(metrics):
            ax = axes[i, j]
            real = d[d.regime == "real"]
            if len(real):
                mu, ci = float(real[f"{m}_mean"].iloc[0]), float(real[f"{m}_ci95"].iloc[0])
                ax.axhline(mu, color=REGIME_COLORS["real"], ls="--", lw=1.2,
                           label=f"{REGIME_LABELS['real']} (n={int(real.seeds.iloc[0])} seeds)")
                if np.isfinite(ci):
                    ax.axhspan(mu - ci, mu + ci, color=REGIME_COLORS["real"], alpha=0.12, lw=0)
            if m == "test_acc" and majority and ds in majority:
                ax.axhline(majority[ds], color="0.5", ls=":", lw=1, label="majority class")
            for regime in ("synthetic", "real+synthetic"):
                r = d[d.regime == regime].sort_values("multiple")
                if len(r):
                    ax.errorbar(r.multiple, r[f"{m}_mean"], yerr=r[f"{m}_ci95"].fillna(0),
                                marker="o", ms=4, capsize=3, color=REGIME_COLORS[regime],
                                label=REGIME_LABELS[regime])
            lo, hi = ax.get_ylim()
            ax.set_ylim(max(lo, 0.0), min(hi, 1.0))
            ax.set_xscale("log")
            ax.set_xticks(mults)
            ax.set_xticklabels([f"{x:g}x" for x in mults])
            ax.minorticks_off()
            ax.set_ylabel(METRIC_LABELS.get(m, m) + "\n(mean, 95% CI over seeds)", fontsize=8)
            if i == len(metrics) - 1:
                ax.set_xlabel("synthetic set size (x real training split)")
            if i == 0:
                ax.set_title(ds, fontsize=10)
    axes[0, -1].legend(fontsize=7, loc="best")
    fig.suptitle(f"Training on generated images: {model}, mean and 95% CI over seeds", y=1.0)
    fig.tight_layout()
    return fig


def regime_bars(summary: pd.DataFrame, multiple: float, metric: str = "test_acc",
                model_labels: dict | None = None, majority: dict | None = None,
                tests: pd.DataFrame | None = None):
    """Per dataset: one group of bars per backbone (real only, synthetic only, real +
    synthetic at ``multiple``), bars = mean, error bars = 95% CI over seeds; ``majority``
    (dataset -> accuracy of the most frequent test class) dotted on accuracy panels. With
    ``tests`` (paired tests against real-only training: columns dataset, model, regime,
    multiple, metric, diff, diff_ci95), a second row shows each regime's paired difference
    to real-only training with its 95% t-interval."""
    s = summary[(summary.regime == "real") | (summary.multiple == multiple)]
    datasets = list(s.dataset.unique())
    models = list(dict.fromkeys(s.model))
    regimes = ["real", "synthetic", "real+synthetic"]
    rows = 2 if tests is not None and len(tests) else 1
    fig, axes = plt.subplots(rows, len(datasets), figsize=(4.4 * len(datasets), 3.2 * rows), squeeze=False,
                             gridspec_kw={"height_ratios": [1.3, 1][:rows]})
    w = 0.8 / len(regimes)
    for j, ds in enumerate(datasets):
        ax = axes[0, j]
        d = s[s.dataset == ds]
        for k, regime in enumerate(regimes):
            vals = [d[(d.model == m) & (d.regime == regime)] for m in models]
            mu = [float(v[f"{metric}_mean"].iloc[0]) if len(v) else np.nan for v in vals]
            ci = [float(v[f"{metric}_ci95"].iloc[0]) if len(v) else np.nan for v in vals]
            x = np.arange(len(models)) + (k - (len(regimes) - 1) / 2) * w
            ax.bar(x, mu, w, yerr=np.nan_to_num(ci), capsize=2, color=REGIME_COLORS[regime],
                   label=REGIME_LABELS[regime] + ("" if regime == "real" else f" ({multiple:g}x)"))
        if metric == "test_acc" and majority and ds in majority:
            ax.axhline(majority[ds], color="0.3", ls=":", lw=1.2, label="majority class")
        ax.set_xticks(np.arange(len(models)))
        ax.set_xticklabels([(model_labels or {}).get(m, m) for m in models], fontsize=8)
        lo = np.nanmin(d[f"{metric}_mean"]) if len(d) else 0
        ax.set_ylim(max(0.0, lo - 0.15), 1.0)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric) + "\n(mean, 95% CI over seeds)", fontsize=8)
        ax.set_title(ds, fontsize=10)
        if rows == 2:
            ax2 = axes[1, j]
            t = tests[(tests.dataset == ds) & (tests.metric == metric) & np.isclose(tests.multiple, multiple)]
            for k, regime in enumerate(regimes[1:], start=1):
                tr = t[t.regime == regime].set_index("model").reindex(models)
                x = np.arange(len(models)) + (k - (len(regimes) - 1) / 2) * w
                ax2.errorbar(x, tr["diff"], yerr=tr["diff_ci95"].fillna(0), fmt="o", capsize=3,
                             color=REGIME_COLORS[regime])
            ax2.axhline(0, color="0.4", lw=0.8)
            ax2.set_xticks(np.arange(len(models)))
            ax2.set_xticklabels([(model_labels or {}).get(m, m) for m in models], fontsize=8)
            ax2.set_xlim(-0.5, len(models) - 0.5)
            ax2.set_ylabel("regime − real only\n(paired over seeds, 95% CI)", fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _signed(ax, img, m, title=None):
    """Image with a signed attribution map on top (red: for the class, blue: against)."""
    show_image(ax, img, title)
    v = float(np.abs(m).max()) or 1.0
    ax.imshow(m, cmap="bwr", vmin=-v, vmax=v, alpha=0.5, interpolation="nearest")


def explanation_grid(images, labels, class_names, expl: dict, title: str = ""):
    """One row per real test image: the image, then Grad-CAM and LIME of each model in
    ``expl`` (``{label: {"gradcam", "lime", "prob"}}``); the probability each model gives
    the true class above its Grad-CAM panel."""
    images = hwc(images)
    names = list(expl)
    cols = 1 + 2 * len(names)
    n = len(images)
    fig, axes = plt.subplots(n, cols, figsize=(1.55 * cols, 1.6 * n), squeeze=False)
    for i in range(n):
        show_image(axes[i, 0], images[i])
        axes[i, 0].set_ylabel(class_names[int(labels[i])], fontsize=8)
        for j, name in enumerate(names):
            e = expl[name]
            overlay(axes[i, 1 + j], images[i], e["gradcam"][i],
                    f"p={e['prob'][i]:.2f}")
            _signed(axes[i, 1 + len(names) + j], images[i], e["lime"][i])
            axes[i, 1 + j].title.set_fontsize(7)
    for j, name in enumerate(names):
        axes[0, 1 + j].set_title(f"Grad-CAM\n{name}\np={expl[name]['prob'][0]:.2f}", fontsize=7)
        axes[0, 1 + len(names) + j].set_title(f"LIME\n{name}", fontsize=7)
    axes[0, 0].set_title("real test image", fontsize=7)
    if title:
        fig.suptitle(title, y=1.0)
    fig.tight_layout()
    fig.subplots_adjust(bottom=0.09)
    import matplotlib as mpl
    for cmap, norm, cols_, label in (
            ("jet", mpl.colors.Normalize(0, 1), range(1, 1 + len(names)), "Grad-CAM (per-image 0-1)"),
            ("bwr", mpl.colors.Normalize(-1, 1), range(1 + len(names), cols), "LIME weight / max |weight| (red: for the true class)")):
        cols_ = list(cols_)
        l = axes[-1, cols_[0]].get_position()
        r = axes[-1, cols_[-1]].get_position()
        cax = fig.add_axes([l.x0, 0.035, r.x1 - l.x0, 0.012])
        cb = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation="horizontal")
        cb.set_label(label, fontsize=6.5)
        cb.ax.tick_params(labelsize=6)
    return fig


