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
# # 03 · Guidance classifier and saliency
#
# MedDiffuseMix decides where it may mix from the Grad-CAM saliency of a **guidance
# classifier** `g`. Here `g` is trained for every dataset and image size of the study, on
# the study's training data only (its subset of the training split, exactly the `g` the
# sweeps use; selected on validation AUC; the test split is removed before training), and
# its Grad-CAM maps of the whole training split are computed once and cached in its run
# directory for the augmentation methods.
#
# `mdlib.saliency.gradcam` computes Grad-CAM for a whole batch in one forward and one
# backward pass; it is checked here against pytorch-grad-cam's `GradCAM` on the same model,
# layer, images and targets. The gallery shows validation images (never test images),
# negative and positive, with both maps side by side (the paper's Fig. 6).

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
DATASETS = None  # None: the profile's study_datasets (a list or "a,b")
SEED = 0

# %%
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from mdlib import paths, plots, profiles, saliency
from mdlib.data import to_tensor
from mdlib.runs import tasks
from mdlib.studies.meddiffusemix import study

prof = profiles.load(PROFILE)
configs = study.study_configs(prof, DATASETS)
out = paths.figures_dir(prof["name"])
sal_cfg, mdm = prof["saliency"], prof["meddiffusemix"]
print(f"profile={prof['name']}  tau_h={mdm['tau_h']}  tau_b={mdm['tau_b']}")

# %% [markdown]
# ## Train (or load) the guidance classifiers; cache train-split saliency

# %%
guides, rows, region_rows = {}, [], []
for ds_name, size, p in configs:
    name = ds_name if size == prof["image_size"] else f"{ds_name}_{size}"
    model, run = tasks.guidance_model(p, ds_name, SEED)
    ds, _ = tasks.load_data(p, ds_name, SEED)
    guides[name] = (model, run, ds)
    m = run.read_csv("metrics.csv").set_index("metric")["value"]
    rows.append({"dataset": name, "image_size": size, "val_acc": m["acc"], "val_auc": m["auc"],
                 "n_train": run.info()["n_train"], "best_epoch": run.info()["best_epoch"]})
    S = saliency.compute_split_saliency(model, ds.x("train"), ds.y("train"),
                                        batch_size=sal_cfg["batch_size"], cache_path=run.dir)
    high, back = (S > mdm["tau_h"]).float().mean((1, 2)), (S <= mdm["tau_b"]).float().mean((1, 2))
    region_rows.append({"dataset": name, "mean_saliency": float(S.mean()),
                        "high_region_frac": float(high.mean()), "background_frac": float(back.mean()),
                        "empty_high_region": int((high == 0).sum()), "n_maps": len(S)})
guide_table = pd.DataFrame(rows)
regions = pd.DataFrame(region_rows)
guide_table.to_csv(out / "03_guidance_val_metrics.csv", index=False)
regions.to_csv(out / "03_saliency_regions.csv", index=False)
display(guide_table.round(3)); display(regions.round(3))

# %% [markdown]
# ## Agreement with pytorch-grad-cam, and the gallery (validation images)
#
# Columns: the image, this project's Grad-CAM, pytorch-grad-cam's `GradCAM`, their absolute
# difference, and Grad-CAM++ (pytorch-grad-cam) for comparison. Targets: each image's own
# label.

# %%
agree, panels = [], {}
k = sal_cfg["gallery_per_class"]
for name, (model, run, ds) in guides.items():
    x, y = ds.x("val"), ds.y("val")
    rng = np.random.default_rng(SEED)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), min(k, int((y == c).sum())), replace=False)
                          for c in range(ds.n_classes) if c <= 1 or ds.n_classes == 2])
    xt, yt = to_tensor(x[idx]), torch.from_numpy(y[idx])
    ours = saliency.gradcam(model, xt, yt).cpu().numpy()
    lib = saliency.cam_variant(model, xt, yt, method="gradcam").cpu().numpy()
    pp = saliency.cam_variant(model, xt, yt, method="gradcam++").cpu().numpy()
    diff = np.abs(ours - lib)
    agree.append({"dataset": name, "n_images": len(idx), "max_abs_diff": float(diff.max()),
                  "mean_abs_diff": float(diff.mean())})
    fig = plots.gradcam_comparison(x[idx], y[idx], ds.class_names,
                                   {"mdlib Grad-CAM": ours, "pytorch-grad-cam": lib,
                                    "|diff| (0-1e-3)": diff, "Grad-CAM++": pp},
                                   title=f"{name}: guidance classifier saliency (val images)")
    plots.savefig(fig, out / f"03_gradcam_{name}.png")
    panels[name] = (x[idx], y[idx], ours)
agreement = pd.DataFrame(agree)
agreement.to_csv(out / "03_gradcam_agreement.csv", index=False)
display(agreement)
fig = plots.gradcam_panel(panels, {n: guides[n][2].class_names for n in panels})
plots.savefig(fig, out / "03_fig6_gradcam.png")

# %% [markdown]
# ## Checks

# %%
assert (agreement["max_abs_diff"] <= 1e-3).all(), agreement
assert guide_table[["val_acc", "val_auc"]].apply(np.isfinite).all().all()
assert ((regions["high_region_frac"] >= 0) & (regions["high_region_frac"] <= 1)).all()
assert ((regions["background_frac"] > 0) & (regions["background_frac"] <= 1)).all()
print("saliency checks passed")
