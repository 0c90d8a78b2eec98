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
# # 18 · DiffMIC-v2: sensitivity, the reverse process, and the cost (paper 003)
#
# The second half of the DiffMIC-v2 study (notebook 17 has Tables II and IV and Fig. 6):
#
# 1. **Fig. 4**: accuracy / F1 against the number of noise points `Np` (1-10);
#    **Table V**: against the number of ROIs `K` (2-10; with `Np` fixed, as the paper
#    makes them independent, and with `Np = K`, as the official code ties them) and
#    against the latent width `H`. The full model with one parameter changed, the rest at
#    the profile's defaults (fixed from the paper before these runs); validation and test;
# 2. **Fig. 5**: t-SNE of the test split's label maps along the DDIM reverse steps
#    (`y_T` to the last step), coloured by the true class, with the class separation
#    (silhouette, 5-NN accuracy) per step;
# 3. **Table VI**: FLOPs and wall time per image of DiffMIC-v2 at 10 DDIM steps against
#    the plain backbone and against 100-step sampling, measured side by side in one run
#    (`scripts/bench_diffmic.py`; the target is at most 3x the plain backbone).

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
JOBS = None          # worker processes (None: the profile's diffmic.jobs)
RUN_BENCH = None     # None: run the benchmark only when figures/<profile>/bench_diffmic.csv is missing

# %%
import json

import numpy as np
import pandas as pd
from IPython.display import display
from mdlib import data, paths, plots, profiles
from mdlib.studies.diffmic import analysis, bench, figures, study

prof = profiles.load(PROFILE)
S = study.settings(prof)
out = paths.figures_dir(prof["name"])
se = S.get("sensitivity") or {}
base = study.model_config(prof, study.table_settings(prof)[0])
defaults = {"n_points": base.n_points, "k": base.k, "hidden": base.hidden, "k_tied": base.k}
print(f"profile={prof['name']} sensitivity on {se.get('datasets')} seeds={se.get('seeds')}")
print({k: se.get(k) for k in ("n_points", "k", "hidden", "k_ties_n_points")}, "defaults:", defaults)

# %% [markdown]
# ## Train the sweeps (finished runs are skipped)

# %%
jobs = study.run_grid(prof, parts=("sensitivity",), jobs=JOBS)
df = study.grid_results(prof, jobs)
print(f"{len(df)} runs ({int(jobs.was_done.sum())} were done before this execution)")

# %% [markdown]
# ## Fig. 4 and Table V: sensitivity to Np, K and H
#
# Mean ± std over the sweep's seeds; solid: test, dotted: validation; the vertical line is
# the default. `k_tied`: K swept with `Np = K` (the official code); `k`: K swept with `Np`
# fixed (the paper).

# %%
sens = analysis.sensitivity(df, defaults)
sens.to_csv(out / "18_sensitivity.csv", index=False)
display(sens[["setting", "param", "value", "seeds", "val_acc_mean", "test_acc_mean",
              "test_acc_std", "val_f1_mean", "test_f1_mean", "test_f1_std"]].round(3))
labels = {"n_points": "Np (noise points per side)", "k": "K (Np fixed)", "k_tied": "K (Np = K)",
          "hidden": "H (latent width)"}
fig = figures.sweep_lines(sens, ["n_points"], labels, defaults=defaults)
plots.savefig(fig, out / "18_np.png")
fig = figures.sweep_lines(sens, [("k", "k_tied"), "hidden"], labels, defaults=defaults)
plots.savefig(fig, out / "18_k_h.png")

# %% [markdown]
# ## Fig. 5: t-SNE of the label maps along the reverse process
#
# DiffMIC-v2 (the full model, the first seed) of each Table II setting at the study's image
# size: the test split's `C x Np x Np` maps from `y_T ~ N(M, I)` through the DDIM steps,
# flattened, embedded by t-SNE (PCA initialisation, seeded; the same test images at every
# step). The silhouette of the true classes is measured in the map space itself, not in the
# 2-D embedding.

