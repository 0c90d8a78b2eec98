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
# # 16 · DiffAug: does adding synthetic polyps help? Tables 2-4, 6, 7 (paper 001)
#
# Segmenters trained on the real training frames alone and with the gated synthetic
# samples of notebook 15, every arm of a model family with the **same optimizer steps**,
# selected on validation Dice, tested once, over the profile's seeds (a seed fixes the
# initialisation and the random streams of batches, augmentation and noise, so arms of one
# seed are matched pairs; an arm with synthetic images draws its batches from a larger
# pool, so the initialisation is shared and the batches are not):
#
# * **Table 2**: U-Net, U-Net + standard augmentation (flips, rotation, scaling, elastic; one
#   draw moves image and mask), the latent segmenter; each without and with DiffAug;
# * **Table 3**: lesion-level detection of small polyps (below `metrics.small_frac` of the
#   frame; detected when the IoU with the predicted components touching it reaches
#   `metrics.detect_iou`; both in `16_table3.csv`), FNR, and pixel specificity on the
#   frames that hold one;
# * **Table 4**: throughput, side by side in one run: the U-Net, the latent segmenter with
#   single-step and with iterative (50-step DDIM) inference, encoding and decoding
#   included; generator samples/s;
# * **Table 6**: ablation on the U-Net: without text, without the gate, a single prompt,
#   the iterative gate, without synthetic data;
# * **Table 7**: 0.5x to 5x synthetic images per real one.
#
# Statistics (`mdlib/studies/diffaug/analysis.py`): the **primary hypothesis**, declared
# before the run in the profile (`diffaug.primary`): the U-Net with DiffAug beats the
# U-Net without it on mean test Dice; paired t-test over seeds and a bootstrap over test
# frames **resampled by sequence**. Every other comparison is one family, Holm-adjusted.
# The smallest difference the seeds could detect is reported with each test.
#
# A trained segmenter can be evaluated on any other `images/` + `masks/` folder pair
# (`EXTERNAL_FOLDER`, or `python -m mdlib.studies.diffaug.evaluate RUN_DIR FOLDER`).

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
JOBS = None               # worker processes for the segmenter grid (None: diffaug.jobs)
EXTERNAL_FOLDER = None    # another polyp dataset (images/ + masks/) to evaluate on, e.g. Kvasir-SEG
EXTERNAL_ALLOW_EMPTY = False

# %%
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import display
from mdlib import paths, plots
from mdlib.io import write_json
from mdlib.studies.diffaug import analysis, bench, evaluate, study
from mdlib.studies.diffaug import figures as dfig

t_start = time.time()
prof, S, jobs, threads, out, ds = study.setup(PROFILE, JOBS)
mult = float(S["multiple"])
print(f"profile={prof['name']} {ds.summary()} seeds={S['seeds']} jobs={jobs} threads={threads}")
print(f"{len(study.grid(prof))} segmenter runs in the grid")

# %% [markdown]
# ## Train the grid (finished runs are loaded; a killed grid resumes)

# %%
t0 = time.time()
df = study.run_grid(prof, jobs)
print(f"grid done ({time.time() - t0:.0f} s)")
assert len(df) == len(study.grid(prof)), "runs of the grid are missing"
df.to_csv(out / "16_runs.csv", index=False)
metrics = ["test_dice", "test_iou", "test_pooled_dice", "test_sensitivity", "test_precision",
           "test_specificity", "test_fnr", "test_small_sensitivity", "test_small_fnr",
           "test_small_specificity", "val_dice"]
summ = analysis.summary_table(df, metrics)
summ = summ.merge(df.groupby("label").agg(n_synthetic=("n_synthetic", "mean"), n_real=("n_real", "mean"),
                                          family=("family", "first"), variant=("variant", "first"),
                                          gate=("gate", "first"), multiple=("multiple", "first")).reset_index(),
                  on="label")
summ.to_csv(out / "16_summary.csv", index=False)

# %% [markdown]
# ## Statistics: the primary hypothesis and the Holm family

# %%
L = study.arm_label
A = study.arm
prim_model = S["primary"]["model"]
primary = (L(A(prim_model, "text", "single", mult)), L(A(prim_model)), S["primary"]["metric"])
others = []
for fam in study.MODELS:
    if fam != prim_model:
        others.append((L(A(fam, "text", "single", mult)), L(A(fam)), "test_dice"))
