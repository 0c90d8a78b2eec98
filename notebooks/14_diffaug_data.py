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
# # 14 · DiffAug data: CVC-ClinicDB, sequence groups and a grouped split (paper 001)
#
# DiffAug (`../shared/papers/001_*.txt`) augments polyp segmentation with polyps inpainted
# by a text- and mask-conditioned latent diffusion model and filtered by a single-step
# latent segmenter. This notebook prepares its data:
#
# 1. the **folder loader** (`mdlib.data.segmentation.load_segmentation_folder`): any
#    `images/` + `masks/` pair with the same file names, every pair validated before work
#    starts (missing or unreadable file, size mismatch, non-binary mask, empty mask: a
#    `DataError` naming the file); frames in natural order (an unsorted glob mixes
#    sequences);
# 2. **sequence groups**: CVC-ClinicDB's 609 frames (612 minus 133, 419, 480) come from 29
#    sequences of colonoscopy videos and neighbouring frames are near-copies, so a random
#    frame split leaks them into the test set. The dataset's own README publishes the
#    frame-to-sequence table; the split uses it. A consecutive-frame similarity rule (for
#    folders without such a table) is checked against it here;
# 3. a fixed, seeded **grouped split** of about 488 train+val / 121 test frames (the paper's
#    sizes), validation taken from train by group, saved as CSV;
# 4. the **small-polyp** definition used by the lesion-level metrics.
#
# Code: `mdlib/data/segmentation.py`, `mdlib/metrics/segmentation.py`,
# `mdlib/studies/diffaug/`. Figures and tables: `figures/<profile>/14_*`.

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
SIMILARITY_THRESHOLD = 0.4   # consecutive-frame rule: histogram intersection below it starts a group

# %%
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import display
from mdlib import paths, plots, profiles
from mdlib.data import DataError
from mdlib.io import write_json
from mdlib.data import segmentation as segdata
from mdlib.metrics import segmentation as segm
from mdlib.studies.diffaug import figures as dfig
from mdlib.studies.diffaug import study

t_start = time.time()
prof = profiles.load(PROFILE)
S = study.settings(prof)          # checked before any work starts
out = paths.figures_dir(prof["name"])
size = int(S["image_size"])
root = Path(S["data"].get("root") or paths.data_root() / "segmentation" / "CVC-ClinicDB_256")
print(f"profile={prof['name']} image_size={size} data={root}")

# %% [markdown]
# ## Load and validate every frame and mask
#
# At native size (256 px) for the sequence rule, and at the working size (images
# antialiased-bilinear, masks binarised at 127, resampled, thresholded again).

# %%
t0 = time.time()
native = segdata.load_segmentation_folder(root, None, name="cvc_clinicdb")
full = study.full_dataset(prof)
print(native.summary(), f"({time.time() - t0:.1f} s with the cache)")
print(full.summary())
print("first frames in natural order:", list(native.ids[:12]))
missing = sorted(set(range(1, 613)) - {segdata.frame_number(i) for i in native.ids})
print("frame numbers absent:", missing)

# %% [markdown]
# ### Bad inputs are refused before any work starts
#
# A copy of three frames with one problem each, and the error the loader gives.

# %%
tmp = Path(tempfile.mkdtemp())
cases = {}
for case in ("missing mask", "size mismatch", "non-binary mask", "empty mask", "unreadable image"):
    d = tmp / case.replace(" ", "_")
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    for i in native.ids[:3]:
        shutil.copy(root / "images" / f"{i}.jpg", d / "images" / f"{i}.jpg")
        shutil.copy(root / "masks" / f"{i}.jpg", d / "masks" / f"{i}.jpg")
    from PIL import Image
    bad = native.ids[1]
    if case == "missing mask":
        (d / "masks" / f"{bad}.jpg").unlink()
    elif case == "size mismatch":
        Image.open(d / "masks" / f"{bad}.jpg").resize((128, 128)).save(d / "masks" / f"{bad}.jpg")
    elif case == "non-binary mask":
        Image.open(d / "images" / f"{bad}.jpg").convert("L").save(d / "masks" / f"{bad}.jpg")
    elif case == "empty mask":
        Image.new("L", (256, 256)).save(d / "masks" / f"{bad}.jpg")
    else:
        (d / "images" / f"{bad}.jpg").write_bytes(b"not an image")
    try:
        segdata.load_segmentation_folder(d, 64, cache=False)
        cases[case] = "accepted (wrong!)"
    except DataError as e:
        cases[case] = str(e).replace(str(tmp), "<tmp>")
shutil.rmtree(tmp)
bad_inputs = pd.DataFrame({"case": list(cases), "error": list(cases.values())})
with pd.option_context("display.max_colwidth", 200):
    display(bad_inputs)

# %% [markdown]
# ## Sequence groups: the published table, and the similarity rule checked against it
#
# The rule: frames in natural order; each frame's colour histogram (16 levels per channel);
# a frame starts a new group when its histogram intersection with each of the last 5 frames
# of the current group is below `SIMILARITY_THRESHOLD`. A low threshold merges neighbouring
# sequences rather than splitting one: merging costs split balance, splitting leaks.

