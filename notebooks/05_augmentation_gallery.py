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
# # 05 · Augmentation gallery and saliency preservation
#
# Every method of the study applied to the **same training images** (each image is `x1`
# exactly once), with the profile's parameters (`mdlib.studies.meddiffusemix.study.method_params`), for each
# dataset that has a diffusion model in the profile:
#
# * the paper's **Fig. 3**: Original, Mixup, SaliencyMix, DBA and MedDiffuseMix side by side;
# * the paper's **Fig. 7**: original, its Grad-CAM, the MedDiffuseMix image, its Grad-CAM
#   (guidance classifier `g`, the original's label);
# * a table the paper does not give: how much of `g`'s evidence each method keeps
#   (mean Grad-CAM of the augmented image inside `R_h(x1)`, the quantity of Eq. 8), whether
#   `g` still predicts the augmented label, PSNR / SSIM to `x1` inside and outside `R_h(x1)`,
#   and MedDiffuseMix's acceptance rate, retries and alpha.
#
# Online methods (Mixup, SaliencyMix) mix within the batch of selected images and are
# applied with `p = 1` here; in training they augment a share `p` of each batch.
# SaliencyMix computes OpenCV's fine-grained saliency box **per source image** with rows
# and columns the right way round (the official code uses one source's map for the whole
# batch and swaps x and y).

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
DATASETS = None   # None: the datasets of the profile's diffusion section
SEED = 0
N_TABLE = None    # images per dataset for the table (None: the profile's augment.table_images)
GALLERY_PER_CLASS = 2

# %%
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from mdlib import augment, paths, plots, profiles
from mdlib.data import to_tensor
from mdlib.runs import tasks
from mdlib.saliency import gradcam
from mdlib.studies.meddiffusemix import figures, preserve, study

prof = profiles.load(PROFILE)
names = DATASETS or prof["diffusion"]["datasets"]
n_table = N_TABLE or (prof.get("augment") or {}).get("table_images", 256)
out = paths.figures_dir(prof["name"])
methods = list(study.ALL_METHODS)
print(f"profile={prof['name']} datasets={names} methods={methods} n_table={n_table}")

# %% [markdown]
# ## Apply every method to the same images

# %%
results, context = {}, {}
for name in names:
    ds, _ = tasks.load_data(prof, name, SEED)
    x_all, y_all = to_tensor(ds.x("train")), torch.from_numpy(ds.y("train"))
    rng = np.random.default_rng(SEED)
    idx = torch.from_numpy(np.sort(rng.choice(len(y_all), min(n_table, len(y_all)), replace=False)))
    mdm = augment.get("meddiffusemix", **study.method_params(prof, name, "meddiffusemix"))
    extras = tasks.bank_resources(prof, name, SEED, mdm)
    context[name] = dict(ds=ds, x=x_all, y=y_all, idx=idx, extras=extras, mdm=mdm)
    for m in methods:
        params = study.method_params(prof, name, m)
        params.pop("p", None)  # always augment here
        aug = augment.get(m, **params)
        results[name, m] = preserve.augment_same_images(m, aug, x_all, y_all, idx, ds.n_classes,
                                                        extras, seed=SEED)
    print(name, "done:", len(idx), "images x", len(methods), "methods")

# %% [markdown]
# ## Fig. 3: the same images under each method

# %%
for name in names:
    c = context[name]
    y_sel = c["y"][c["idx"]].numpy()
    rows = np.concatenate([np.flatnonzero(y_sel == k)[:GALLERY_PER_CLASS] for k in range(c["ds"].n_classes)])
    cols = {"Original": results[name, "no_aug"][0][rows], "Mixup": results[name, "mixup"][0][rows],
            "SaliencyMix": results[name, "saliencymix"][0][rows], "DBA": results[name, "dba"][0][rows],
            "MedDiffuseMix": results[name, "meddiffusemix"][0][rows]}
    labels = [c["ds"].class_names[int(k)] for k in y_sel[rows]]
    fig = figures.augmentation_grid(cols, labels, title=f"{name}: augmentation methods (Fig. 3)")
    plots.savefig(fig, out / f"05_fig3_{name}.png")

