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
# # 13 · Diffusion loss and Fréchet distance (paper 004)
#
# The paper trains a class-conditional DDPM on MedMNIST with the **L2** and with the
# **Huber** loss and compares FID at the InceptionV3 feature dimensions 64, 192, 768 and
# 2048. Here, per dataset:
#
# * the diffusion model of `mdlib.diffusion` is trained with both losses on **the same
#   data** (the study's training split of the dataset, never its test split) and **the same
#   budget** (`loss_study.train_steps` optimizer steps; a step count rather than a
#   wall-clock cap, so both losses get equal work), over the seeds of `loss_study.seeds`. A
#   seed fixes the initialisation, the batches and the noise, so L2 and Huber of one seed
#   are a matched pair;
# * each model draws samples with the **real test split's labels** (same size and class
#   balance), and the **Fréchet distance** to the real test images is computed with
#   (a) **InceptionV3** through torchmetrics at the pool dims `inception_dims` (its weights
#   are downloaded on first use; when they are absent, as on an offline machine, it is
#   skipped with the message printed below), and (b) the **guidance classifier's stages**
#   (global-average-pooled activations of its three convolutional stages, 16 / 32 / 64
#   dimensions at width 16), which works offline;
# * the **held-out denoising error** (the noise-prediction MSE on the validation split at
#   random timesteps) measures both losses the same way; their training-loss curves are on
#   different scales (Huber is about half the squared error below `huber_delta`).
#
# Results: mean and 95% CI over seeds per loss, and the paired Huber − L2 difference.
# Runs: `runs/diffusion/<profile>/` (models) and `runs/loss_fid/<profile>/` (samples,
# distances), resumable. Figures and tables: `figures/<profile>/13_*`. Code: `mdlib/lossfid.py`,
# `mdlib/fid.py`.

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
DATASETS = None              # None: the profile's loss_study.datasets
INCEPTION_WEIGHTS = None     # path to torch-fidelity's FID InceptionV3 weights, if you have them
INCEPTION_DOWNLOAD = False   # True: download them (needs internet)

# %%
import numpy as np
import pandas as pd
from IPython.display import display
from mdlib import data, diffusion, paths, plots, profiles
from mdlib.diffusion import fid
from mdlib.runs import results
from mdlib.studies.lossfid import study as lossfid, figures as lossfigs

prof = profiles.load(PROFILE)
L = lossfid.settings(prof)   # checked before any work starts
names = list(DATASETS or L["datasets"])
out = paths.figures_dir(prof["name"])
print(f"profile={prof['name']} datasets={names} losses={L['losses']} seeds={L['seeds']} "
      f"train_steps={L['train_steps']}")

# %% [markdown]
# ## Train both losses (or load the finished models)
#
# On the `cpu` profile: 12 models of about 6 minutes each on one core (run two datasets side
# by side, e.g. with `papermill -p DATASETS '["breastmnist"]'`, to use both cores).

# %%
models = lossfid.train_all(prof, names)
models.to_csv(out / "13_models.csv", index=False)
display(models)

# %% [markdown]
# ## Training-loss curves
#
# Each loss on its own scale (Huber ≈ half the squared error for small residuals), so the
# curves show convergence, not which loss is better; the held-out error below compares them.

