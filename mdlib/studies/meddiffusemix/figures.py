"""The MedDiffuseMix study's figures (paper Figs. 2-7, t-SNE): each function takes arrays
or result tables and returns a matplotlib Figure (shared helpers: :mod:`mdlib.plots`)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ...plots import hwc, overlay, show_image


def _map_column(fig, axes_col, maps, cmap, vmin, vmax, label, title):
    im = None
    for ax, m in zip(axes_col, maps):
        im = ax.imshow(np.asarray(m), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    axes_col[0].set_title(title, fontsize=8)
    cb = fig.colorbar(im, ax=list(axes_col), orientation="horizontal", fraction=0.04, pad=0.02,
                      aspect=12)
    cb.set_label(label, fontsize=7)
    cb.ax.tick_params(labelsize=6)


def augmentation_grid(columns: dict, row_labels: list[str], title: str = "", maps: dict | None = None):
    """Paper Fig. 3: one row per source image, one column per method. ``columns``:
    name -> images (N,C,H,W) float in [0, 1] (the same N source images in every column,
    e.g. the original ``x1``, its partner ``x2`` and each method's output). ``maps``: extra
    columns drawn as values with a colour bar each: name -> ``(maps (N,H,W), cmap, vmin,
    vmax, colour-bar label)``, e.g. MedDiffuseMix's smoothed mask ``M_s`` and the change
    ``|x_aug - x1|``, which make visible what a subtle augmentation changed."""
    maps = maps or {}
    names = list(columns) + list(maps)
    n = len(row_labels)
    fig, axes = plt.subplots(n, len(names), figsize=(1.45 * len(names), 1.45 * n + (0.5 if maps else 0)),
                             squeeze=False, layout="constrained")
    for j, m in enumerate(columns):
        imgs = hwc(columns[m])
        for i in range(n):
            show_image(axes[i, j], imgs[i])
            if i == 0:
                axes[i, j].set_title(m, fontsize=8)
    for j, (m, (arr, cmap, vmin, vmax, label)) in enumerate(maps.items(), start=len(columns)):
        _map_column(fig, axes[:, j], arr, cmap, vmin, vmax, label, m)
    for i in range(n):
        axes[i, 0].set_ylabel(row_labels[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def mdm_gradcam_figure(x1, cam1, xa, cama, row_labels: list[str], title: str = "", x2=None,
                       mask=None, cam_title: str = "Grad-CAM", p1=None, pa=None, alphas=None):
    """Paper Fig. 7: the original ``x1`` and its Grad-CAM, the partner ``x2`` and the
    smoothed mask ``M_s`` (where mixing may happen; optional), the MedDiffuseMix image and
    its Grad-CAM (for ``x1``'s label), and the change ``|x_aug - x1|``; Grad-CAM overlays on
    the 0-1 scale of one colour bar, the change on a colour bar of its own. ``p1`` / ``pa``:
    the classifier's probability of ``x1``'s label, written over its Grad-CAM panels;
    ``alphas``: the mixing weight of each image, written over the MedDiffuseMix image."""
    x1, xa = hwc(x1), hwc(xa)
    n = len(row_labels)
    heads = ["original x1", cam_title + " (x1)"]
    if x2 is not None:
        heads.append("partner x2")
    if mask is not None:
        heads.append("mask M_s")
    heads += ["MedDiffuseMix", cam_title + " (x_aug)", "|x_aug - x1|"]
    fig, axes = plt.subplots(n, len(heads), figsize=(1.5 * len(heads), 1.5 * n + 0.6), squeeze=False,
                             layout="constrained")
    change = np.abs(xa.astype(float) - x1.astype(float)).mean(-1)
    vmax = max(float(np.quantile(change, 0.995)), 1e-3)
    for i in range(n):
        j = 0
        show_image(axes[i, j], x1[i]); j += 1
        overlay(axes[i, j], x1[i], np.asarray(cam1[i]))
        if p1 is not None:
            axes[i, j].set_xlabel(f"p(y) = {float(p1[i]):.2f}", fontsize=6.5, labelpad=1)
        j += 1
        if x2 is not None:
            show_image(axes[i, j], hwc(x2)[i]); j += 1
        if mask is not None:
            axes[i, j].imshow(np.asarray(mask[i]), cmap="magma", vmin=0, vmax=1)
            axes[i, j].set_xticks([]); axes[i, j].set_yticks([]); j += 1
        show_image(axes[i, j], xa[i])
        if alphas is not None:
            axes[i, j].set_xlabel(f"α = {float(alphas[i]):.2f}", fontsize=6.5, labelpad=1)
        j += 1
        overlay(axes[i, j], xa[i], np.asarray(cama[i]))
        if pa is not None:
            axes[i, j].set_xlabel(f"p(y) = {float(pa[i]):.2f}", fontsize=6.5, labelpad=1)
        j += 1
        axes[i, j].imshow(change[i], cmap="viridis", vmin=0, vmax=vmax)
        axes[i, j].set_xticks([]); axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(row_labels[i], fontsize=7)
    for j, h in enumerate(heads):
        axes[0, j].set_title(h, fontsize=7.5)
    def bar(cmap, vmax, col, label):
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, vmax))
        cb = fig.colorbar(sm, ax=axes[-1, col], orientation="horizontal", fraction=0.05, pad=0.02,
                          aspect=8)
        cb.set_label(label, fontsize=6.5)
        cb.ax.tick_params(labelsize=6)

    bar("jet", 1, 1, "Grad-CAM (per-image 0-1)")
    bar("jet", 1, len(heads) - 2, "Grad-CAM (per-image 0-1)")
    bar("viridis", vmax, len(heads) - 1, "|x_aug - x1| (intensity)")
    if mask is not None:
        bar("magma", 1, heads.index("mask M_s"), "M_s")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def alpha_hist(records: dict):
    """MedDiffuseMix: distribution of the initial and final alpha per dataset."""
    fig, axes = plt.subplots(1, len(records), figsize=(3.4 * len(records), 2.6), squeeze=False)
    for ax, (name, rec) in zip(axes[0], records.items()):
        bins = np.linspace(0, max(0.85, float(rec["alpha_initial"].max()) + 0.05), 30)
        ax.hist(rec["alpha_initial"], bins=bins, alpha=0.6, label="adaptive alpha (Eq. 6)")
        ax.hist(rec["alpha"], bins=bins, alpha=0.6, label="after the preservation check")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("alpha")
    axes[0, 0].set_ylabel("images")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


METHOD_LABELS = {"no_aug": "No Aug", "standard_aug": "Standard Aug", "mixup": "Mixup",
                 "saliencymix": "SaliencyMix", "genmix": "GenMix", "dba": "DBA",
                 "meddiffusemix": "MedDiffuseMix"}


def gain_bars(summary: pd.DataFrame, tests: pd.DataFrame, base: str = "no_aug",
              method: str = "meddiffusemix", metric: str = "test_acc", cell: str = "cell"):
    """Paper Fig. 2, with the statistics a reader needs: left, ``base`` vs ``method`` per
    cell (dataset, backbone, image size; ``summary`` has a ``cell`` column), bars = mean
    over seeds, error bars = standard deviation over seeds, the number of matched seeds
    under each cell; right, the paired difference ``method - base`` over matched seeds with
    its 95% t-interval (``tests``: rows of :func:`mdlib.runs.results.compare_methods` with
    the same ``cell`` column), and the smallest difference those seeds could detect at 80%
    power (grey ticks at +-MDE). The average difference is in the title."""
    s = summary[summary.method.isin([base, method])]
    # only the cells where both methods ran (a cell missing one has nothing to compare)
    both = s.groupby(cell).method.nunique()
    s = s[s[cell].isin(both.index[both == 2])]
    cells = list(dict.fromkeys(s[cell]))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(max(7.5, 2.3 * len(cells) + 3), 3.4),
                                  gridspec_kw={"width_ratios": [1.6, 1]})
    w = 0.38
    for i, c in enumerate(cells):
        g = s[s[cell] == c].set_index("method")
        for j, meth in enumerate((base, method)):
            if meth in g.index:
                ax.bar(i + (j - 0.5) * w, g.loc[meth, f"{metric}_mean"], w,
                       yerr=g.loc[meth, f"{metric}_std"], capsize=3,
                       color=("#9aa5b1", "#c0392b")[j],
                       label=METHOD_LABELS.get(meth, meth) if i == 0 else None)
    t = tests.set_index(cell) if len(tests) else tests
    labels = []
    for c in cells:
        n = int(t.loc[c, "n_pairs"]) if len(t) and c in t.index else 0
        labels.append(f"{c}".replace(" · ", "\n") + f"\n(n = {n} seeds)")
    ax.set_xticks(range(len(cells)))
    ax.set_xticklabels(labels, fontsize=7)
    lo = float(np.nanmin(s[f"{metric}_mean"] - s[f"{metric}_std"].fillna(0))) if len(s) else 0
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_ylabel(metric.replace("test_", "test ") + " (mean ± std over seeds)", fontsize=8)
    ax.legend(fontsize=7, loc="best")
    diffs = []
    for i, c in enumerate(cells):
        if not len(t) or c not in t.index:
            continue
        r = t.loc[c]
        diffs.append(r["diff"])
        ax2.errorbar(r["diff"], i, xerr=r["diff_ci95"] if np.isfinite(r["diff_ci95"]) else None,
                     fmt="o", color="#c0392b", capsize=3)
        if np.isfinite(r.get("mde_80", np.nan)):
            ax2.plot([-r["mde_80"], r["mde_80"]], [i, i], "|", color="0.45", ms=10, mew=1.5)
    ax2.axvline(0, color="0.3", lw=0.8)
    ax2.set_yticks(range(len(cells)))
    ax2.set_yticklabels(cells, fontsize=7)
    ax2.set_ylim(len(cells) - 0.5, -0.5)
    ax2.set_xlabel(f"{METHOD_LABELS.get(method, method)} − {METHOD_LABELS.get(base, base)}\n"
                   "(paired over seeds, 95% CI; grey: ±MDE at 80% power)", fontsize=7.5)
    avg = f"average difference {np.mean(diffs):+.3f}" if diffs else "no pairs"
    fig.suptitle(f"{METHOD_LABELS.get(base, base)} vs {METHOD_LABELS.get(method, method)} ({avg})",
                 fontsize=9)
    fig.tight_layout()
    return fig


def ablation_bars(summary: pd.DataFrame, order: list[str], metric: str = "test_acc",
                  reference: pd.DataFrame | None = None, tests: pd.DataFrame | None = None):
    """Paper Fig. 4: per dataset, full MedDiffuseMix and each component removed, bars =
    mean, error bars = std over seeds (the seed count under each bar); a dashed line per
    dataset for the No-Aug reference if given. With ``tests`` (each variant against the
    full method on matched seeds: columns dataset, variant, diff, diff_ci95, p_holm), a
    second row shows the paired differences with their 95% t-intervals."""
    ds = list(dict.fromkeys(summary["dataset"]))
    rows = 2 if tests is not None and len(tests) else 1
    fig, axes = plt.subplots(rows, len(ds), figsize=(3.6 * len(ds), 3.2 * rows + 0.4), squeeze=False,
                             gridspec_kw={"height_ratios": [1.3, 1][:rows]})
    pal = sns.color_palette("deep", len(order))
    for j, d in enumerate(ds):
        ax = axes[0, j]
        g = summary[summary.dataset == d].set_index("variant")
        vals = [g.loc[v, f"{metric}_mean"] if v in g.index else np.nan for v in order]
        errs = [g.loc[v, f"{metric}_std"] if v in g.index else np.nan for v in order]
        ns = [int(g.loc[v, "seeds"]) if v in g.index else 0 for v in order]
        ax.bar(range(len(order)), vals, yerr=np.nan_to_num(errs), color=pal, capsize=3)
        if reference is not None and d in set(reference["dataset"]):
            r = float(reference.loc[reference.dataset == d, f"{metric}_mean"].iloc[0])
            ax.axhline(r, ls="--", c="k", lw=1, label="No Aug (mean)")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([f"{v}\n(n={n})" for v, n in zip(order, ns)], rotation=35, ha="right", fontsize=6.5)
        finite = [v for v in vals if np.isfinite(v)]
        if finite:
            ax.set_ylim(max(0.0, min(finite) - 0.1), min(1.02, max(finite) + 0.06))
        ax.set_title(d, fontsize=9)
        if rows == 2:
            ax2 = axes[1, j]
            t = tests[tests.dataset == d].set_index("variant")
            vs = [v for v in order if v != "full"]
            ax2.errorbar(range(len(vs)), [t.loc[v, "diff"] if v in t.index else np.nan for v in vs],
                         yerr=[t.loc[v, "diff_ci95"] if v in t.index else 0 for v in vs], fmt="o",
                         capsize=3, color="0.2")
            for k, v in enumerate(vs):
                if v in t.index and np.isfinite(t.loc[v, "p_holm"]) and t.loc[v, "p_holm"] < 0.05:
                    ax2.annotate("*", (k, t.loc[v, "diff"]), xytext=(4, 4), textcoords="offset points")
            ax2.axhline(0, color="0.5", lw=0.8)
            ax2.set_xticks(range(len(vs)))
            ax2.set_xticklabels(vs, rotation=35, ha="right", fontsize=6.5)
            ax2.set_xlim(-0.5, len(vs) - 0.5)
    axes[0, 0].set_ylabel(metric.replace("test_", "test ") + "\n(mean ± std over seeds)", fontsize=8)
    if rows == 2:
        axes[1, 0].set_ylabel("variant − full\n(matched seeds, 95% CI;\n* Holm p < 0.05)", fontsize=8)
    fig.tight_layout()
    return fig


def sensitivity_panels(curves: dict, heat: pd.DataFrame | None, metric: str, defaults: dict,
                       stable: dict, heat_default: tuple | None = None):
    """Paper Fig. 5. One line panel per swept scalar (``curves``: name -> DataFrame with
    columns value, dataset, mean, std, count): error bars (std over seeds) only where a
    value has more than one seed, the default dotted, and each dataset's stable range
    (``stable``: (name, dataset) -> (lo, hi)) drawn as a bar in its colour under the
    curves (a single value as a diamond), so that ranges neither overlap nor vanish. Then
    one tau_h x tau_b heatmap per dataset (``heat``: dataset, tau_h, tau_b, mean) of the
    metric minus its value at the default pair (``heat_default``), on ONE diverging colour
    scale shared by the datasets, with its colour bar and every cell annotated."""
    ds = sorted({d for c in curves.values() for d in c["dataset"]})
    n_heat = len(ds) if heat is not None and len(heat) else 0
    ncols = len(curves) + n_heat
    fig, axes = plt.subplots(1, ncols, figsize=(3.4 * ncols + (0.6 if n_heat else 0), 3.3), squeeze=False,
                             layout="constrained")
    pal = dict(zip(ds, sns.color_palette("deep", len(ds))))
    for ax, (name, c) in zip(axes[0], curves.items()):
        lo_y = float(c["mean"].min()) if len(c) else 0.0
        span = max(float(c["mean"].max()) - lo_y, 0.02) if len(c) else 0.1
        for k, (d, g) in enumerate(c.groupby("dataset")):
            g = g.sort_values("value")
            multi = g["count"] > 1 if "count" in g else pd.Series(False, index=g.index)
            ax.plot(g["value"], g["mean"], marker="o", ms=3.5, color=pal[d], label=d)
            if multi.any():
                ax.errorbar(g["value"][multi], g["mean"][multi], yerr=g["std"][multi], fmt="none",
                            capsize=2, color=pal[d])
            if (name, d) in stable:
                lo, hi = stable[name, d]
                y = lo_y - (0.12 + 0.07 * k) * span
                if hi > lo:
                    ax.plot([lo, hi], [y, y], color=pal[d], lw=4, solid_capstyle="butt")
                else:
                    ax.plot([lo], [y], marker="D", ms=5, color=pal[d])
        if name in defaults:
            ax.axvline(defaults[name], ls=":", c="k", lw=1)
        ax.set_xlabel(name)
        ax.set_title(f"{name}: lines = {metric}\nbars below = stable range; dotted = default", fontsize=8)
    axes[0, 0].set_ylabel(metric + (" (one seed: no error bars)" if all(
        (c.get("count", pd.Series([1])) <= 1).all() for c in curves.values()) else " (error bars: std over seeds)"),
        fontsize=8)
    axes[0, 0].legend(fontsize=7)
    if n_heat:
        h_all = []
        for d in ds[:n_heat]:
            h = heat[heat.dataset == d].pivot(index="tau_h", columns="tau_b", values="mean")
            ref = h.loc[heat_default[0], heat_default[1]] if heat_default is not None and \
                heat_default[0] in h.index and heat_default[1] in h.columns else np.nan
            h_all.append((d, h - ref if np.isfinite(ref) else h, np.isfinite(ref)))
        vmax = max(float(np.nanmax(np.abs(h.to_numpy()))) for _, h, _ in h_all) or 0.01
        for k, (d, h, rel) in enumerate(h_all):
            ax = axes[0, len(curves) + k]
            im = ax.imshow(h.to_numpy(), cmap="RdBu", vmin=-vmax, vmax=vmax, origin="lower")
            for i in range(h.shape[0]):
                for j in range(h.shape[1]):
                    v = h.to_numpy()[i, j]
                    ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:+.3f}", ha="center", va="center", fontsize=7)
            ax.set_xticks(range(h.shape[1]), [f"{v:g}" for v in h.columns])
            ax.set_yticks(range(h.shape[0]), [f"{v:g}" for v in h.index])
            ax.set_xlabel("tau_b")
            ax.set_ylabel("tau_h")
            ax.grid(False)
            ax.set_title(f"{d}", fontsize=8)
        cb = fig.colorbar(im, ax=list(axes[0, len(curves):]), fraction=0.03, pad=0.02)
        cb.set_label(f"{metric} − value at default (tau_h, tau_b) = {heat_default}", fontsize=7)
    return fig


_OK, _BAD = "#1a7f37", "#b42318"
_HEAD = dict(fontsize=8.5, fontweight="bold")


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
            img = hwc(c["img"])
            if c.get("cam") is not None:
                overlay(ax, img, c["cam"], alpha=cam_alpha)
            else:
                show_image(ax, img)
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

