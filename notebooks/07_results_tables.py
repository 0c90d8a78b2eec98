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
# # 07 · Results tables: Table 2, Table 3, confidence intervals, significance, Fig. 2
#
# Reads the finished classifier runs of the study (`runs/<TASK>/<profile>/`, produced by
# `python -m mdlib.sweep studies/main_<profile>.yaml`, one execution of notebook 06 per
# configuration); it never trains. Only runs with each method's default parameters are
# used here (ablation and sensitivity runs live under their own tasks).
#
# * **Table 2**: test accuracy, mean ± std over seeds, datasets × backbones × methods.
# * **Table 3**: precision, recall, F1 and AUC per method for one backbone.
# * **Statistics the paper lacks**: 95% t-intervals over seeds; every method against No Aug
#   and against the best baseline (chosen per dataset and backbone by **validation**
#   accuracy, never test): paired t-test over seeds, and a paired bootstrap over test images
#   of the seed-averaged per-image correctness; Holm-adjusted within each dataset/backbone.
# * **Fig. 2**: No Aug vs MedDiffuseMix per dataset and backbone, with the average gain.

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
TASK = "study"
TABLE3_MODEL = "small_cnn"

# %%
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from mdlib import paths, plots, profiles
from mdlib.io import write_text
from mdlib.runs import results, tasks
from mdlib.studies.meddiffusemix import figures, study

prof = profiles.load(PROFILE)
out = paths.figures_dir(prof["name"])
runs = study.task_runs(prof, TASK)  # smoke: creates the tiny runs CI needs
runs = study.add_variants(runs, prof)
runs = runs[runs.variant == "default"].copy()
order = [m for m in study.ALL_METHODS if m in set(runs.method)]
print(len(runs), "runs;", runs.groupby(["dataset", "model"]).size().to_dict())

# %% [markdown]
# ## Table 2: test accuracy (mean ± std over seeds)

# %%
summary = results.summarise(runs)
summary.to_csv(out / "07_summary.csv", index=False)
t2 = summary.assign(cell=[results.fmt_mean_std(m, s) for m, s in zip(summary.test_acc_mean, summary.test_acc_std)])
table2 = t2.pivot_table(index="method", columns=["dataset", "model"], values="cell", aggfunc="first")
table2 = table2.reindex(order)
table2.index = [figures.METHOD_LABELS.get(m, m) for m in table2.index]
seeds = t2.pivot_table(index="method", columns=["dataset", "model"], values="seeds", aggfunc="first").reindex(order)
table2.to_csv(out / "07_table2_accuracy.csv")
md2 = table2.to_markdown()
write_text(out / "07_table2_accuracy.md", md2 + "\n")
display(Markdown(md2))
print("seeds per cell:\n", seeds.to_string())

# %% [markdown]
# ## Table 3: precision, recall, F1, AUC for one backbone

# %%
s3 = summary[summary.model == TABLE3_MODEL]
rows = []
for _, r in s3.iterrows():
    row = {"dataset": r.dataset, "method": figures.METHOD_LABELS.get(r.method, r.method)}
    for m in ("precision", "recall", "f1", "auc"):
        row[m.upper() if m == "auc" else m.capitalize()] = results.fmt_mean_std(r[f"test_{m}_mean"], r[f"test_{m}_std"])
    rows.append(row)
table3 = pd.DataFrame(rows)
table3["_o"] = [list(figures.METHOD_LABELS.values()).index(m) for m in table3.method]
table3 = table3.sort_values(["dataset", "_o"]).drop(columns="_o")
table3.to_csv(out / "07_table3_metrics.csv", index=False)
md3 = table3.to_markdown(index=False)
write_text(out / "07_table3_metrics.md", md3 + "\n")
display(Markdown(md3))

# %% [markdown]
# ## Confidence intervals and paired tests
#
# The best baseline per dataset and backbone is the method other than No Aug and
# MedDiffuseMix with the highest mean **validation** accuracy.

# %%
ci = summary[["dataset", "model", "method", "seeds", "test_acc_mean", "test_acc_ci95", "test_auc_mean", "test_auc_ci95"]]
display(ci.round(4))
vs_noaug = results.compare_methods(runs, "no_aug")
val = runs.groupby(["dataset", "model", "method"])["val_acc"].mean().reset_index()
baselines = val[~val.method.isin(["no_aug", "meddiffusemix"])]
best = baselines.loc[baselines.groupby(["dataset", "model"])["val_acc"].idxmax()] if len(baselines) else baselines
tests = [vs_noaug]
for _, b in best.iterrows():
    g = runs[(runs.dataset == b.dataset) & (runs.model == b.model)]
    tests.append(results.compare_methods(g, b.method))
tests = pd.concat([t for t in tests if len(t)], ignore_index=True) if any(len(t) for t in tests) else pd.DataFrame()
tests.to_csv(out / "07_significance.csv", index=False)
best[["dataset", "model", "method", "val_acc"]].rename(columns={"method": "best_baseline_by_val"}).to_csv(
    out / "07_best_baseline.csv", index=False)
display(best.rename(columns={"method": "best baseline (val acc)"}))
display(tests.round(4))

# %% [markdown]
# ## Fig. 2: No Aug vs MedDiffuseMix

# %%
fig = figures.gain_bars(summary, "no_aug", "meddiffusemix", "test_acc")
plots.savefig(fig, out / "07_fig2_gain.png")

# %% [markdown]
# ## Wall time of the study's parts (from the runs' `DONE` markers)

# %%
timing = results.timing(prof["name"])
timing.to_csv(out / "07_timing.csv", index=False)
display(timing.round(1))

# %% [markdown]
# ## Checks

# %%
tasks.check_metrics_sane(runs.rename(columns={f"test_{m}": m for m in ("acc", "precision", "recall", "f1", "auc", "ece")}))
assert summary["seeds"].min() >= 1
if len(tests):
    assert tests[["t_p", "boot_p"]].stack().between(0, 1).all()
    assert (tests["img_lo"] <= tests["img_diff"] + 1e-12).all() and (tests["img_diff"] <= tests["img_hi"] + 1e-12).all()
print("tables checks passed")
