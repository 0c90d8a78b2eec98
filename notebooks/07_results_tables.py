# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Results tables: Table 2, Table 3, the primary comparison, significance, Fig. 2
#
# Reads the finished classifier runs of the study (`runs/<TASK>/<profile>/`, produced by
# `python -m mdlib.sweep studies/main_<profile>.yaml`, one execution of notebook 06 per
# configuration); it never trains. Only runs with each method's default parameters are
# used here (ablation and sensitivity runs live under their own tasks). A **cell** is a
# dataset, a backbone and an image size.
#
# * **Matched seeds.** Every method has the same seeds in a cell (checked below); every
#   comparison pairs runs by seed, and the number of pairs `n` is shown.
# * **Table 2**: test accuracy, mean ± std over seeds, methods × cells.
# * **Table 3**: precision, recall and F1 **of the disease class** (malignant in
#   BreastMNIST, whose label 1 is normal/benign; pneumonia; malignant = adenocarcinoma +
#   squamous cell carcinoma in LC25000, used as benign vs malignant) and AUC.
# * **The primary hypothesis**, declared before the results: *MedDiffuseMix improves test
#   accuracy over No Aug*, one test per cell (paired t-test over seeds), reported on its
#   own, with the smallest difference the seeds could detect at 80% power (MDE) so that a
#   non-significant result says what it rules out; a Holm adjustment across the primary
#   cells is given as the conservative reading.
# * **Secondary comparisons** (every other method vs No Aug, MedDiffuseMix vs the best
#   baseline chosen per cell on **validation** accuracy): one family per cell,
#   Holm-adjusted.
# * Besides the t-test over seeds, a paired bootstrap over test images of the
#   seed-averaged per-image correctness (the same seeds): a **cluster bootstrap over
#   source tiles** for LC25000, whose test images are rotated / flipped copies of ~150
#   tiles.
# * **Fig. 2**: No Aug vs MedDiffuseMix per cell, and the paired differences.

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
TASK = "study"
TABLE3_MODEL = "small_cnn"
PRIMARY = ("meddiffusemix", "no_aug")  # (method, reference) of the primary hypothesis

# %%
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from scipy import stats
from mdlib import data, paths, plots, profiles
from mdlib.io import write_text
from mdlib.runs import results, tasks
from mdlib.studies.meddiffusemix import figures, study

prof = profiles.load(PROFILE)
out = paths.figures_dir(prof["name"])
runs = study.task_runs(prof, TASK)  # smoke: creates the tiny runs CI needs
runs = study.add_variants(runs, prof)
runs = runs[runs.variant == "default"].copy()
runs["cell"] = study.cell_labels(runs, prof)
order = [m for m in study.ALL_METHODS if m in set(runs.method)]
print(len(runs), "runs;", runs.groupby("cell").size().to_dict())

# %% [markdown]
# ## Matched seeds: every method of a cell has the same seeds

# %%
seed_sets = runs.groupby(["cell", "method"])["seed"].apply(lambda s: tuple(sorted(s))).unstack()
display(seed_sets)
unmatched = [c for c, row in seed_sets.iterrows() if len(set(row.dropna())) > 1]
print("cells with unmatched seeds:", unmatched or "none")

# %% [markdown]
# ## One machine per cell
#
# A configuration gives bit-identical numbers on one machine, but another CPU (other
# kernels) or torch version rounds differently and the training runs drift apart, so the
# paired comparisons of a cell should come from runs of one machine (`machine`: CPU model
# and kernel instruction set, or GPU, and torch version, from each run's
# `environment.json`).

# %%
machines = runs.groupby("cell")["machine"].agg(lambda s: sorted(set(s.fillna("unknown"))))
display(machines.to_frame("machines"))
mixed = [c for c, m in machines.items() if len(m) > 1]
if mixed:
    print("WARNING: cells whose runs come from more than one machine:", mixed)

# %% [markdown]
# ## Table 2: test accuracy (mean ± std over seeds)

