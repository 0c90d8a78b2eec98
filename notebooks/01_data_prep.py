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
# # 01 · Data preparation
#
# For every dataset of the chosen profile: split sizes and class balance, a grid of real
# examples per class, and intensity statistics. Every file is validated (md5 or official
# split sizes and label counts, dtype, shape, label range) before anything else runs, by
# `mdlib.data`. Figures and tables go to `figures/<profile>/`.
#
# Data root: the `MDLIB_DATA_ROOT` environment variable (default `data/`).

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
DATASETS = None  # None: the profile's datasets
SEED = 0

# %%
import logging
import pandas as pd
from IPython.display import display
from mdlib import data, paths, plots, profiles
from mdlib.runs import tasks

logging.basicConfig(level=logging.INFO, format="%(message)s")
prof = profiles.load(PROFILE)
names = DATASETS or prof["datasets"]
out = paths.figures_dir(prof["name"])
print(f"profile={prof['name']}  datasets={names}  data root={paths.data_root()}  figures -> {out}")

# %% [markdown]
# ## Load and validate

# %%
sets = {n: data.load_dataset(n, prof["image_size"], seed=SEED) for n in names}
for ds in sets.values():
    print(ds.summary(), "| md5:", ds.meta.get("md5_status", "folder dataset"))

# %% [markdown]
# ## Split sizes and class balance
#
# All three MedMNIST sets are imbalanced (pneumonia 3:1, breast 1:2.7 malignant, retina
# grade 4 only 6 %), which is why the study reports AUC, F1 and balanced views besides
# accuracy.

# %%
summary = pd.concat([plots.split_summary(ds) for ds in sets.values()], ignore_index=True)
summary.to_csv(out / "01_split_summary.csv", index=False)
display(summary.pivot_table(index=["dataset", "split"], columns="class", values="n", aggfunc="sum"))
plots.savefig(plots.class_balance_plot(summary), out / "01_class_balance.png")

# %% [markdown]
# ## Real examples per class

# %%
for name, ds in sets.items():
    fig = plots.example_grid(ds, "train", prof["figures"]["examples_per_class"], seed=SEED)
    plots.savefig(fig, out / f"01_examples_{name}.png")

# %% [markdown]
# ## Intensity statistics
#
# Per split and class: mean intensity of an image (mean and spread over images) and mean
# contrast (per-image standard deviation). A large class difference in plain intensity is
# a shortcut a classifier may learn; the pixel histograms show it directly.

# %%
stats = pd.concat([plots.intensity_stats(ds) for ds in sets.values()], ignore_index=True)
stats.to_csv(out / "01_intensity_stats.csv", index=False)
display(stats.round(3))
plots.savefig(plots.intensity_hist(list(sets.values())), out / "01_intensity_hist.png")

# %% [markdown]
# ## Limited-data regime of this profile

# %%
lim = prof.get("limited_data")
for name in names:
    sub, idx = tasks.load_data(prof, name, seed=SEED)
    print(f"{name}: limited_data={lim} -> train {len(sub.y('train'))} images, "
          f"per class {sub.class_counts('train')}")

# %% [markdown]
# ## Checks (fail the run if the data look wrong)

# %%
for name, ds in sets.items():
    for s in data.SPLITS:
        x, y = ds.splits[s]
        assert len(x) == len(y) > 0 and x.dtype.name == "uint8" and x.ndim == 4
        assert set(range(ds.n_classes)) >= set(y.tolist()) and len(set(y.tolist())) >= 2
    if name in data.MEDMNIST:
        spec = data.MEDMNIST[name]
        assert tuple(len(ds.y(s)) for s in data.SPLITS) == spec.split_sizes, name
assert (stats[["mean_intensity", "mean_contrast"]].to_numpy() > 0).all()
print("data checks passed")
