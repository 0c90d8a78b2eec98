"""Figures of notebook 13 (diffusion loss and Fréchet distance). Every function takes
result tables or arrays and returns a matplotlib Figure (save it with
:func:`mdlib.plots.savefig`)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ...plots import sample_rows

LOSS_COLORS = {"l2": sns.color_palette()[0], "huber": sns.color_palette()[1]}


LOSS_LABELS = {"l2": "L2", "huber": "Huber"}


def fd_by_dim(summary: pd.DataFrame, floor: pd.DataFrame | None = None):
    """Fréchet distance against feature dimension, one panel per (dataset, extractor),
    the two losses side by side (``fd_mean`` and ``fd_ci95`` of
    :func:`mdlib.runs.results.summarise`); the real-vs-real floor dashed where given."""
    keys = list(dict.fromkeys(zip(summary.dataset, summary.extractor)))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.0 * len(keys), 3.2), squeeze=False)
    for j, (ds, ex) in enumerate(keys):
        ax = axes[0, j]
        d = summary[(summary.dataset == ds) & (summary.extractor == ex)]
        dims = sorted(d.dim.unique())
        pos = {dm: k for k, dm in enumerate(dims)}
        losses = list(dict.fromkeys(d.loss))
        for k, loss in enumerate(losses):
            r = d[d.loss == loss].sort_values("dim")
            x = np.array([pos[v] for v in r.dim]) + (k - (len(losses) - 1) / 2) * 0.18
            ax.errorbar(x, r["fd_mean"], yerr=r["fd_ci95"].fillna(0), fmt="o", capsize=3, ms=5,
                        color=LOSS_COLORS.get(loss), label=LOSS_LABELS.get(loss, loss))
        if floor is not None and len(floor):
            f = floor[(floor.dataset == ds) & (floor.extractor == ex)]
            for v in f.itertuples():
                if v.dim in pos:
                    p = pos[v.dim]
                    ax.hlines(v.fd_real_floor, p - 0.35, p + 0.35, colors="0.3", linestyles="--",
                              label="real val vs test (same class mix)" if p == 0 else None)
        ax.set_xticks(range(len(dims)))
        names = d.drop_duplicates("dim").sort_values("dim")
        ax.set_xticklabels([f"{f}\n{dm}" for f, dm in zip(names.feature, names.dim)], fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("feature (dimension)")
        ax.set_ylabel("Fréchet distance to the test split")
        ax.set_title(f"{ds} · {ex}", fontsize=10)
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def samples_by_loss(real_x, real_y, samples: dict, class_names, per_class: int = 8,
                    seed: int = 0, title: str = ""):
    """Per class: a row of real test images, then one row of samples per loss
    (``samples``: ``{loss: (images, labels)}``)."""
    rows = [("real", real_x, real_y)] + [(LOSS_LABELS.get(k, k), x, y)
                                         for k, (x, y) in samples.items()]
    return sample_rows(rows, class_names, per_class, seed, title)


def denoising_bars(den: pd.DataFrame, value: str = "mse"):
    """Held-out denoising error per dataset and loss: one dot per seed, mean as a bar."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * den.dataset.nunique(), 3.0))
    sns.barplot(den, x="dataset", y=value, hue="loss", palette=LOSS_COLORS, errorbar=None,
                alpha=0.5, ax=ax)
    sns.stripplot(den, x="dataset", y=value, hue="loss", palette=LOSS_COLORS, dodge=True,
                  jitter=False, legend=False, ax=ax, size=5)
    ax.set_ylabel(f"validation noise-prediction {value.upper()}")
    ax.set_xlabel("")
    fig.tight_layout()
    return fig

