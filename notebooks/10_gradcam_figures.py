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
# # 10 · Grad-CAM of the trained classifiers (Figs. 6 and 7)
#
# Where do the study's classifiers look? This notebook **reads finished runs only** (the
# classifiers trained by notebook 06 through the sweeps, `runs/<TASK>/<profile>/`); it never
# trains, except on the `smoke` profile, where it first makes the seconds-long seed-`SEED`
# runs it needs if they are missing (so CI does not depend on which notebooks ran before).
# On other profiles missing runs stop the notebook with the command that makes them.
#
# * **Fig. 6**: per dataset, `PER_CLASS` test images of each class (seeded choice), with the
#   Grad-CAM of the classifier trained **without augmentation** and of the one trained with
#   **MedDiffuseMix** (seed `SEED`, backbone `MODEL`), each for the image's true label; the
#   panel title gives the probability that classifier assigns to the true class (green:
#   predicted correctly, red: not).
# * **Fig. 7**: per dataset, training images `x1` and their MedDiffuseMix bank images
#   (status `accepted`, from the MedDiffuseMix run's bank), with the Grad-CAM of the
#   MedDiffuseMix-trained classifier on both, for `x1`'s label.
# * **CAM concentration** (`10_cam_stats.csv`): per dataset and classifier, the mean over the
#   whole test split of the share of Grad-CAM mass inside the map's top-20% pixels (uniform
#   map: 0.2; all mass in a fifth of the image or less: 1), next to the run's test accuracy.
#   A higher share means more focused evidence, not necessarily *correct* evidence: read it
#   together with the figures.
#
# Grad-CAM is `mdlib.saliency.gradcam` (target: the true label; last convolutional stage of
# the backbone). The classifiers are rebuilt from `config.json` + `model.safetensors`;
# the Checks cell verifies that the rebuilt models reproduce the runs' recorded test
# probabilities.

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
TASK = "study"        # runs/<TASK>/<profile>/
DATASETS = None       # None: every dataset with both a no_aug and a meddiffusemix run
SEED = 0
MODEL = "small_cnn"
PER_CLASS = 2         # images per class in Figs. 6 and 7

# %%
import numpy as np
import pandas as pd
from IPython.display import display
from mdlib import paths, plots, profiles
from mdlib.runs import tasks
from mdlib.studies.meddiffusemix import analysis, figures
from mdlib.studies.meddiffusemix.analysis import CAM_METHODS, label

prof = profiles.load(PROFILE)
out = paths.figures_dir(prof["name"])
sel = analysis.study_runs(prof, TASK, SEED, MODEL, DATASETS, CAM_METHODS, need_all=True)
names = sorted(sel.dataset.unique())
print(f"profile={prof['name']} task={TASK} seed={SEED} model={MODEL} datasets={names}")
display(sel[["dataset", "method", "variant", "run", "test_acc", "test_auc"]])

# %% [markdown]
# ## Grad-CAM of every test image, both classifiers
#
# One pass per classifier over the whole test split (true-label Grad-CAM and class
# probabilities); the figures below show a few of these maps, the table summarises all.

# %%
data, cams = {}, {}
for name in names:
    for m in CAM_METHODS:
        row = sel[(sel.dataset == name) & (sel.method == m)].iloc[0]
        if name not in data:
            data[name] = tasks.run_data(row.run_dir)
        cams[name, m] = tasks.cams_on_test(row.run_dir, data[name])
stats = pd.DataFrame([analysis.cam_stats_row(name, m, sel[(sel.dataset == name) & (sel.method == m)].iloc[0],
                                              cams[name, m])
                      for name in names for m in CAM_METHODS])
stats.to_csv(out / "10_cam_stats.csv", index=False)
display(stats.round(3))

# %% [markdown]
# ## Fig. 6: test images, Grad-CAM without augmentation and with MedDiffuseMix