# %%
published = segdata.published_sequences(native.ids)
derived, sim = segdata.sequence_groups_by_similarity(native.images, SIMILARITY_THRESHOLD,
                                                     return_similarity=True)
agree = segdata.group_agreement(derived, published)
groups_check = pd.DataFrame([{"rule": f"similarity < {SIMILARITY_THRESHOLD}", **agree}])
groups_check.to_csv(out / "14_groups_check.csv", index=False)
display(groups_check)
seq_sizes = pd.Series(published).value_counts().sort_index()
print(f"{len(seq_sizes)} published sequences, {seq_sizes.min()}-{seq_sizes.max()} frames each")
fig = dfig.similarity_rule(np.array([segdata.frame_number(i) for i in native.ids]), sim,
                           published, SIMILARITY_THRESHOLD)
fig.axes[0].set_title(f"Consecutive-frame rule vs the published table: ARI {agree['ari']:.2f}, "
                      f"{agree['n_derived']} groups, {agree['sequences_split']} sequences split", fontsize=9)
plots.savefig(fig, out / "14_sequence_rule.png")

# %% [markdown]
# ## The grouped split (seeded), saved as CSV
#
# Test: the shortest prefix of a seeded random permutation of the 29 sequences whose frame
# count is closest to 121 (best of 2000 draws); validation: the same from the remaining
# sequences with target 60; the rest trains. The split does not depend on the image size.

# %%
lab = full.meta["split"]
split = segdata.split_table(full, lab)
split.to_csv(out / "14_split.csv", index=False)
srun = study.split_run(prof)   # the split the runs of this profile use (subset on smoke)
split_summary = (split.groupby("split").agg(frames=("id", "size"), sequences=("group", "nunique"),
                                            foreground=("foreground", "mean"))
                 .reindex(["train", "val", "test"]).reset_index())
split_summary.to_csv(out / "14_split_summary.csv", index=False)
display(split_summary)
fig = dfig.split_groups(split)
plots.savefig(fig, out / "14_split.png")

# %% [markdown]
# ## Lesions and the small-polyp definition
#
# A lesion is an 8-connected component of a mask with at least 0.05% of the frame; it is
# **small** below 3% of the frame (about the first quartile of lesion areas); it is
# **detected** when the IoU between it and the predicted components touching it is at
# least 0.5 (`mdlib.metrics.segmentation`).

# %%
rows = []
for sp in ("train", "val", "test"):
    t = segm.lesion_table(full.m(sp).astype(bool), full.m(sp).astype(bool),
                          small_frac=S["metrics"]["small_frac"])
    rows.append({"split": sp, "frames": len(full.index(sp)), "lesions": len(t),
                 "small_lesions": int(t.small.sum()), "frames_with_small": int(t[t.small].image.nunique()),
                 "area_q25": t.area_frac.quantile(0.25), "area_median": t.area_frac.median()})
lesion_summary = pd.DataFrame(rows)
lesion_summary.to_csv(out / "14_lesions.csv", index=False)
display(lesion_summary.round(4))
t_train = segm.lesion_table(full.m("train").astype(bool), full.m("train").astype(bool))
fig = dfig.lesion_areas(t_train.area_frac, S["metrics"]["small_frac"], size)
plots.savefig(fig, out / "14_lesion_areas.png")

# %% [markdown]
# ## Examples (outline: mask) from every split

# %%
pick = np.concatenate([np.random.default_rng(0).choice(full.index(sp), 4, replace=False)
                       for sp in ("train", "val", "test")])
titles = [f"{full.ids[i]} · seq {full.groups[i]} · {lab[i]}" for i in pick]
fig = dfig.examples(full.images[pick], full.masks[pick], titles, ncol=6,
                    title=f"CVC-ClinicDB at {size} px (frame · sequence · split)")
plots.savefig(fig, out / "14_examples.png")

# %% [markdown]
# ## Checks

# %%
assert len(native) == 609 and missing == [133, 419, 480], (len(native), missing)
assert [segdata.frame_number(i) for i in native.ids] == sorted(segdata.frame_number(i) for i in native.ids)
assert len(np.unique(published)) == 29
assert all(v != "accepted (wrong!)" for v in cases.values()), cases
for case, msg in cases.items():   # each error names the offending file
    assert str(native.ids[1]) in msg, (case, msg)
by_group = split.groupby("group").split.nunique()
assert (by_group == 1).all(), "a sequence lies in two splits"
n = split.split.value_counts()
assert abs(n["test"] - 121) <= 5 and abs(n["train"] + n["val"] - 488) <= 5, n
assert agree["sequences_split"] == 0, "the similarity rule splits a published sequence (leak risk)"
assert lesion_summary.small_lesions.sum() > 0 and (lesion_summary.lesions >= lesion_summary.frames).all()
assert (out / "14_split.csv").is_file() and srun.done
write_json(out / "14_wall.json", {"wall_s": time.time() - t_start})
print("data checks passed")
