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
# # 15 · DiffAug: autoencoder, generator, gate and synthetic pools (paper 001)
#
# Every component here is trained on the **training split only** (notebook 14's grouped
# split) and selected on validation:
#
# 1. **autoencoder**: the paper's Stable Diffusion VAE when its weights are present
#    (`autoencoder.pretrained`); offline, a small `AutoencoderKL` trained on the training
#    frames and masks; its reconstruction error on the test frames;
# 2. the **judge**: a U-Net trained on real frames only (Table 2's first row, seed 0); it
#    neither generates nor gates, and judges the samples below;
# 3. the **gate**: the SDSeg-style latent segmenter (Sec. 3.2: frozen encoder, trainable
#    vision encoder, fusion, denoiser over the mask latent; Eq. 12; single-step inference
#    from t = T-1 by Eq. 11), trained on real frames (Table 2's latent row, seed 0);
# 4. the **generator**: latent inpainting `UNet2DConditionModel`, cross-attention to
#    all-MiniLM-L6-v2 token embeddings of prompts composed from each training polyp's
#    measured attributes, Eq. 7 (masked noise loss + preservation term), classifier-free
#    guidance through prompt dropout;
# 5. **synthetic pools** on "normal tissue": another training polyp's mask moved and scaled
#    into a free region of a training frame, inpainted (DDIM, guidance), gated
#    (IoU > theta); three prompt variants (attribute prompts, one generic prompt, no text)
#    sharing one plan, so they differ in the text only;
# 6. **Table 5** (accepted vs rejected), **Fig. 2** (gallery) and whether generated polyps
#    follow their prompts.
#
# Runs: `runs/diffaug_{ae,seg,gen,pool,prompt}/<profile>/` (resumable). Figures and tables:
# `figures/<profile>/15_*`. Code: `mdlib/studies/diffaug/`.

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
JOBS = None          # worker processes (None: the profile's diffaug.jobs; one torch thread each)

# %%
import time

import numpy as np
import pandas as pd
import torch
from IPython.display import display
from mdlib import plots
from mdlib.io import write_json
from mdlib.studies.diffaug import figures as dfig
from mdlib.studies.diffaug import quality, study

t_start = time.time()
prof, S, jobs, threads, out, ds = study.setup(PROFILE, JOBS)
print(f"profile={prof['name']} {ds.summary()} jobs={jobs} torch threads={threads} "
      f"theta={study.theta_setting(prof)}")

# %% [markdown]
# ## Autoencoder and judge side by side; then the generator beside the gate
#
# While the generator trains, the other worker trains the gate and then the segmenters of
# notebook 16 that use no synthetic data (they need nothing from the generator).

# %%
seed0 = int(S["gate"]["seed"])
study.parallel([("autoencoder_run", {"progress": False}),
                ("segmenter_run", {"a": study.arm("unet"), "seed": seed0, "progress": False})],
               prof, jobs, desc="autoencoder | judge")
real_only = [("segmenter_run", {"a": j["arm"], "seed": j["seed"], "progress": False})
             for j in study.grid(prof) if not j["arm"]["synthetic"]
             and (j["arm"], j["seed"]) not in ((study.arm("unet"), seed0), (study.gate_arm(), seed0))]
study.parallel([("generator_run", {"progress": False}),
                ("segmenter_run", {"a": study.gate_arm(), "seed": seed0, "progress": False})]
               + (real_only if jobs > 1 else []), prof, jobs, desc="generator | gate, real-only segmenters")
ae_run = study.autoencoder_run(prof)
codec = study.load_codec(prof, ae_run)
gate, gate_run = study.gate_model(prof, codec, train=False)
judge, judge_run = study.judge_model(prof)
gen_run = study.generator_run(prof)
theta = study.gate_theta(prof)  # a number, or derived from the trained gate on validation
theta_it = study.gate_theta(prof, "iterative")  # the same rule for the iterative gate
print("autoencoder:", ae_run.read_json("source.json"), "scale", ae_run.read_json("scale.json"))
print(f"gate acceptance threshold theta = {theta:.3f} single-step, {theta_it:.3f} iterative "
      f"({study.theta_setting(prof)})")