abl = S["ablation_model"]
full_abl = L(A(abl, "text", "single", mult))
for v, g in (("no_text", "single"), ("text", "none"), ("single_prompt", "single"), ("text", "iterative")):
    others.append((L(A(abl, v, g, mult)), full_abl, "test_dice"))
for m in S["multiples"]:
    if float(m) != mult:
        others.append((L(A(abl, "text", "single", m)), L(A(abl)), "test_dice"))
for fam in study.MODELS:   # Table 3: small-polyp detection, lesions resampled by sequence
    others.append((L(A(fam, "text", "single", mult)), L(A(fam)), "test_small_sensitivity", "lesion"))
tests = analysis.test_family(df, primary, others)
tests.to_csv(out / "16_tests.csv", index=False)
show = ["role", "a", "b", "metric", "diff_seed_mean", "diff_seed_ci95", "t_p", "t_p_adj",
        "boot_lo", "boot_hi", "boot_p", "boot_p_adj", "perm_p", "adjustment", "detectable_t",
        "detectable_boot", "n_groups"]
display(tests[show].round(4))

# %% [markdown]
# ## Table 2: Dice and IoU (mean ± std over seeds) with the paired test against the same model without synthetic data

# %%
def pm(r, m, d=3):
    return f"{r[m + '_mean']:.{d}f} ± {r[m + '_std']:.{d}f}"

t2_rows = []
for fam in study.MODELS:
    for a in (A(fam), A(fam, "text", "single", mult)):
        r = summ[summ.label == L(a)].iloc[0]
        row = {"model": study.MODEL_LABELS[fam], "synthetic": "none" if not a["synthetic"] else f"DiffAug {mult:g}x",
               "label": L(a), "seeds": int(r.seeds), "n_synthetic": int(r.n_synthetic),
               "dice_mean": r.test_dice_mean, "dice_std": r.test_dice_std,
               "iou_mean": r.test_iou_mean, "iou_std": r.test_iou_std,
               "Dice": pm(r, "test_dice"), "IoU": pm(r, "test_iou")}
        if a["synthetic"]:  # its image-level test against the same model without (Dice, or the primary's metric)
            t = analysis.test_row(tests, L(a), L(A(fam)))
            row.update(diff_vs_without=t.diff_seed_mean, metric=t.metric, t_p=t.t_p,
                       boot_lo=t.boot_lo, boot_hi=t.boot_hi, **analysis.shown(t))
        t2_rows.append(row)
table2 = pd.DataFrame(t2_rows)
table2.to_csv(out / "16_table2.csv", index=False)
display(table2.drop(columns=["dice_mean", "dice_std", "iou_mean", "iou_std"]).round(4))
order = [r["label"] for r in t2_rows]
fig = dfig.seeds_plot(df, order)
plots.savefig(fig, out / "16_table2.png")

# %% [markdown]
# ## Table 3: small polyps (lesion-level sensitivity, FNR; pixel specificity on their frames)

# %%
t3_rows = []
for r in t2_rows:
    s_ = summ[summ.label == r["label"]].iloc[0]
    row = {"label": r["label"], "n_small_lesions": int(df[df.label == r["label"]]["test_small_n_small"].iloc[0]),
           "sensitivity_mean": s_.test_small_sensitivity_mean, "sensitivity_std": s_.test_small_sensitivity_std,
           "fnr_mean": s_.test_small_fnr_mean, "specificity_mean": s_.test_small_specificity_mean,
           "specificity_std": s_.test_small_specificity_std,
           "Sensitivity": pm(s_, "test_small_sensitivity"), "FNR": f"{s_.test_small_fnr_mean:.3f}",
           "Specificity": pm(s_, "test_small_specificity"),
           **study.lesion_rule(prof)}
    t = analysis.test_row(tests, r["label"], unit="lesion")
    if t is not None:
        row.update(diff_vs_without=t.diff_seed_mean, boot_lo=t.boot_lo, boot_hi=t.boot_hi,
                   **analysis.shown(t))
    t3_rows.append(row)
table3 = pd.DataFrame(t3_rows)
table3.to_csv(out / "16_table3.csv", index=False)
display(table3[["label", "n_small_lesions", "Sensitivity", "FNR", "Specificity"] +
               [c for c in ("diff_vs_without",) + analysis.SHOWN if c in table3]].round(4))

# %% [markdown]
# ## Table 4: throughput, measured side by side in one run (batched, encoding and decoding included)

