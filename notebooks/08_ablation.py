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
ref = results.collect(REFERENCE_TASK, prof["name"], runs=study.current_runs(prof, REFERENCE_TASK))
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
full = summary[summary.variant == "full"][["dataset", "model", f"{METRIC}_mean"]].rename(columns={f"{METRIC}_mean": "full"})
table = summary.merge(full, on=["dataset", "model"], how="left")
table["delta_vs_full"] = table[f"{METRIC}_mean"] - table["full"]
table.to_csv(out / "08_ablation.csv", index=False)
display(table[["dataset", "variant", "seeds", f"{METRIC}_mean", f"{METRIC}_std", f"{METRIC}_ci95", "delta_vs_full"]].round(4))

# %% [markdown]
# ### Paired tests: each ablated variant against the full method (matched seeds)
#
# One family per dataset and backbone (the five variants), Holm-adjusted (`p_holm`);
# `mde_80`: the smallest difference the seeds could detect at 80% power; the bootstrap
# over test images is a cluster bootstrap over source tiles for LC25000.

# %%
from mdlib import data
groups = {}
for name in runs.dataset.unique():
    ds = data.load_dataset(name, prof["image_size"])
    if ds.groups is not None:
        groups[name] = ds.groups["test"]
key = ["dataset", "image_size", "model"]
tests = results.compare_methods(runs.assign(method=runs.variant), "full", METRIC, by=key, groups=groups)
if len(tests):
    tests = tests.rename(columns={"method": "variant"})
    tests["p_holm"] = tests.groupby(key)["t_p"].transform(lambda p: pd.Series(results.holm(p), index=p.index))
tests.to_csv(out / "08_ablation_tests.csv", index=False)
display(tests.round(4))
fig = figures.ablation_bars(summary, order, METRIC, ref_s, tests)
plots.savefig(fig, out / "08_fig4_ablation.png")

# %% [markdown]
# ## Checks
#
# Each ablated variant must differ from the full method where it claims to: its recorded
# switch is off (and the full method's on), and its bank of augmented images (same seed,
# same source images) is not the full method's bank.

# %%
from mdlib.runs import tasks
assert summary[f"{METRIC}_mean"].between(0, 1).all()
assert set(order) <= set(NAMES.values()) and "full" in set(runs.variant), "the full method's runs are missing"
SWITCH = {v: k.split("=")[0] for k, v in NAMES.items() if "=" in k}
for (d, seed), g in runs.groupby(["dataset", "seed"]):
    f = g[g.variant == "full"]
    if f.empty:
        continue
    xf, _, rf = tasks.load_bank(tasks.run_handle(f.iloc[0].run_dir))
    assert json.loads(f.iloc[0].params)[SWITCH["w/o check"]] is True
    for _, r in g[g.variant != "full"].iterrows():
        sw = SWITCH[r.variant]
        prm = json.loads(r.params)
        assert prm[sw] is False, (d, seed, r.variant, prm)
        assert all(prm[k] is True for k in SWITCH.values() if k != sw), (d, seed, r.variant)
        xv, _, rv = tasks.load_bank(tasks.run_handle(r.run_dir))
        assert (rv["index"].to_numpy() == rf["index"].to_numpy()).all(), "banks of other source images"
        same = np.array_equal(xv.numpy(), xf.numpy())
        if sw == "check":  # without the check a bank differs exactly when the check rejected something
            assert same == (not (rf.retries > 0).any()), f"{d} seed {seed}: w/o check vs full banks"
        elif not rv.status.str.startswith("noop").all():
            assert not same, f"{d} seed {seed}: {r.variant} bank equals the full one"
        if sw == "check":
            assert (rv.retries == 0).all() and not rv.status.isin(["kept_at_min", "dropped"]).any()
        if sw == "adaptive":
            assert rv.loc[~rv.status.str.startswith("noop"), "alpha_initial"].nunique() <= 1
if len(tests):
    assert (tests.n_pairs >= 2).all() and tests.t_p.dropna().between(0, 1).all()
print("ablation checks passed")
