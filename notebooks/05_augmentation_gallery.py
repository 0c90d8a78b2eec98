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
# exactly once), with the profile's parameters (`mdlib.studies.meddiffusemix.study.method_params`),
# for every dataset and image size of the study, with the study's own resources (its
# guidance classifier, generator and training subset):
#
# * the paper's **Fig. 3**: the original `x1`, MedDiffuseMix's partner `x2`, Mixup,
#   SaliencyMix, DBA and MedDiffuseMix side by side, with MedDiffuseMix's smoothed mask
#   `M_s` and the change `|x_aug - x1|` on colour bars (MedDiffuseMix changes little, and
#   only where `M_s > 0`, so the change map is what shows it);
# * the paper's **Fig. 7**: `x1` and its Grad-CAM, the partner and the mask, the
#   MedDiffuseMix image and its Grad-CAM (guidance classifier `g`, `x1`'s label), and the
#   change;
# * two tables the paper does not give. (a) **Saliency preservation judged independently**:
#   MedDiffuseMix accepts a sample when `g` keeps enough of its Grad-CAM inside `R_h(x1)`
#   (Eq. 8), so `g`'s own score is its acceptance rule, not evidence. The judge is a
#   classifier of another architecture and seed (profile section `judge`), trained on the
#   same training data only: its own Grad-CAM of `x1` defines its high region, and the
#   table gives how much of it the augmented image keeps, with 95% intervals over images,
#   paired against No Aug on the same images (Holm over the methods). (b) The guidance
#   classifier's view (the quantity the method enforces), PSNR / SSIM to `x1` inside and
#   outside `R_h(x1)`, and MedDiffuseMix's acceptance rate, retries and alpha.
#
# Online methods (Mixup, SaliencyMix) mix within the batch of selected images and are
# applied with `p = 1` here; in training they augment a share `p` of each batch.
# SaliencyMix computes OpenCV's fine-grained saliency box **per source image** with rows
# and columns the right way round (the official code uses one source's map for the whole
# batch and swaps x and y).

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
DATASETS = None   # None: the profile's study_datasets (a list or "a,b")
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
configs = {(n if s == prof["image_size"] else f"{n}_{s}"): (n, p) for n, s, p in study.study_configs(prof, DATASETS)}
names = list(configs)
n_table = N_TABLE or (prof.get("augment") or {}).get("table_images", 256)
out = paths.figures_dir(prof["name"])
methods = list(study.ALL_METHODS)
print(f"profile={prof['name']} datasets={names} methods={methods} n_table={n_table}")

# %% [markdown]
# ## Apply every method to the same images

# %%
results, context = {}, {}
for name, (ds_name, p) in configs.items():
    ds, _ = tasks.load_data(p, ds_name, SEED)
    x_all, y_all = to_tensor(ds.x("train")), torch.from_numpy(ds.y("train"))
    rng = np.random.default_rng(SEED)
    idx = torch.from_numpy(np.sort(rng.choice(len(y_all), min(n_table, len(y_all)), replace=False)))
    mdm = augment.get("meddiffusemix", **study.method_params(p, ds_name, "meddiffusemix"))
    extras = tasks.bank_resources(p, ds_name, SEED, mdm)
    judge, jrun = tasks.guidance_model(p, ds_name, SEED, section="judge")
    context[name] = dict(ds=ds, x=x_all, y=y_all, idx=idx, extras=extras, mdm=mdm, judge=judge,
                         judge_run=jrun)
    for m in methods:
        params = study.method_params(p, ds_name, m)
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
    rec = results[name, "meddiffusemix"][2]
    partners = rec["partner"].to_numpy()[rows]
    x1 = results[name, "no_aug"][0][rows]
    xa = results[name, "meddiffusemix"][0][rows]
    cols = {"Original x1": x1, "partner x2": c["x"][partners], "Mixup": results[name, "mixup"][0][rows],
            "SaliencyMix": results[name, "saliencymix"][0][rows], "DBA": results[name, "dba"][0][rows],
            "MedDiffuseMix": xa}
    ms = preserve.mdm_masks(c["mdm"], c["extras"]["saliency"], c["idx"][rows], partners).numpy()
    change = (xa - x1).abs().mean(1).numpy()
    maps = {"mask M_s": (ms, "magma", 0, 1, "M_s"),
            "|x_aug - x1|": (change, "viridis", 0, max(float(change.max()), 1e-3), "MedDiffuseMix change")}
    labels = [c["ds"].class_names[int(k)] for k in y_sel[rows]]
    fig = figures.augmentation_grid(cols, labels, title=f"{name}: augmentation methods (Fig. 3)", maps=maps)
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
    partners = results[name, "meddiffusemix"][2]["partner"].to_numpy()[rows]
    ms = preserve.mdm_masks(c["mdm"], c["extras"]["saliency"], c["idx"][rows], partners).numpy()
    fig = figures.mdm_gradcam_figure(x1, cam1, xa, cama, labels, x2=c["x"][partners], mask=ms,
                                     cam_title="Grad-CAM of g",
                                     title=f"{name}: Grad-CAM before and after MedDiffuseMix (Fig. 7)")
    plots.savefig(fig, out / f"05_fig7_{name}.png")

