"""Figures of the DiffMIC-v2 study (notebooks 17-18). Every function takes the result
tables of :mod:`.analysis` (or the benchmark's) and returns a matplotlib Figure (save it
with :func:`mdlib.plots.savefig`)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .analysis import METRIC_LABELS
from .study import VARIANT_LABELS

METHOD_COLORS = {"C1": "0.45", "DCG": sns.color_palette()[2], "full": sns.color_palette()[0],
                 "C6": sns.color_palette()[1]}
SHORT = {"C1": "C1 (plain backbone)", "DCG": "DCG alone", "full": "DiffMIC-v2"}


def table2_points(summary: pd.DataFrame, runs: pd.DataFrame, metrics=("test_acc", "test_f1")):
    """Table II as a point plot: per setting, C1, the DCG alone and DiffMIC-v2, each as its
    mean over seeds with the 95% CI over seeds (t interval, ``<metric>_ci95``) and the seeds
    as small dots beside it; on the accuracy panel the MedMNIST v2 ResNet-18 (28 px, full
    training split) reference as a short black line. Points, not bars: the y axis spans the
    data, so a bar's length would mean nothing. With few seeds a t interval can pass the
    metric's range; it is drawn clipped to [0, 1] and the title says so."""
    settings = list(dict.fromkeys(summary.setting))
    methods = ["C1", "DCG", "full"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False)
    w = 0.26
    clipped = False
    for j, m in enumerate(metrics):
        ax = axes[0, j]
        lo, hi = [], []
        for k, meth in enumerate(methods):
            s = summary[summary.method == meth].set_index("setting").reindex(settings)
            x = np.arange(len(settings)) + (k - 1) * w
            ci = s[f"{m}_ci95"].fillna(0).to_numpy(float)
            mean = s[f"{m}_mean"].to_numpy(float)
            a, b = np.clip(mean - ci, 0, 1), np.clip(mean + ci, 0, 1)
            clipped |= bool(np.any((a != mean - ci) | (b != mean + ci)))
            ax.errorbar(x, mean, yerr=[mean - a, b - mean], fmt="o", ms=6, capsize=3, lw=1.4,
                        color=METHOD_COLORS[meth], label=SHORT[meth], zorder=3)
            lo.append(a)
            hi.append(b)
            r = runs[runs.method == meth]
            for i, st in enumerate(settings):
                v = r[r.setting == st][m].to_numpy(float)
                ax.plot(np.full(len(v), x[i] + 0.07), v, ".", ms=4, color="k", alpha=0.55,
                        zorder=2, label="seeds" if (k, i) == (0, 0) else None)
                lo.append(v)
                hi.append(v)
        if m == "test_acc" and "ref_v2_resnet18_28_acc" in summary:
            ref = summary.drop_duplicates("setting").set_index("setting").reindex(settings)
            labelled = False
            for i, v in enumerate(ref["ref_v2_resnet18_28_acc"]):  # NaN: not a 28 px setting
                if np.isfinite(v):
                    ax.hlines(v, i - 1.6 * w, i + 1.6 * w, colors="k", lw=1.5, ls="--",
                              label=None if labelled else "MedMNIST v2 ResNet-18 (28 px)")
                    lo.append([v])
                    hi.append([v])
                    labelled = True
        a, b = np.nanmin(np.concatenate(lo)), np.nanmax(np.concatenate(hi))
        pad = 0.08 * max(b - a, 0.02)
        ax.set_ylim(a - pad, b + pad)
        for i in range(1, len(settings)):
            ax.axvline(i - 0.5, color="0.85", lw=0.6, zorder=0)
        ax.set_xticks(np.arange(len(settings)))
        ax.set_xticklabels(settings, fontsize=8, rotation=15)
        ax.set_ylabel(f"test {METRIC_LABELS.get(m, m)}")
    h, lab = axes[0, 0].get_legend_handles_labels()
    n = sorted(set(summary["seeds"].astype(int))) if "seeds" in summary else []
    fig.suptitle("Table II: mean and 95% CI over seeds"
                 + (f" (n = {', '.join(map(str, n))})" if n else "")
                 + (", clipped to [0, 1]" if clipped else "") + "; dots: the seeds",
                 y=1.02, fontsize=10)
    fig.tight_layout()
    fig.legend(h, lab, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(lab), fontsize=8)
    return fig