# %%
by = ["cell", "dataset", "image_size", "model", "method"]
summary = results.summarise(runs, by=by)
summary.to_csv(out / "07_summary.csv", index=False)
t2 = summary.assign(value=[results.fmt_mean_std(m, s) for m, s in zip(summary.test_acc_mean, summary.test_acc_std)])
cells = list(dict.fromkeys(runs.sort_values(["model", "image_size", "dataset"]).cell))
table2 = t2.pivot_table(index="method", columns="cell", values="value", aggfunc="first").reindex(index=order, columns=cells)
table2.index = [figures.METHOD_LABELS.get(m, m) for m in table2.index]
table2.loc["seeds (n)"] = [str(int(summary[summary.cell == c].seeds.max())) for c in cells]
table2.index.name = "method"
table2.to_csv(out / "07_table2_accuracy.csv")
md2 = table2.to_markdown()
write_text(out / "07_table2_accuracy.md", md2 + "\n")
display(Markdown(md2))

# %% [markdown]
# ## Table 3: precision, recall, F1 of the disease class, and AUC, for one backbone

# %%
s3 = summary[summary.model == TABLE3_MODEL]
rows = []
for _, r in s3.iterrows():
    spec = data.spec(r.dataset)
    pos = getattr(spec, "positive_class", None)
    row = {"cell": r.cell, "disease class": spec.class_names[pos] if pos is not None else "macro",
           "method": figures.METHOD_LABELS.get(r.method, r.method), "seeds": int(r.seeds)}
    for m in ("precision", "recall", "f1", "auc"):
        row[m.upper() if m == "auc" else m.capitalize()] = results.fmt_mean_std(r[f"test_{m}_mean"], r[f"test_{m}_std"])
    rows.append(row)
table3 = pd.DataFrame(rows)
table3["_o"] = [list(figures.METHOD_LABELS.values()).index(m) for m in table3.method]
table3["_c"] = [cells.index(c) for c in table3.cell]
table3 = table3.sort_values(["_c", "_o"]).drop(columns=["_o", "_c"])
table3.to_csv(out / "07_table3_metrics.csv", index=False)
md3 = table3.to_markdown(index=False)
write_text(out / "07_table3_metrics.md", md3 + "\n")
display(Markdown(md3))

# %% [markdown]
# ## The primary comparison and the secondary family
#
# `diff`: mean paired difference over the matched seeds (method − reference) with its 95%
# t-interval half-width `diff_ci95`; `t_p`: paired t-test; `mde_80`: smallest difference
# detectable at 80% power from the observed spread of the paired differences; `img_*`:
# paired (cluster) bootstrap over test images; `p_holm`: Holm within the family named in
# `family` (primary: across the primary cells; secondary: within each cell).

# %%
groups = {}
for name in runs.dataset.unique():
    ds = data.load_dataset(name, prof["image_size"])
    if ds.groups is not None:
        groups[name] = ds.groups["test"]
key = ["dataset", "image_size", "model"]
method, reference = PRIMARY
primary = results.compare_methods(runs, reference, by=key, methods=[method], groups=groups)
primary["family"] = "primary"
primary["p_holm"] = results.holm(primary["t_p"])
val = runs.groupby(key + ["method"])["val_acc"].mean().reset_index()
baselines = val[~val.method.isin(["no_aug", "meddiffusemix"])]
best = baselines.loc[baselines.groupby(key)["val_acc"].idxmax()] if len(baselines) else baselines
secondary = [results.compare_methods(runs, "no_aug", by=key,
                                     methods=[m for m in order if m not in ("no_aug", method)], groups=groups)]
for _, b in best.iterrows():
    g = runs[(runs.dataset == b.dataset) & (runs.image_size == b.image_size) & (runs.model == b.model)]
    secondary.append(results.compare_methods(g, b.method, by=key, methods=[method], groups=groups))
