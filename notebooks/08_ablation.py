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
# # 08 · Ablation of MedDiffuseMix (paper Fig. 4)
#
# Full MedDiffuseMix against each component switched off, per dataset, from the runs of
# `python -m mdlib.sweep studies/ablation_<profile>.yaml` (task `ablation`; reads results
# only). The switches (`mdlib.augment.MedDiffuseMix`): no saliency guidance (a random blob
# mask of the same area), no adaptive mixing (alpha = clip(alpha_base)), no boundary
# smoothing (sigma = 0), no diffusion refinement, no preservation check. The dashed line is
# No Aug from the main study (task `study`) when those runs exist; the full method's runs
# are the main study's MedDiffuseMix runs of the same seeds (the same configuration, so they
# are not trained twice).

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
TASK = "ablation"
REFERENCE_TASK = "study"
METRIC = "test_acc"

# %%
import json
import numpy as np
import pandas as pd
from IPython.display import display
from mdlib import paths, plots, profiles
from mdlib.runs import results
from mdlib.studies.meddiffusemix import figures, study

prof = profiles.load(PROFILE)
out = paths.figures_dir(prof["name"])
runs = study.task_runs(prof, TASK)  # smoke: creates the tiny runs CI needs
runs = study.add_variants(runs[runs.method == "meddiffusemix"], prof)
NAMES = {"default": "full", "use_saliency=False": "w/o saliency", "adaptive=False": "w/o adaptive alpha",
         "smooth=False": "w/o smoothing", "refine=False": "w/o refinement", "check=False": "w/o check"}
runs["variant"] = [NAMES.get(v, v) for v in runs.variant]
ref = results.collect(REFERENCE_TASK, prof["name"])
ref_s = None
if len(ref):
    ref = study.add_variants(ref[ref.method.isin(["no_aug", "meddiffusemix"])], prof)
    ref = ref[ref.variant == "default"]
    # the full method's runs are the main study's (same configuration), for the same seeds
    full = ref[(ref.method == "meddiffusemix") & ref.seed.isin(runs.seed.unique())
               & ref.dataset.isin(runs.dataset.unique())].assign(variant="full")
    if len(full):
        runs = pd.concat([runs[runs.variant != "full"], full], ignore_index=True)
    noaug = ref[ref.method == "no_aug"]
    ref_s = results.summarise(noaug, by=("dataset", "model", "method")) if len(noaug) else None
order = [v for v in NAMES.values() if v in set(runs.variant)]
summary = results.summarise(runs, by=("dataset", "model", "variant"))

# %%
fig = figures.ablation_bars(summary, order, METRIC, ref_s)
plots.savefig(fig, out / "08_fig4_ablation.png")
full = summary[summary.variant == "full"][["dataset", "model", f"{METRIC}_mean"]].rename(columns={f"{METRIC}_mean": "full"})
table = summary.merge(full, on=["dataset", "model"], how="left")
table["delta_vs_full"] = table[f"{METRIC}_mean"] - table["full"]
table.to_csv(out / "08_ablation.csv", index=False)
display(table[["dataset", "variant", "seeds", f"{METRIC}_mean", f"{METRIC}_std", f"{METRIC}_ci95", "delta_vs_full"]].round(4))

# %% [markdown]
# ### Paired tests: each ablated variant against the full method (seeds matched)

# %%
rows = []
for (d, m), g in runs.groupby(["dataset", "model"]):
    f = g[g.variant == "full"]
    for v, gv in g.groupby("variant"):
        if v != "full" and len(f):
            t = results.paired_seed_test(gv, f, METRIC)
            b = results.paired_bootstrap(results.per_image_correct(gv["run_dir"]), results.per_image_correct(f["run_dir"]))
            rows.append({"dataset": d, "model": m, "variant": v, **t, **{k: b[k] for k in ("boot_lo", "boot_hi", "boot_p")}})
tests = pd.DataFrame(rows)
tests.to_csv(out / "08_ablation_tests.csv", index=False)
display(tests.round(4))

# %% [markdown]
# ## Checks

# %%
assert summary[f"{METRIC}_mean"].between(0, 1).all()
assert set(order) <= set(NAMES.values()) and "full" in set(runs.variant), "the full method's runs are missing"
print("ablation checks passed")