# %%
T = S.get("tsne") or {}
tsne_seed = int(T.get("seed", S["seeds"][0]))
settings_28 = [st for st in study.table_settings(prof) if "@" not in st]
allruns = study.collect(prof)
emb, sep, names = {}, {}, {}
for st in settings_28:
    r = allruns[(allruns.setting == st) & (allruns.method == "full") & (allruns.overrides == "{}")
                & (allruns.seed == S["seeds"][0])]
    assert len(r) == 1, f"{st}: the full model's run of seed {S['seeds'][0]} is missing (run notebook 17)"
    maps, labels_ = study.trajectory(r.run_dir.iloc[0])
    steps = [s for s in T.get("steps", [0, maps.shape[0] - 1]) if s < maps.shape[0]]
    emb[st], sep[st] = analysis.tsne_steps(maps, labels_, steps, seed=tsne_seed,
                                           max_points=T.get("max_points"))
    names[st] = data.load_dataset(*study.parse_setting(st, prof)).class_names
sep_table = pd.concat([s.assign(setting=k) for k, s in sep.items()], ignore_index=True)
sep_table.to_csv(out / "18_tsne_separability.csv", index=False)
pd.concat([e.assign(setting=k) for k, e in emb.items()]).to_csv(out / "18_tsne.csv", index=False)
display(sep_table.round(3))
fig = figures.tsne_grid(emb, sep, names, steps_total=maps.shape[0] - 1)
plots.savefig(fig, out / "18_tsne.png")

# %% [markdown]
# ## Table VI: inference cost per image
#
# From one run of `scripts/bench_diffmic.py --profile <profile>` (written to
# `figures/<profile>/bench_diffmic.csv`): the plain backbone (C1), DiffMIC-v2 at 10 and at
# 100 DDIM steps on the same batch, timed in interleaved repetitions (medians), FLOPs from
# torch's counter; the `part` rows split DiffMIC-v2's FLOPs into the DCG's branches, the
# image feature prior and the denoiser. On smoke (or when the file is missing) the profile's
# cases are measured here.

# %%
bench_csv = out / "bench_diffmic.csv"
B = S.get("bench") or {}
if RUN_BENCH or (RUN_BENCH is None and not bench_csv.is_file()):
    import torch
    torch.set_num_threads(1)
    table = bench.run(bench.profile_cases(prof), steps=tuple(B.get("steps", (10, 100))),
                      repeats=int(B.get("repeats", 5)))
    table.to_csv(bench_csv, index=False)
table = pd.read_csv(bench_csv)
display(table[table.row == "method"][["case", "image_size", "batch", "method", "gflops_per_image",
                                      "ms_per_image", "flops_ratio_vs_plain", "time_ratio_vs_plain"]].round(4))
display(table[table.row == "part"][["case", "method", "gflops_per_image"]].round(5))
target = bench.target_check(table)
target.to_csv(out / "18_bench_target.csv", index=False)
display(target.round(3))
fig = figures.cost_bars(table)
plots.savefig(fig, out / "18_cost.png")

# %% [markdown]
# ## Checks

# %%
assert len(sens) and set(sens.param) >= {"n_points", "k", "hidden"}, set(sens.param)
for key in ("n_points", "k", "hidden"):
    want = sorted(set(int(v) for v in se.get(key, [])) | {defaults[key]})
    for st in se.get("datasets", []):
        got = sorted(sens[(sens.setting == st) & (sens.param == key)].value)
        assert got == want, (st, key, got, want)
assert sens.filter(like="_mean").stack().between(0, 1).all()
# Fig. 5: maps start at y_T ~ N(M, I): the first step is much noisier than the last
for st in settings_28:
    r = allruns[(allruns.setting == st) & (allruns.method == "full") & (allruns.overrides == "{}")
                & (allruns.seed == S["seeds"][0])]
    maps, _ = study.trajectory(r.run_dir.iloc[0])
    assert maps.shape[0] == study.model_config(prof, st).sample_steps + 1
    assert maps[0].std() > maps[-1].std(), st
    assert np.abs(maps[-1]).max() <= 1 + 1e-3  # DDIM clips the last x0 estimate to [-1, 1]
# Table VI: FLOPs grow with the steps; 100 steps cost more than 10, and both more than C1
m = table[table.row == "method"]
for case, g in m.groupby("case"):
    f = g.set_index("method").gflops_per_image
    assert f.filter(like="100 steps").iloc[0] > f.filter(like="(10 steps)").iloc[0] > f["plain backbone (C1)"] > 0, case
assert (m.ms_per_image > 0).all()
print("DiffMIC-v2 analysis checks passed")