# %% [markdown]
# ## Saliency preservation judged by an independent classifier
#
# `judge_kept`: the judge's Grad-CAM of the augmented image, averaged inside the judge's own
# high region of `x1` (95% t-interval over images); `judge_label_agreement`: the judge
# predicts the augmented label's dominant class. Paired differences against No Aug on the
# same images follow.

# %%
judge_tables, judge_tests, judge_info = [], [], []
for name in names:
    c = context[name]
    res = {m: results[name, m] for m in methods}
    t, per = preserve.judge_table(res, c["x"], c["y"], c["idx"], c["judge"], c["mdm"].params["tau_h"],
                                  c["mdm"].params["delta"])
    t.insert(0, "dataset", name)
    judge_tables.append(t)
    pt = preserve.paired_vs_reference(per, "no_aug", "judge_kept")
    pt.insert(0, "dataset", name)
    judge_tests.append(pt)
    jm = c["judge_run"].read_csv("metrics.csv").set_index("metric")["value"]
    judge_info.append({"dataset": name, "judge_model": c["judge_run"].config["train"]["model"],
                       "judge_seed": c["judge_run"].config["train"]["seed"],
                       "guidance_model": c["extras"]["guidance"].__class__.__name__,
                       "judge_val_acc": jm["acc"], "judge_val_auc": jm["auc"]})
judge_table = pd.concat(judge_tables, ignore_index=True)
judge_tests = pd.concat(judge_tests, ignore_index=True)
judge_info = pd.DataFrame(judge_info)
judge_table.to_csv(out / "05_preservation_judge.csv", index=False)
judge_tests.to_csv(out / "05_preservation_judge_tests.csv", index=False)
judge_info.to_csv(out / "05_judge.csv", index=False)
display(judge_info.round(3)); display(judge_table.round(3)); display(judge_tests.round(4))

# %% [markdown]
# ## The guidance classifier's view (what MedDiffuseMix enforces), image similarity

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
    # the judge is not the guidance classifier (another architecture or seed)
    jr, gr = context[name]["judge_run"], context[name]["extras"]["resources"]["guidance"]
    assert jr.hash != gr and jr.task == "judge"
    # No Aug's judge score is the judge's saliency of x1 itself inside its own region
    c = context[name]
    j1 = gradcam(c["judge"], c["x"][c["idx"]], c["y"][c["idx"]]).cpu()
    r = j1 > c["mdm"].params["tau_h"]
    n = r.flatten(1).sum(1)
    own = ((j1 * r).flatten(1).sum(1) / n.clamp(min=1))[n > 0].mean()
    jt = judge_table[(judge_table.dataset == name) & (judge_table.method == "no_aug")].iloc[0]
    assert abs(float(own) - jt.judge_kept) < 1e-5, (name, float(own), jt.judge_kept)
assert judge_table["judge_kept"].between(0, 1).all()
print("augmentation checks passed")