secondary = pd.concat([t for t in secondary if len(t)], ignore_index=True) if any(len(t) for t in secondary) else pd.DataFrame()
if len(secondary):
    secondary["family"] = "secondary"
    secondary["p_holm"] = secondary.groupby(key)["t_p"].transform(lambda p: pd.Series(results.holm(p), index=p.index))
tests = pd.concat([primary, secondary], ignore_index=True)
tests.insert(0, "cell", study.cell_labels(tests, prof))
cols = ["family", "cell", "dataset", "image_size", "model", "method", "reference", "n_pairs", "diff", "diff_ci95",
        "t_p", "p_holm", "mde_80", "sd_diff", "img_diff", "img_lo", "img_hi", "boot_p", "bootstrap", "boot_units"]
tests = tests[[c for c in cols if c in tests]]
tests.to_csv(out / "07_significance.csv", index=False)
primary_out = tests[tests.family == "primary"]
primary_out.to_csv(out / "07_primary.csv", index=False)
best[key + ["method", "val_acc"]].rename(columns={"method": "best_baseline_by_val"}).to_csv(
    out / "07_best_baseline.csv", index=False)
display(primary_out.round(4))
display(best.rename(columns={"method": "best baseline (val acc)"}))
display(tests[tests.family == "secondary"].round(4))

# %% [markdown]
# ## Fig. 2: No Aug vs MedDiffuseMix, and the paired differences

# %%
fig = figures.gain_bars(summary, primary_out, reference, method, "test_acc")
plots.savefig(fig, out / "07_fig2_gain.png")

# %% [markdown]
# ## Wall time of the study's parts (from the runs' `DONE` markers)

# %%
timing = results.timing(prof["name"])
timing.to_csv(out / "07_timing.csv", index=False)
display(timing.round(1))

# %% [markdown]
# ## Checks (recomputed independently of the functions that made the tables)

# %%
tasks.check_metrics_sane(runs.rename(columns={f"test_{m}": m for m in ("acc", "precision", "recall", "f1", "auc", "ece")}))
assert not unmatched, f"unmatched seeds in {unmatched}"
assert summary["seeds"].min() >= 1
if len(tests):
    finite = tests.t_p.dropna()
    assert finite.between(0, 1).all()
    # matched seeds: the bootstrap's difference is the seed-mean difference, and no interval
    # excludes its own difference
    assert np.allclose(tests.img_diff, tests["diff"], atol=1e-12)
    assert ((tests.img_lo <= tests.img_diff + 1e-12) & (tests.img_diff <= tests.img_hi + 1e-12)).all()
    # one t-interval recomputed from the runs with scipy
    r = tests.iloc[0]
    a = runs[(runs.dataset == r.dataset) & (runs.image_size == r.image_size) & (runs.model == r.model)]
    m_ = a[a.method == r.method].set_index("seed").test_acc
    b_ = a[a.method == r.reference].set_index("seed").test_acc
    d = (m_ - b_).dropna()
    if len(d) > 1 and d.std() > 0:
        lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
        assert abs((hi - lo) / 2 - r.diff_ci95) < 1e-9 and abs(d.mean() - r["diff"]) < 1e-12
        assert abs(stats.ttest_rel(m_.loc[d.index], b_.loc[d.index]).pvalue - r.t_p) < 1e-9
    # one Holm-adjusted family recomputed by hand
    fam = tests[tests.family == "secondary"].groupby(key).get_group(tuple(tests[tests.family == "secondary"].iloc[0][key])) \
        if (tests.family == "secondary").any() else tests.iloc[:0]
    p = fam.t_p.to_numpy()
    ok = np.isfinite(p)
    if ok.any():
        o = np.argsort(p[ok], kind="stable")
        adj = np.maximum.accumulate(np.minimum(1, (ok.sum() - np.arange(ok.sum())) * p[ok][o]))
        want = np.empty(ok.sum())
        want[o] = adj
        assert np.allclose(fam.p_holm.to_numpy()[ok], want)
print("tables checks passed")
