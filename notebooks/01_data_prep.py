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
# # 01 · Data preparation: the study's datasets
#
# For every dataset the MedDiffuseMix study trains on (the profile's `study_datasets`, at
# the study's image sizes, each with its **study subset**: `mdlib.runs.tasks.study_setup`,
# e.g. a fixed seeded 10% of PneumoniaMNIST's training split): split sizes and class
# balance of the data the study actually uses, the grouped split of LC25000, a grid of real
# examples per class, and intensity statistics. Every file is validated (md5 or official
# split sizes and label counts, dtype, shape, label range) before anything else runs, by
# `mdlib.data`. Figures and tables go to `figures/<profile>/`.
#
# LC25000 is used as **benign (0) vs malignant (1)** (adenocarcinoma and squamous cell
# carcinoma together), and is split by `group_id`: its tiles are rotated / flipped copies
# of ~740 source tiles, so whole groups go to one split. RetinaMNIST is not part of this
# study: it appears only in notebook 02 (the trainer checked against published MedMNIST v2
# numbers) and in the DiffMIC-v2 study.
#
# Data root: the `MDLIB_DATA_ROOT` environment variable (default `data/`).

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
DATASETS = None  # None: the profile's study_datasets (a list or "a,b")
SEED = 0

# %%
import logging
import numpy as np
import pandas as pd
from IPython.display import display
from mdlib import data, paths, plots, profiles
from mdlib.runs import tasks
from mdlib.studies.meddiffusemix import study

logging.basicConfig(level=logging.INFO, format="%(message)s")
prof = profiles.load(PROFILE)
configs = study.study_configs(prof, DATASETS)
out = paths.figures_dir(prof["name"])
print(f"profile={prof['name']}  data root={paths.data_root()}  figures -> {out}")
for name, size, p in configs:
    print(f"  {name} {size} px  limited_data={p.get('limited_data')}")

# %% [markdown]
# ## Load and validate; the study's training subsets

# %%
sets, full = {}, {}
for name, size, p in configs:
    key = name if size == prof["image_size"] else f"{name}_{size}"
    full[key] = data.load_dataset(name, size, seed=SEED)
    sets[key], _ = tasks.load_data(p, name, SEED)  # the study's subset of the training split
    sets[key].name = key
    print(full[key].summary(), "| md5:", full[key].meta.get("md5_status", "folder dataset"))
    print(f"   study training data: {len(sets[key].y('train'))} images {sets[key].class_counts('train')}")

# %% [markdown]
# ## Split sizes and class balance (the study's data)
#
# The sets are imbalanced (pneumonia 3:1 against normal, BreastMNIST 1:2.7 malignant
# against normal/benign, LC25000 2:1 malignant against benign), which is why the study
# reports AUC, F1 of the disease class and calibration besides accuracy.

# %%
summary = pd.concat([plots.split_summary(ds) for ds in sets.values()], ignore_index=True)
summary.to_csv(out / "01_split_summary.csv", index=False)
display(summary.pivot_table(index=["dataset", "split"], columns="class", values="n", aggfunc="sum"))
plots.savefig(plots.class_balance_plot(summary), out / "01_class_balance.png")

# %% [markdown]
# ## The grouped split (datasets with groups, e.g. LC25000)
#
# Per split: images, source groups, and the largest group; no group may appear in two
# splits (checked below).

# %%
group_rows = []
for key, ds in full.items():
    if ds.groups is None:
        continue
    for s in data.SPLITS:
        g = ds.groups[s]
        _, counts = np.unique(g, return_counts=True)
        group_rows.append({"dataset": key, "split": s, "images": len(g), "groups": len(counts),
                           "images_per_group_mean": float(counts.mean()),
                           "images_per_group_max": int(counts.max())})
groups = pd.DataFrame(group_rows)
groups.to_csv(out / "01_group_split.csv", index=False)
display(groups)

# %% [markdown]
# ## Real examples per class

# %%
for key, ds in sets.items():
    fig = plots.example_grid(ds, "train", prof["figures"]["examples_per_class"], seed=SEED)
    plots.savefig(fig, out / f"01_examples_{key}.png")

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
# ## Checks (fail the run if the data look wrong)

# %%
for key, ds in sets.items():
    for s in data.SPLITS:
        x, y = ds.splits[s]
        assert len(x) == len(y) > 0 and x.dtype.name == "uint8" and x.ndim == 4
        assert set(range(ds.n_classes)) >= set(y.tolist()) and len(set(y.tolist())) >= 2
    assert len(ds.y("val")) == len(full[key].y("val")) and len(ds.y("test")) == len(full[key].y("test"))
    name = key.split("_")[0] if key not in data.dataset_names() else key
    if name in data.MEDMNIST:
        spec = data.MEDMNIST[name]
        assert tuple(len(full[key].y(s)) for s in data.SPLITS) == spec.split_sizes, key
for key, ds in full.items():
    if ds.groups is not None:  # no source group in two splits
        seen = [set(ds.groups[s]) for s in data.SPLITS]
        assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2]), key
assert (stats[["mean_intensity", "mean_contrast"]].to_numpy() > 0).all()
print("data checks passed")