def ablation_dots(summary: pd.DataFrame, metrics=("test_acc", "test_f1")):
    """Table IV as a dot plot: per setting, every variant's mean with its 95% CI over
    seeds (horizontal), the full model's mean as a dashed line."""
    settings = list(dict.fromkeys(summary.setting))
    fig, axes = plt.subplots(len(settings), len(metrics), squeeze=False,
                             figsize=(4.4 * len(metrics), 0.35 * summary.method.nunique() * len(settings) + 1.2))
    for i, st in enumerate(settings):
        s = summary[summary.setting == st].reset_index(drop=True)
        y = np.arange(len(s))[::-1]
        for j, m in enumerate(metrics):
            ax = axes[i, j]
            colors = [METHOD_COLORS.get(mm, "0.2") for mm in s.method]
            ax.errorbar(s[f"{m}_mean"], y, xerr=s[f"{m}_ci95"].fillna(0), fmt="none",
                        ecolor="0.5", capsize=2)
            ax.scatter(s[f"{m}_mean"], y, c=colors, s=25, zorder=3)
            full = s[s.method == "full"]
            if len(full):
                ax.axvline(float(full[f"{m}_mean"].iloc[0]), color=METHOD_COLORS["full"], ls="--", lw=1)
            lo = np.nanmin(s[f"{m}_mean"] - s[f"{m}_ci95"].fillna(0))
            hi = np.nanmax(s[f"{m}_mean"] + s[f"{m}_ci95"].fillna(0))
            ax.set_xlim(max(0.0, lo - 0.02), min(1.0, hi + 0.02))
            ax.set_yticks(y)
            ax.set_yticklabels([VARIANT_LABELS.get(mm, mm) for mm in s.method] if j == 0 else [],
                               fontsize=7)
            ax.set_xlabel(f"test {METRIC_LABELS.get(m, m)}")
            ax.set_title(st, fontsize=9)
    fig.suptitle("Table IV: mean and 95% CI over seeds", y=1.0, fontsize=10)
    fig.tight_layout()
    return fig


