"""Figures of notebook 13 (diffusion loss and Fréchet distance). Every function takes
result tables or arrays and returns a matplotlib Figure (save it with
:func:`mdlib.plots.savefig`)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ...plots import sample_rows

LOSS_COLORS = {"l2": sns.color_palette()[0], "huber": sns.color_palette()[1]}


LOSS_LABELS = {"l2": "L2", "huber": "Huber"}


def fd_by_dim(fd: pd.DataFrame, floor: pd.DataFrame | None = None, diff: pd.DataFrame | None = None):
    """Fréchet distance against feature dimension, one column per (dataset, extractor).
    Top: every seed's distance (small dots) and the mean over seeds (large marker) per
    loss on a log axis (distances are positive; a symmetric interval would not be), the
    real-vs-real floor dashed where given. Bottom (with ``diff``, the paired Huber − L2
    differences of :func:`mdlib.studies.lossfid.study.paired_difference`): the mean paired
    difference over seeds with its 95% t-interval on a linear axis, zero marked."""
    keys = list(dict.fromkeys(zip(fd.dataset, fd.extractor)))
    rows = 2 if diff is not None and len(diff) else 1
    fig, axes = plt.subplots(rows, len(keys), figsize=(4.0 * len(keys), 3.0 * rows + 0.3), squeeze=False,
                             gridspec_kw={"height_ratios": [1.4, 1][:rows]})
    for j, (ds, ex) in enumerate(keys):
        ax = axes[0, j]
        d = fd[(fd.dataset == ds) & (fd.extractor == ex)]
        dims = sorted(d.dim.unique())
        pos = {dm: k for k, dm in enumerate(dims)}
        losses = list(dict.fromkeys(d.loss))
        for k, loss in enumerate(losses):
            r = d[d.loss == loss]
            off = (k - (len(losses) - 1) / 2) * 0.2
            ax.scatter([pos[v] + off for v in r.dim], r.fd, s=10, alpha=0.6, color=LOSS_COLORS.get(loss))
            m = r.groupby("dim").fd.mean()
            ax.scatter([pos[v] + off for v in m.index], m.to_numpy(), s=45, marker="D",
                       color=LOSS_COLORS.get(loss), edgecolor="k", linewidth=0.5,
                       label=f"{LOSS_LABELS.get(loss, loss)} (dots: seeds, diamond: mean)")
        if floor is not None and len(floor):
            f = floor[(floor.dataset == ds) & (floor.extractor == ex)]
            for v in f.itertuples():
                if v.dim in pos:
                    p = pos[v.dim]
                    ax.hlines(v.fd_real_floor, p - 0.35, p + 0.35, colors="0.3", linestyles="--",
                              label="real val vs test (same class mix)" if p == 0 else None)
        names = d.drop_duplicates("dim").sort_values("dim")
        ax.set_xticks(range(len(dims)))
        ax.set_xticklabels([f"{f}\n{dm}" for f, dm in zip(names.feature, names.dim)], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("Fréchet distance to the test split")
        ax.set_title(f"{ds} · {ex}", fontsize=10)
        if rows == 2:
            ax2 = axes[1, j]
            dd = diff[(diff.dataset == ds) & (diff.extractor == ex)].sort_values("dim")
            ax2.errorbar([pos[v] for v in dd.dim], dd.diff_mean, yerr=dd.diff_ci95.fillna(0), fmt="o",
                         capsize=3, color="0.2")
            ax2.axhline(0, color="0.5", lw=0.8)
            ax2.set_xticks(range(len(dims)))
            ax2.set_xticklabels([f"{f}\n{dm}" for f, dm in zip(names.feature, names.dim)], fontsize=8)
            ax2.set_xlim(-0.5, len(dims) - 0.5)
            ax2.set_ylabel("Huber − L2\n(paired, 95% CI)", fontsize=8)
            ax2.set_xlabel("feature (dimension)")
        else:
            ax.set_xlabel("feature (dimension)")
    axes[0, -1].legend(fontsize=6.5)
    fig.tight_layout()
    return fig


def samples_by_loss(real_x, real_y, samples: dict, class_names, per_class: int = 8,
                    seed: int = 0, title: str = ""):
    """Per class: a row of real test images, then one row of samples per loss
    (``samples``: ``{loss: (images, labels)}``)."""
    rows = [("real", real_x, real_y)] + [(LOSS_LABELS.get(k, k), x, y)
                                         for k, (x, y) in samples.items()]
    return sample_rows(rows, class_names, per_class, seed, title)


def denoising_bars(den: pd.DataFrame, diff: pd.DataFrame | None = None, value: str = "mse"):
    """Held-out denoising error. Left: each seed's error per loss, the two losses of one
    seed joined by a line (they are a matched pair: same initialisation, batches and
    noise). Right (with ``diff``): the mean paired difference Huber − L2 per dataset with
    its 95% t-interval, zero marked."""
    datasets = list(dict.fromkeys(den.dataset))
    ncols = 2 if diff is not None and len(diff) else 1
    fig, axes = plt.subplots(1, ncols, figsize=(3.0 + 1.6 * len(datasets) * ncols, 3.1), squeeze=False)
    ax = axes[0, 0]
    losses = list(dict.fromkeys(den.loss))
    for i, ds in enumerate(datasets):
        d = den[den.dataset == ds]
        w = d.pivot_table(index="seed", columns="loss", values=value, aggfunc="first")
        xs = {l: i + (k - (len(losses) - 1) / 2) * 0.3 for k, l in enumerate(losses)}
        for _, r in w.iterrows():
            ax.plot([xs[l] for l in losses], [r[l] for l in losses], color="0.6", lw=0.8, zorder=1)
        for l in losses:
            ax.scatter([xs[l]] * len(w), w[l], color=LOSS_COLORS.get(l), zorder=2, s=22,
                       label=LOSS_LABELS.get(l, l) if i == 0 else None)
    ax.set_xticks(range(len(datasets)))
    ax.set_xticklabels(datasets, fontsize=8)
    ax.set_ylabel(f"validation noise-prediction {value.upper()}\n(one dot per seed; lines pair a seed)", fontsize=8)
    ax.legend(fontsize=7)
    if ncols == 2:
        ax2 = axes[0, 1]
        dd = diff[diff.measure == value] if "measure" in diff else diff
        dd = dd.set_index("dataset").reindex(datasets)
        ax2.errorbar(range(len(datasets)), dd.diff_mean, yerr=dd.diff_ci95.fillna(0), fmt="o", capsize=4,
                     color="0.2")
        ax2.axhline(0, color="0.5", lw=0.8)
        ax2.set_xticks(range(len(datasets)))
        ax2.set_xticklabels(datasets, fontsize=8)
        ax2.set_xlim(-0.5, len(datasets) - 0.5)
        ax2.set_ylabel(f"Huber − L2 {value.upper()}\n(paired over seeds, 95% CI)", fontsize=8)
    fig.tight_layout()
    return fig


def from_csvs(fig_dir) -> list:
    """Remake notebook 13's summary figures (``13_fd_by_dim.png``, ``13_denoising.png``)
    from the result tables in ``fig_dir`` alone (no training, no sampling), so that a
    figure can change without rerunning the study. Returns the paths written."""
    from pathlib import Path

    from ...plots import savefig
    fig_dir = Path(fig_dir)
    read = lambda n: pd.read_csv(fig_dir / n) if (fig_dir / n).is_file() else None  # noqa: E731
    out = []
    fd, floor, diff = read("13_fd.csv"), read("13_fd_floor.csv"), read("13_fd_huber_minus_l2.csv")
    if fd is not None:
        out.append(savefig(fd_by_dim(fd, floor, diff), fig_dir / "13_fd_by_dim.png"))
    den, ddiff = read("13_denoising.csv"), read("13_denoising_huber_minus_l2.csv")
    if den is not None:
        out.append(savefig(denoising_bars(den, ddiff), fig_dir / "13_denoising.png"))
    plt.close("all")
    return out


if __name__ == "__main__":  # python -m mdlib.studies.lossfid.figures figures/cpu
    import sys
    for p in from_csvs(sys.argv[1] if len(sys.argv) > 1 else "figures/cpu"):
        print("wrote", p)