# %%
tab4, breakdown = bench.run(prof)
tab4.to_csv(out / "bench_diffaug.csv", index=False)
breakdown.to_csv(out / "bench_diffaug_breakdown.csv", index=False)
display(tab4.round(4))
display(breakdown.round(4))
fig = dfig.throughput(tab4)
plots.savefig(fig, out / "16_table4_throughput.png")

# %% [markdown]
# ## Table 6: ablation (U-Net; each arm with the same steps and the same number of synthetic images)

# %%
t6 = [("DiffAug (full)", A(abl, "text", "single", mult)), ("w/o text guidance", A(abl, "no_text", "single", mult)),
      ("w/o validation gate", A(abl, "text", "none", mult)), ("w/o diverse prompts (one prompt)", A(abl, "single_prompt", "single", mult)),
      ("iterative gate instead of single-step", A(abl, "text", "iterative", mult)), ("w/o synthetic data", A(abl))]
acc = pd.read_csv(out / "15_acceptance.csv").set_index("variant") if (out / "15_acceptance.csv").is_file() else None
gate_speed = tab4.set_index("method").images_per_s
t6_rows = []
for name, a in t6:
    r = summ[summ.label == L(a)].iloc[0]
    row = {"configuration": name, "label": L(a), "n_synthetic": int(r.n_synthetic),
           "dice_mean": r.test_dice_mean, "dice_std": r.test_dice_std, "iou_mean": r.test_iou_mean,
           "iou_std": r.test_iou_std, "fnr_mean": r.test_fnr_mean,
           "small_fnr_mean": r.test_small_fnr_mean, "Dice": pm(r, "test_dice"), "IoU": pm(r, "test_iou")}
    sy = a["synthetic"]
    if sy and sy["gate"] != "none":
        key = [k for k in gate_speed.index if ("iterative" in k) == (sy["gate"] == "iterative") and "segmenter" in k][0]
        row["gate_images_per_s"] = float(gate_speed[key])
        if acc is not None:
            col = "acceptance_iterative" if sy["gate"] == "iterative" else "acceptance_single"
            row["acceptance"] = float(acc.loc[sy["variant"], col])
    t = analysis.test_row(tests, L(a))
    if t is not None:
        row.update(diff=t.diff_seed_mean, vs=t.b, **analysis.shown(t))
    t6_rows.append(row)
table6 = pd.DataFrame(t6_rows)
table6.to_csv(out / "16_table6.csv", index=False)
display(table6.drop(columns=["dice_mean", "dice_std", "iou_mean", "iou_std"]).round(4))

# %% [markdown]
# ## Table 7: synthetic images per real one

# %%
t7_rows = []
base = summ[summ.label == L(A(abl))].iloc[0]
for m in [0.0] + [float(v) for v in S["multiples"]]:
    a = A(abl) if m == 0 else A(abl, "text", "single", m)
    r = summ[summ.label == L(a)].iloc[0]
    row = {"multiple": m, "label": L(a), "n_real": int(r.n_real), "n_synthetic": int(r.n_synthetic),
           "dice_mean": r.test_dice_mean, "dice_std": r.test_dice_std, "dice_ci95": r.test_dice_ci95,
           "iou_mean": r.test_iou_mean, "iou_std": r.test_iou_std, "Dice": pm(r, "test_dice"), "IoU": pm(r, "test_iou")}
    t = analysis.test_row(tests, L(a), L(A(abl)))
    if t is not None:
        row.update(diff_vs_real=t.diff_seed_mean, **analysis.shown(t))
    t7_rows.append(row)
table7 = pd.DataFrame(t7_rows)
table7.to_csv(out / "16_table7.csv", index=False)
display(table7.drop(columns=["dice_mean", "dice_std", "dice_ci95", "iou_mean", "iou_std"]).round(4))
fig = dfig.multiples_plot(table7, tests, df)
plots.savefig(fig, out / "16_table7.png")

# %% [markdown]
# ## A trained segmenter on another folder pair, without retraining
#
# `EXTERNAL_FOLDER` (e.g. Kvasir-SEG's `images/` + `masks/`), or the command
# `python -m mdlib.studies.diffaug.evaluate RUN_DIR FOLDER`. Without one, the command is
# exercised on a folder holding copies of this split's test frames, where it must give
# exactly the run's own per-frame Dice.

# %%
ev_run = df[df.label == L(A(abl, "text", "single", mult))].sort_values("seed").run_dir.iloc[0]
if EXTERNAL_FOLDER:
    ext_pi, ext = evaluate.evaluate_folder(ev_run, EXTERNAL_FOLDER, require_foreground=not EXTERNAL_ALLOW_EMPTY)
    pd.DataFrame([ext]).to_csv(out / "16_external.csv", index=False)
    display(pd.DataFrame([ext]).T)