print("judge:", judge_run.dir.name, "gate:", gate_run.dir.name, "generator:", gen_run.dir.name)

# %% [markdown]
# ### Autoencoder: reconstruction of validation and test frames (and masks)

# %%
rec = ae_run.read_csv("reconstruction.csv").assign(source=ae_run.read_json("source.json")["kind"])
rec.to_csv(out / "15_autoencoder.csv", index=False)
display(rec.round(4))
# one test frame per sequence (neighbouring frames of one video are near-copies)
te = np.sort(np.unique(ds.groups_of("test"), return_index=True)[1])[:6]
x_te = torch.from_numpy(ds.x("test")[te]).permute(0, 3, 1, 2).float() / 255
m_te = torch.from_numpy(ds.m("test")[te])[:, None].float()
with torch.no_grad():
    xr = codec.decode(codec.encode(x_te)).permute(0, 2, 3, 1).numpy()
    mr = (codec.decode_mask(codec.encode_mask(m_te))[:, 0] >= 0.5).numpy()
fig = dfig.reconstructions(ds.x("test")[te], xr, ds.m("test")[te], mr, n=len(te))
plots.savefig(fig, out / "15_autoencoder_reconstructions.png")

# %% [markdown]
# ### Training curves: autoencoder, generator (Eq. 7), gate and judge (validation Dice)