def convergence_curves(curves: pd.DataFrame, metric_label: str = "validation F1"):
    """Fig. 6: the validation metric against epochs, heterologous (``full``) vs vanilla
    (``C6``) diffusion; mean over seeds, band: ± std over seeds."""
    settings = list(dict.fromkeys(curves.setting))
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.2), squeeze=False)
    for j, st in enumerate(settings):
        ax = axes[0, j]
        for meth, g in curves[curves.setting == st].groupby("method", sort=False):
            a = g.groupby("epoch")["value"].agg(["mean", "std", "count"]).reset_index()
            c = METHOD_COLORS.get(meth)
            n = int(a["count"].max())
            ax.plot(a.epoch, a["mean"], marker="o", ms=3, color=c,
                    label=f"{'heterologous (DiffMIC-v2)' if meth == 'full' else 'vanilla (C6)'}, n={n}")
            ax.fill_between(a.epoch, a["mean"] - a["std"].fillna(0), a["mean"] + a["std"].fillna(0),
                            color=c, alpha=0.15, lw=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric_label)
        ax.set_title(st, fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Fig. 6: convergence, mean ± std over seeds", y=1.02, fontsize=10)
    fig.tight_layout()
    return fig


def sweep_lines(sens: pd.DataFrame, params, labels: dict, metrics=("test_acc", "test_f1"),
                defaults: dict | None = None):
    """Fig. 4 / Table V: validation and test metrics against a swept parameter, mean over
    seeds, error bars: std over seeds (none for a single seed, said in the title); the
    default value dotted."""
    settings = list(dict.fromkeys(sens.setting))
    params = list(params)
    fig, axes = plt.subplots(len(settings) * len(metrics), len(params), squeeze=False,
                             figsize=(3.8 * len(params), 2.7 * len(settings) * len(metrics)))
    for i, st in enumerate(settings):
        for mi, m in enumerate(metrics):
            row = i * len(metrics) + mi
            for j, p in enumerate(params):
                ax = axes[row, j]
                keys = p if isinstance(p, (list, tuple)) else [p]
                for key in keys:
                    d = sens[(sens.setting == st) & (sens.param == key)].sort_values("value")
                    if d.empty:
                        continue
                    for split, ls in (("test", "-"), ("val", ":")):
                        mm = m.replace("test_", f"{split}_")
                        if (d.seeds > 1).any():
                            ax.errorbar(d.value, d[f"{mm}_mean"], yerr=d[f"{mm}_std"].fillna(0),
                                        ls=ls, marker="o", ms=3, capsize=2,
                                        label=f"{labels.get(key, key)}: {split}")
                        else:  # one seed: no spread to show
                            ax.plot(d.value, d[f"{mm}_mean"], ls=ls, marker="o", ms=3,
                                    label=f"{labels.get(key, key)}: {split}")
                    base = (defaults or {}).get(keys[0])
                    if base is not None:
                        ax.axvline(base, color="0.6", ls=":", lw=1)
                ax.set_xlabel(labels.get(keys[0], keys[0]) if len(keys) == 1 else "K")
                ax.set_ylabel(f"{METRIC_LABELS.get(m, m).replace('test ', '')} ({st})")
                ax.legend(fontsize=6)
    n = sorted(set(int(v) for v in sens.seeds))
    what = ("one seed, no error bars" if n == [1] else
            f"mean ± std over {'/'.join(map(str, n))} seeds")
    fig.suptitle(f"{what}; solid: test, dotted: validation; vertical: default",
                 y=1.0, fontsize=9)
    fig.tight_layout()
    return fig


def tsne_grid(embeddings: dict, separations: dict, class_names: dict, steps_total: int):
    """Fig. 5: per setting (rows) the t-SNE of the label maps at reverse-process steps
    (columns; step 0 = y_T), coloured by the true class; titles: silhouette of the true
    labels in the map space."""
    settings = list(embeddings)
    steps = list(dict.fromkeys(embeddings[settings[0]].step))
    fig, axes = plt.subplots(len(settings), len(steps), squeeze=False,
                             figsize=(2.4 * len(steps), 2.5 * len(settings)))
    for i, st in enumerate(settings):
        e, sep = embeddings[st], separations[st].set_index("step")
        names = class_names[st]
        pal = sns.color_palette("tab10", len(names))
        for j, s in enumerate(steps):
            ax = axes[i, j]
            d = e[e.step == s]
            for c, name in enumerate(names):
                dc = d[d.label == c]
                ax.scatter(dc.x, dc.y, s=4, color=pal[c], label=name, alpha=0.7, lw=0)
            ax.set_xticks([])
            ax.set_yticks([])
            tag = "y_T (noise)" if s == 0 else f"after step {s}/{steps_total}"
            ax.set_title(f"{tag}\nsilhouette {sep.loc[s, 'silhouette_features']:.2f}", fontsize=8)
            if j == 0:
                ax.set_ylabel(st, fontsize=9)
        axes[i, -1].legend(fontsize=6, markerscale=2, loc="best")
    fig.suptitle("Fig. 5: t-SNE of the label maps along the DDIM reverse steps (test split)",
                 y=1.0, fontsize=10)
    fig.tight_layout()
    return fig


def cost_bars(table: pd.DataFrame, target: float = 3.0):
    """Table VI: FLOPs and wall time per image relative to the plain backbone, per case
    (DiffMIC-v2 at 10 and 100 DDIM steps), the target as a dashed line; log scale."""
    m = table[(table.row == "method") & ~table.method.str.startswith("plain")]
    cases = list(dict.fromkeys(m.case))
    methods = list(dict.fromkeys(m.method))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    w = 0.8 / len(methods)
    for ax, col, lab in ((axes[0], "flops_ratio_vs_plain", "FLOPs per image / plain backbone"),
                         (axes[1], "time_ratio_vs_plain", "wall time per image / plain backbone")):
        for k, meth in enumerate(methods):
            d = m[m.method == meth].set_index("case").reindex(cases)
            ax.bar(np.arange(len(cases)) + (k - (len(methods) - 1) / 2) * w, d[col], w, label=meth)
        ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}x")
        ax.axhline(1.0, color="0.5", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(cases)))
        ax.set_xticklabels(cases, fontsize=8, rotation=10)
        ax.set_ylabel(lab)
    axes[0].legend(fontsize=7)
    fig.suptitle("Table VI: inference cost per image, batched, relative to the plain backbone",
                 y=1.02, fontsize=10)
    fig.tight_layout()
    return fig