tmp = Path(tempfile.mkdtemp())
root = Path(S["data"].get("root") or paths.data_root() / "segmentation" / "CVC-ClinicDB_256")
for sub in ("images", "masks"):
    (tmp / sub).mkdir()
    for i in ds.ids_of("test"):
        shutil.copy(root / sub / f"{i}.jpg", tmp / sub / f"{i}.jpg")
self_pi, self_summ = evaluate.evaluate_folder(ev_run, tmp)
shutil.rmtree(tmp)
own = pd.read_csv(Path(ev_run) / "test_per_image.csv", dtype={"id": str})
cmp_ = self_pi.merge(own, on="id", suffixes=("_cmd", "_run"))
print(f"command on the copied test frames: mean Dice {self_summ['dice']:.4f}; largest per-frame "
      f"difference to the run's own record {np.abs(cmp_.dice_cmd - cmp_.dice_run).max():.2e}")

# %% [markdown]
# ## Wall time of each part

# %%
tim = study.timing(prof)
nb_wall = []
for nb in ("14", "15"):
    f = out / f"{nb}_wall.json"
    if f.is_file():
        nb_wall.append({"part": f"notebook {nb} (its last execution)", "task": "notebook", "run": "",
                        "wall_s": json.loads(f.read_text())["wall_s"], "finished": ""})
nb_wall.append({"part": "notebook 16 (this execution)", "task": "notebook", "run": "",
                "wall_s": time.time() - t_start, "finished": ""})
tim = pd.concat([tim, pd.DataFrame(nb_wall)], ignore_index=True)
tim.to_csv(out / "16_timing_runs.csv", index=False)
tim["kind"] = tim.part.str.replace(r" s\d+$", "", regex=True)
tim_summary = tim.groupby(["task", "kind"], sort=False).agg(runs=("wall_s", "size"), wall_min=("wall_s", lambda v: v.sum() / 60)).reset_index()
tim_summary.to_csv(out / "16_timing.csv", index=False)
display(tim_summary.round(2))

# %% [markdown]
# ## Checks

# %%
assert len(df) == len(study.grid(prof)) and df.seed.nunique() == len(S["seeds"])
for m in ("test_dice", "test_iou", "val_dice"):
    v = df[m].to_numpy(float)
    assert np.isfinite(v).all() and ((v >= 0) & (v <= 1)).all(), m
# equal budgets: every run of a family trained the same number of steps
steps = {f: study.train_config(prof, f, 0).steps for f in study.MODELS}
for r in df.itertuples():
    h = pd.read_csv(Path(r.run_dir) / "history.csv")
    assert int(h.step.max()) == steps[r.family], (r.label, h.step.max())
# the synthetic counts: nested and as requested (or recorded short when a pool hit its cap)
t7n = table7.set_index("multiple").n_synthetic
assert t7n.is_monotonic_increasing
n_real = len(ds.index("train"))
syn = df[df.variant != "none"]
assert (syn.n_synthetic <= np.round(syn.multiple * n_real) + 1e-9).all()
assert (df[df.variant == "none"].n_synthetic == 0).all()
# the primary test and the Holm family are complete
# (a p-value is undefined, NaN, where every seed gives the same difference; Holm leaves it)
assert (tests.role == "primary").sum() == 1
assert (tests.t_p_adj.isna() == tests.t_p.isna()).all()
assert (tests[tests.role == "primary"].t_p_adj.fillna(-1) == tests[tests.role == "primary"].t_p.fillna(-1)).all()
sec = tests[(tests.role == "secondary") & tests.t_p.notna()]
assert (sec.t_p_holm >= sec.t_p - 1e-12).all()
# the throughput table: three segmenter rows and the generator, positive rates
assert len(tab4) == 4 and (tab4.images_per_s > 0).all()
# the evaluation command reproduces the run's own test metrics on the same frames
assert np.abs(cmp_.dice_cmd - cmp_.dice_run).max() < 1e-6
for f in ("16_table2.csv", "16_table3.csv", "bench_diffaug.csv", "16_table6.csv", "16_table7.csv",
          "16_tests.csv", "16_timing.csv", "16_table2.png", "16_table7.png"):
    assert (out / f).is_file(), f
write_json(out / "16_wall.json", {"wall_s": time.time() - t_start})
print("results checks passed")