# %%
for name in names:
    ds = data[name]
    pick = analysis.pick_per_class(ds.y("test"), PER_CLASS, SEED)
    cols = {label(m): {k: cams[name, m][k][pick] for k in ("maps", "p_true", "correct")}
            for m in CAM_METHODS}
    fig = figures.fig6_gradcam(ds.x("test")[pick], ds.y("test")[pick], ds.class_names, cols,
                                 test_index=pick,
                                 title=f"{name}: Grad-CAM for the true label ({MODEL}, seed {SEED})")
    plots.savefig(fig, out / f"10_fig6_{name}.png")

# %% [markdown]
# ## Fig. 7: training images and their MedDiffuseMix images, MedDiffuseMix classifier
#
# Bank images with status `accepted` (they passed the saliency-preservation check), up to
# `PER_CLASS` per class of `x1`; a class without accepted images is left out (on the smoke
# profile the guidance classifier is barely trained, and its Grad-CAM may have no
# high-saliency region for a whole class).

# %%
fig7 = {}
for name in names:
    row = sel[(sel.dataset == name) & (sel.method == "meddiffusemix")].iloc[0]
    f7 = fig7[name] = analysis.bank_gradcam(row.run_dir, data[name], PER_CLASS, SEED)
    ex = f7["records"]
    if ex.empty:
        print(f"{name}: no accepted MedDiffuseMix image in the bank; Fig. 7 skipped")
        continue
    rows = [f"{data[name].class_names[int(c)]}\ntrain #{int(i)}" for c, i in zip(ex["label"], ex["index"])]
    fig = figures.mdm_gradcam_figure(f7["x1"], f7["cam1"], f7["xa"], f7["cama"], rows, x2=f7["x2"],
                                     mask=f7["mask"], cam_title="Grad-CAM", p1=f7["p1"], pa=f7["pa"],
                                     alphas=ex["alpha"].to_numpy(),
                                     title=f"{name}: MedDiffuseMix-trained classifier ({MODEL}, seed {SEED}); "
                                           "Grad-CAM for x1's label, p(y) its probability, α the mixing weight")
    plots.savefig(fig, out / f"10_fig7_{name}.png")
    display(ex[["index", "partner", "label", "alpha", "status", "saliency_kept"]])

# %% [markdown]
# ## Checks

# %%
share = [c for c in stats.columns if c.startswith("cam_top") and not c.endswith("_std")][0]
assert len(stats) == 2 * len(names) and (out / "10_cam_stats.csv").is_file()
assert stats[share].between(0.2 - 1e-6, 1).all(), stats[share]  # >= a uniform map's share
assert stats["test_acc"].between(0, 1).all() and stats["p_true_mean"].between(0, 1).all()
for (name, m), c in cams.items():
    row = sel[(sel.dataset == name) & (sel.method == m)].iloc[0]
    assert c["maps"].shape == (len(data[name].y("test")),) + data[name].x("test").shape[1:3]
    assert np.isfinite(c["maps"]).all() and c["maps"].min() >= 0 and c["maps"].max() <= 1
    # the rebuilt classifier is the run's: same test probabilities, same accuracy
    np.testing.assert_allclose(c["probs"], tasks.saved_test_probs(row.run_dir), atol=1e-3)
    assert abs(c["correct"].mean() - row.test_acc) <= 1 / len(c["correct"]) + 1e-9
for name in names:
    assert (out / f"10_fig6_{name}.png").is_file()
    ex = fig7[name]["records"]
    if len(ex):
        assert (ex["status"].isin(["accepted", "accepted_unchecked"])).all()
        # x1 is the training image the bank image was made from (same label)
        assert (data[name].y("train")[ex["index"].to_numpy()] == ex["label"].to_numpy()).all()
        for k in ("cam1", "cama"):
            assert np.isfinite(fig7[name][k]).all() and fig7[name][k].max() <= 1
        assert ((fig7[name]["xa"] >= 0) & (fig7[name]["xa"] <= 1)).all()
        assert (out / f"10_fig7_{name}.png").is_file()
assert any(len(f["records"]) for f in fig7.values()), "no accepted MedDiffuseMix image in any bank"
print("Grad-CAM figure checks passed")