# %%
if ae_run.path("history.csv").is_file():
    h = ae_run.read_csv("history.csv")
    fig = dfig.curves({"autoencoder": h}, "step", {"l1": "L1 reconstruction (crops)"},
                      smooth=max(1, len(h) // 50))
    plots.savefig(fig, out / "15_autoencoder_loss.png")
gh = gen_run.read_csv("history.csv")
fig = dfig.curves({"generator": gh}, "step", {"inside": "noise MSE inside the region",
                                              "outside": "(1 - a_t) noise MSE outside"},
                  logy=True, smooth=max(1, len(gh) // 50))
plots.savefig(fig, out / "15_generator_loss.png")
n_val = len(ds.x("val"))
hg, hj = gate_run.read_csv("history.csv"), judge_run.read_csv("history.csv")
fig = dfig.training_panels({"gate (latent segmenter)": hg, "judge (U-Net)": hj},
                           f"validation Dice ({n_val} frames)")
plots.savefig(fig, out / "15_gate_judge_curves.png")
gm = gate_run.read_csv("metrics.csv")
display(gm[gm.metric.isin(["dice", "iou"])].pivot(index="metric", columns="split", values="value").round(4))

# %% [markdown]
# ### Prompts of the training polyps (measured attributes)

# %%
pt = gen_run.read_csv("prompts.csv")
print(f"{(~pt.mirrored).sum()} training frames (+ mirrors), {pt.prompt.nunique()} distinct prompts")
for k in ("size_word", "shape_word", "colour_word", "surface_word"):
    print(k, pt[~pt.mirrored][k].fillna("(none)").value_counts().to_dict())
with pd.option_context("display.max_colwidth", 120):
    display(pt[~pt.mirrored][["id", "area_frac", "solidity", "redness", "texture", "prompt"]].head(6))

# %% [markdown]
# ## Synthetic pools (generated part by part, gated, resumable)
#
# Each pool grows until enough samples pass the gate for its largest demand (5x the
# training frames for the attribute prompts, 1x for the others and for the iterative gate)
# or until its cap. The iterative gate (the same network, many DDIM steps) scores the
# attribute pool for the ablation.

# %%
t0 = time.time()
pools = study.ensure_pools(prof, jobs)
print(f"pools ready ({time.time() - t0:.0f} s)")
acc_rows = []
for v, r in pools.items():
    info = r.info()
    p = study.read_pool(r, with_images=False)
    placed = p["records"].row >= 0
    it = p["iou_iterative"]
    acc_rows.append({"variant": v, "planned": len(p["records"]), "placed": int(placed.sum()),
                     "accepted_single": int((p["iou_single"] > theta).sum()),
                     "acceptance_single": float((p["iou_single"] > theta).mean()),
                     "gate_iou_mean": float(p["iou_single"].mean()),
                     "scored_iterative": int(np.isfinite(it).sum()),
                     "acceptance_iterative": float((it[np.isfinite(it)] > theta_it).mean()) if np.isfinite(it).any() else np.nan,
                     "need_single": info["need_single"], "parts": info["parts"], "run": r.hash,
                     "theta": theta, "theta_iterative": theta_it,
                     "theta_rule": str(study.theta_setting(prof))})
acceptance = pd.DataFrame(acc_rows)
acceptance.to_csv(out / "15_acceptance.csv", index=False)
display(acceptance.round(3))

# %% [markdown]
# ## Table 5: accepted vs rejected samples (attribute prompts, single-step gate)
#
# Fréchet distance of crops around the synthetic polyps to crops around real training
# polyps, in the judge's encoder features (stage 3), at one common set size over 10 random
# subsets (mean ± std); the real row is the other half of the training polyps: the floor a
# perfect generator would reach at that size.

# %%
pool = study.read_pool(pools["text"])
t5, lpips_msg = quality.table5(pool, (ds.x("train"), ds.m("train")), judge, theta)
t5["lpips_status"] = lpips_msg
t5.to_csv(out / "15_table5.csv", index=False)
print(lpips_msg)
display(t5.round(3))
it = pool["iou_iterative"]
fig = dfig.gate_iou_hist(pool["iou_single"], theta, it[np.isfinite(it)], theta_it,
                         iou_real_val=study.gate_val_iou(prof))
plots.savefig(fig, out / "15_gate_iou.png")
both = np.isfinite(it)
if both.any():
    agree_gates = pd.DataFrame([{"n": int(both.sum()), "theta": theta, "theta_iterative": theta_it,
                                 "single_accepts": float((pool["iou_single"][both] > theta).mean()),
                                 "iterative_accepts": float((it[both] > theta_it).mean()),
                                 "same_decision": float(((pool["iou_single"][both] > theta) == (it[both] > theta_it)).mean()),
                                 "iou_corr": float(np.corrcoef(pool["iou_single"][both], it[both])[0, 1]) if both.sum() > 2 else np.nan}])
    agree_gates.to_csv(out / "15_gate_agreement.csv", index=False)
    display(agree_gates.round(3))

# %% [markdown]
# ### Colour inside the polyp: generated (accepted, rejected; every pool) against real
#
# Pixel statistics inside the intended mask, beside the real training polyps: a realism
# check that no trained network decides.

# %%
colour = [quality.region_colour(ds.x("train"), ds.m("train"), "real training polyps")]
acc_mask = pool["iou_single"] > theta
colour += [quality.region_colour(pool["x"][acc_mask], pool["intended"][acc_mask], "text: accepted"),
           quality.region_colour(pool["x"][~acc_mask], pool["intended"][~acc_mask], "text: rejected")]
for v in ("no_text", "single_prompt"):
    if v in pools:
        pv = study.read_pool(pools[v])
        colour.append(quality.region_colour(pv["x"], pv["intended"], f"{v}: all generated"))
colour = pd.DataFrame(colour)
colour.to_csv(out / "15_colour.csv", index=False)
display(colour.round(3))

# %% [markdown]
# ## Fig. 2: generated polyps with their prompts, accepted and rejected, beside real frames

# %%
k = int(S["figures"].get("gallery", 6))
recs = pool["records"][pool["records"].row >= 0].sort_values("row")
acc_i = np.flatnonzero(pool["iou_single"] > theta)[:k]
rej_i = np.flatnonzero(pool["iou_single"] <= theta)[:k]
cap = lambda r: f"IoU {pool['iou_single'][r]:.3f} · {recs.prompt.iloc[r].replace('colonoscopy frame with ', '')}"
acc = [(pool["x"][r], pool["intended"][r], cap(r)) for r in acc_i]
rej = [(pool["x"][r], pool["intended"][r], cap(r)) for r in rej_i]
# real frames from different sequences (neighbouring frames of one video are near-copies)
seq_first = np.sort(np.unique(ds.groups_of("train"), return_index=True)[1])[:k]
fig = dfig.gallery(ds.x("train")[seq_first], ds.m("train")[seq_first], acc, rej, ncol=k,
                   real_title="real training frames\n(one per sequence)", theta=theta)
plots.savefig(fig, out / "15_fig2_gallery.png")

# %% [markdown]
# ## Do generated polyps follow their prompts?
#
# (a) Pairs: the same frame, mask and noise, one word changed (`small` / `large`,
# `pale` / `reddish`); measured by the judge (predicted area near the mask) and on the
# pixels (red-minus-green contrast of the region against the mucosa around it). Wilcoxon
# signed-rank over samples. (b) Over the pool: requested size word against the size
# class of the judge's predicted area (the mask itself implies the size, so this measures
# consistency with the mask more than with the text).

# %%
pf_run = study.prompt_following_run(prof)
pairs = pf_run.read_csv("pairs.csv")
pairs.to_csv(out / "15_prompt_following_pairs.csv", index=False)
pf = study.prompt_following_tests(pairs)
pf.to_csv(out / "15_prompt_following.csv", index=False)
display(pf.round(4))
fig = dfig.prompt_following(pairs)
plots.savefig(fig, out / "15_prompt_following.png")
sa = quality.size_agreement(pool, judge)
sa.to_csv(out / "15_size_agreement.csv", index=False)
conf = pd.crosstab(sa.requested, sa.predicted, normalize="index")
display(conf.round(3))
print(f"requested size class = judge's size class for {(sa.requested == sa.predicted).mean():.1%} of "
      f"{len(sa)} samples")

# %% [markdown]
# ## Checks

# %%
assert ae_run.done and gate_run.done and judge_run.done and gen_run.done
assert np.isfinite(rec[["frame_mae", "frame_psnr", "mask_dice"]].to_numpy()).all()
assert set(pools) == {"text", "single_prompt", "no_text"} and all(r.done for r in pools.values())
a = acceptance.set_index("variant")
# the three variants share one plan: the same frames, masks and positions
P0 = {v: study.read_pool(r, with_images=False)["records"] for v, r in pools.items()}
n0 = min(len(x) for x in P0.values())
for v in ("single_prompt", "no_text"):
    for c in ("target", "source", "row0", "col0", "noise_seed"):
        assert (P0[v][c].to_numpy()[:n0] == P0["text"][c].to_numpy()[:n0]).all(), (v, c)
assert (a.placed > 0).all() and ((a.acceptance_single >= 0) & (a.acceptance_single <= 1)).all()
assert set(t5.set) >= {"accepted", "rejected"} or len(pool["iou_single"]) < 6
# pixels outside the feathered region are the training frame's, unchanged
from mdlib.studies.diffaug.generator import _feather
r0 = 0
tgt = int(recs.target.iloc[r0])
w = _feather(study.synthesis_region(prof, pool["intended"][r0:r0 + 1]),
             float(S["synthesis"].get("feather_px", 1.0)) * ds.size / 96)[0, 0].numpy()
outside = w == 0
diff = np.abs(pool["x"][r0].astype(int) - ds.x("train")[tgt].astype(int))[outside]
assert diff.max() <= 1, diff.max()     # rounding of the [0, 1] floats only
assert ((pool["gt"] >= pool["intended"]).all())      # the ground truth includes the placed mask
assert len(pairs) > 0 and np.isfinite(pf.diff_mean).all()
for f in ("15_autoencoder.csv", "15_table5.csv", "15_acceptance.csv", "15_fig2_gallery.png",
          "15_prompt_following.csv", "15_gate_iou.png", "15_colour.csv"):
    assert (out / f).is_file(), f
write_json(out / "15_wall.json", {"wall_s": time.time() - t_start})
print("generator / gate / pool checks passed")
