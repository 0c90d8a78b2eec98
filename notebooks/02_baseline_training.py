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
# # 02 · No-Aug baseline
#
# Trains and evaluates the No-Aug baseline (intensity scaling only) on every dataset of the
# profile with several seeds, on the official train / val / test splits: model chosen on
# validation AUC, the test split evaluated once per trained model. Each (dataset, seed)
# is one run directory under `runs/classifier/<profile>/<hash>/` (config, environment,
# metrics, per-image test predictions, weights); finished runs are skipped on rerun.
#
# Reference: MedMNIST v2, ResNet-18 at 28 px (test ACC / AUC), from `MANIFEST.md`.

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
DATASETS = None  # None: the profile's datasets
SEEDS = None     # None: the profile's seeds

# %%
import pandas as pd
from IPython.display import display
from tqdm.auto import tqdm
from mdlib import data, metrics, paths, plots, profiles
from mdlib.runs import tasks

prof = profiles.load(PROFILE)
names = DATASETS or prof["datasets"]
seeds = SEEDS or prof["seeds"]
out = paths.figures_dir(prof["name"])
print(f"profile={prof['name']}  datasets={names}  seeds={seeds}")
print("training section:", prof["baseline"], "| per-dataset overrides:", prof.get("dataset_overrides"))

# %% [markdown]
# ## Train (or load finished runs)

# %%
runs, rows, hist = [], [], []
for name in tqdm(names, desc="datasets"):
    for seed in seeds:
        run = tasks.run_classifier(prof, name, seed, "no_aug", task="baseline")
        runs.append(run)
        rows.append(tasks.run_metrics(run))
        h = run.read_csv("history.csv").assign(dataset=name, seed=seed)
        hist.append(h)
per_seed = pd.DataFrame(rows)
history = pd.concat(hist, ignore_index=True)
per_seed.to_csv(out / "02_baseline_noaug_runs.csv", index=False)
display(per_seed[["dataset", "seed", "acc", "auc", "f1", "ece", "best_epoch", "wall_s"]].round(3))

# %% [markdown]
# ## Mean ± std over seeds, against the published reference

# %%
summary = metrics.mean_std(per_seed, "dataset")
ref = data.REFERENCE_V2_RESNET18_28
summary["ref_acc"] = summary["dataset"].map(lambda d: ref.get(d, {}).get("acc"))
summary["ref_auc"] = summary["dataset"].map(lambda d: ref.get(d, {}).get("auc"))
summary["acc_minus_ref"] = summary["acc_mean"] - summary["ref_acc"]
summary["auc_minus_ref"] = summary["auc_mean"] - summary["ref_auc"]
wall = per_seed.groupby("dataset")["wall_s"].sum().rename("train_wall_s_total")
summary = summary.merge(wall, on="dataset")
summary.insert(1, "profile", prof["name"])
summary.insert(2, "model", prof["baseline"]["model"])
summary.to_csv(out / "02_baseline_noaug_summary.csv", index=False)
display(summary.round(3))
print(f"total training wall time: {per_seed['wall_s'].sum():.0f} s")

# %%
plots.savefig(plots.baseline_vs_reference(summary, ref), out / "02_baseline_vs_reference.png")
plots.savefig(plots.training_curves(history), out / "02_training_curves.png")

# %% [markdown]
# ## Checks: the recorded numbers are sane

# %%
tasks.check_metrics_sane(per_seed)
assert len(per_seed) == len(names) * len(seeds)
if prof["name"] != "smoke":  # smoke trains 2 epochs on 40 images per class: no skill expected
    assert (per_seed["auc"] > 0.5).all(), "a baseline is no better than chance on AUC"
print("baseline checks passed")