# %%
for name in names:
    sub = {f"{r.loss} s{r.seed}": tuple(zip(*diffusion.read_loss_curve(f"{r.run_dir}/model")))
           for r in models[models.dataset == name].itertuples()}
    if sub:
        fig = plots.loss_curves(sub, smooth=min(50, max(2, L["train_steps"] // 20)))
        fig.axes[0].set_title(f"{name}: training loss (L2 and Huber, per seed)")
        plots.savefig(fig, out / f"13_loss_curves_{name}.png")

# %% [markdown]
# ## Samples and Fréchet distances
#
# Sampling uses the profile's DDIM steps and guidance weight (the same as notebook 04).

# %%
fd, den, status = lossfid.evaluate_all(prof, names, inception_weights=INCEPTION_WEIGHTS,
                                       inception_download=INCEPTION_DOWNLOAD)
for name, st in status.items():
    print(f"{name}: InceptionV3 FID", "computed" if st["available"] else f"SKIPPED: {st['message']}")
floor = pd.concat([lossfid.real_floor(prof, n) for n in names], ignore_index=True)
fd.to_csv(out / "13_fd.csv", index=False)
den.to_csv(out / "13_denoising.csv", index=False)
floor.to_csv(out / "13_fd_floor.csv", index=False)
pd.DataFrame([{"dataset": k, **v} for k, v in status.items()]).to_csv(
    out / "13_inception_status.csv", index=False)
fd_summary = results.summarise(fd, metrics=("fd",), by=("dataset", "extractor", "feature", "dim", "loss"))
fd_summary.to_csv(out / "13_fd_summary.csv", index=False)
diff = lossfid.paired_difference(fd)
diff.to_csv(out / "13_fd_huber_minus_l2.csv", index=False)
display(fd_summary.round(5))
display(diff.round(5))

# %% [markdown]
# ### Fréchet distance against feature dimension, L2 vs Huber
#
# Top: each seed's distance (dots) and the mean over seeds (diamond) on a log axis; dashed:
# the distance between two real sets with the same features: validation images (subsampled
# to the test split's class mix, since the distance depends on the class mix) against the
# test images. Bottom: the paired difference Huber − L2 over seeds with its 95% t-interval.

# %%
fig = lossfigs.fd_by_dim(fd, floor, diff)
plots.savefig(fig, out / "13_fd_by_dim.png")

# %% [markdown]
# ### Held-out denoising error (validation split, both losses measured as MSE and Huber)

# %%
den_long = den.melt(id_vars=["dataset", "loss", "seed", "run"], var_name="measure",
                    value_name="error")
den_summary = results.summarise(den_long, metrics=("error",), by=("dataset", "measure", "loss"))
den_summary.to_csv(out / "13_denoising_summary.csv", index=False)
display(den_summary.round(5))
den_diff = lossfid.paired_difference(den_long, value="error", by=("dataset", "measure"))
den_diff.to_csv(out / "13_denoising_huber_minus_l2.csv", index=False)
display(den_diff.round(5))
fig = lossfigs.denoising_bars(den, den_diff)
plots.savefig(fig, out / "13_denoising.png")

# %% [markdown]
# ### Samples of each loss (seed of the first model), next to real test images

# %%
for name in names:
    ds_ = data.load_dataset(name, prof["image_size"])
    samples = {}
    for loss in L["losses"]:
        run_hash = fd[(fd.dataset == name) & (fd.loss == loss) & (fd.seed == L["seeds"][0])].run.iloc[0]
        samples[loss] = lossfid.read_samples(prof, run_hash)
    fig = lossfigs.samples_by_loss(ds_.x("test"), ds_.y("test"), samples, ds_.class_names,
                                    per_class=int(L.get("samples_shown_per_class", 8)),
                                    title=f"{name}: real test images, L2 and Huber samples (seed {L['seeds'][0]})")
    plots.savefig(fig, out / f"13_samples_{name}.png")

# %% [markdown]
# ## Checks

# %%
n_models = len(names) * len(L["losses"]) * len(L["seeds"])
assert len(models) == n_models and (models.steps == L["train_steps"]).all(), models
assert fd.groupby(["dataset", "extractor", "feature"]).size().eq(len(L["losses"]) * len(L["seeds"])).all()
assert np.isfinite(fd.fd).all() and (fd.fd >= -1e-6).all(), fd
assert np.isfinite(floor.fd_real_floor).all()
assert set(fd.extractor) >= {"guidance"}
for name, st in status.items():  # InceptionV3 either computed at every dim or skipped with a reason
    got = fd[(fd.dataset == name) & (fd.extractor == "inception")]
    if st["available"]:
        assert sorted(got.dim.unique()) == sorted(L["inception_dims"])
    else:
        assert got.empty and st["message"]
assert (den[["mse", "huber"]] > 0).all().all()
for f in ["13_fd.csv", "13_fd_summary.csv", "13_fd_huber_minus_l2.csv", "13_fd_by_dim.png",
          "13_denoising.csv", "13_denoising.png"] + [f"13_samples_{n}.png" for n in names]:
    assert (out / f).is_file(), f
print("loss / Fréchet distance checks passed")