# %% [markdown]
# ## Fig. 7: Grad-CAM of the original and of its MedDiffuseMix image

# %%
for name in names:
    c = context[name]
    y_sel = c["y"][c["idx"]]
    rows = np.concatenate([np.flatnonzero(y_sel.numpy() == k)[:GALLERY_PER_CLASS] for k in range(c["ds"].n_classes)])
    g = c["extras"]["guidance"]
    x1 = c["x"][c["idx"][rows]]
    xa = results[name, "meddiffusemix"][0][rows]
    cam1 = c["extras"]["saliency"][c["idx"][rows]].numpy()
    cama = gradcam(g, xa, y_sel[rows]).cpu().numpy()
    labels = [c["ds"].class_names[int(k)] for k in y_sel[rows]]
    fig = figures.mdm_gradcam_figure(x1, cam1, xa, cama, labels,
                                   title=f"{name}: Grad-CAM before and after MedDiffuseMix (Fig. 7)")
    plots.savefig(fig, out / f"05_fig7_{name}.png")

# %% [markdown]
# ## Saliency preservation, every method

# %%
tables = []
for name in names:
    c = context[name]
    res = {m: results[name, m] for m in methods}
    t = preserve.preservation_table(res, c["x"], c["y"], c["idx"], c["extras"]["saliency"],
                                    c["extras"]["guidance"], c["mdm"].params["tau_h"])
    t.insert(0, "dataset", name)
    tables.append(t)
table = pd.concat(tables, ignore_index=True)
table.to_csv(out / "05_preservation.csv", index=False)
display(table.round(3))

# %% [markdown]
# ## MedDiffuseMix records: alpha, retries, acceptance
#
# Per augmented image the method records the adaptive alpha (Eq. 6), the alpha finally
# used, the retries of the preservation check, the outcome, the mask area and the
# saliency kept. The summary and the alpha distribution are written next to the figures.

# %%
recs, summary = {}, []
for name in names:
    rec = results[name, "meddiffusemix"][2]
    recs[name] = rec
    s = {"dataset": name, "n": len(rec)}
    s.update({f"status_{k}": float((rec["status"] == k).mean()) for k in augment.MDM_STATUS})
    s.update({"alpha_initial_mean": rec["alpha_initial"].mean(), "alpha_mean": rec["alpha"].mean(),
              "retries_mean": rec["retries"].mean(), "retries_max": int(rec["retries"].max()),
              "mask_area_mean": rec["mask_area"].mean(), "high_area_mean": rec["high_area"].mean(),
              "saliency_kept_mean": rec["saliency_kept"].mean(), "changed_mean": rec["changed"].mean()})
    summary.append(s)
summary = pd.DataFrame(summary)
summary.to_csv(out / "05_mdm_records_summary.csv", index=False)
display(summary.round(3).T)
plots.savefig(figures.alpha_hist(recs), out / "05_alpha_hist.png")

# %% [markdown]
# ## Checks

# %%
for (name, m), (xa, ya, rec) in results.items():
    assert torch.isfinite(xa).all() and xa.min() >= 0 and xa.max() <= 1, (name, m)
    torch.testing.assert_close(ya.sum(1), torch.ones(len(ya)))
num = table.drop(columns=["dataset", "method"]).replace([np.inf], np.nan)
assert table["saliency_kept"].between(0, 1).all() and table["label_agreement"].between(0, 1).all()
for name in names:
    rec = recs[name]
    p = context[name]["mdm"].params
    assert rec["alpha"].between(p["alpha_min"] - 1e-6, p["alpha_max"] + 1e-6).all()
    acc = rec["status"] == "accepted"
    assert (rec.loc[acc, "saliency_kept"] >= p["delta"] - 1e-5).all()
    orig = table[(table.dataset == name) & (table.method == "no_aug")].iloc[0]
    assert orig["changed"] == 0 and orig["psnr_in"] == np.inf
print("augmentation checks passed")
