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
# # 09 · Sensitivity of MedDiffuseMix (paper Fig. 5)
#
# From the runs of `python -m mdlib.sweep studies/sensitivity_<profile>.yaml` (task
# `sensitivity`; reads results only). Measured on the **validation** split only: this is
# where parameters may be tuned. Panels: the alpha_base curve, the sigma curve and the full
# 3 x 3 tau_h x tau_b grid per dataset (as the difference to the default pair, on one colour
# scale for all datasets). A value is in the **stable range** (a bar under the curves) when
# its validation metric is within `STABLE_TOL` of the best value of that curve; the dotted
# line is the profile's default. One seed per value (seed 0): the curves carry no error
# bars, and differences below the seed-to-seed spread of the main study are not evidence.

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
TASK = "sensitivity"
METRIC = "val_acc"
STABLE_TOL = 0.01

# %%
import json
import numpy as np
import pandas as pd
from IPython.display import display
from mdlib import augment, paths, plots, profiles
from mdlib.studies.meddiffusemix import figures, study

prof = profiles.load(PROFILE)
out = paths.figures_dir(prof["name"])
runs = study.task_runs(prof, TASK)  # smoke: creates the tiny runs CI needs
runs = runs[runs.method == "meddiffusemix"].copy()
SWEPT = ("alpha_base", "tau_h", "tau_b", "sigma")
par = pd.DataFrame([json.loads(p) for p in runs.params], index=runs.index)
for k in SWEPT:
    runs[k] = par[k]
defaults = {}
for d in runs.dataset.unique():
    p = augment.get("meddiffusemix", **study.method_params(prof, d, "meddiffusemix")).params
    defaults[d] = {k: p[k] for k in SWEPT}


# %%
def on_defaults(df, free):
    keep = np.ones(len(df), bool)
    for k in SWEPT:
        if k not in free:
            keep &= np.array([np.isclose(v, defaults[d][k]) for v, d in zip(df[k], df.dataset)])
    return df[keep]

curves, stable, rows = {}, {}, []
for name in ("alpha_base", "sigma"):
    sel = on_defaults(runs, {name})
    c = sel.groupby(["dataset", name])[METRIC].agg(["mean", "std", "count"]).reset_index().rename(columns={name: "value"})
    curves[name] = c
    for d, g in c.groupby("dataset"):
        ok = g[g["mean"] >= g["mean"].max() - STABLE_TOL]
        stable[name, d] = (float(ok.value.min()), float(ok.value.max()))
        best = g.loc[g["mean"].idxmax()]
        rows.append({"dataset": d, "parameter": name, "default": defaults[d][name], "best_on_val": float(best.value),
                     "best_val": float(best["mean"]), "stable_lo": stable[name, d][0], "stable_hi": stable[name, d][1],
                     "n_values": len(g)})
heat = on_defaults(runs, {"tau_h", "tau_b"}).groupby(["dataset", "tau_h", "tau_b"])[METRIC].mean().reset_index(name="mean")
for d, g in heat.groupby("dataset"):
    best = g.loc[g["mean"].idxmax()]
    rows.append({"dataset": d, "parameter": "tau_h,tau_b", "default": f"{defaults[d]['tau_h']},{defaults[d]['tau_b']}",
                 "best_on_val": f"{best.tau_h},{best.tau_b}", "best_val": float(best["mean"]),
                 "stable_lo": np.nan, "stable_hi": np.nan, "n_values": len(g)})
summary = pd.DataFrame(rows)
summary.to_csv(out / "09_sensitivity_summary.csv", index=False)
pd.concat([c.assign(parameter=k) for k, c in curves.items()] + [heat.assign(parameter="tau_h,tau_b")]).to_csv(
    out / "09_sensitivity_curves.csv", index=False)
display(summary)

# %%
d0 = next(iter(defaults.values()))
fig = figures.sensitivity_panels(curves, heat, METRIC, {k: d0[k] for k in ("alpha_base", "sigma")}, stable,
                                 heat_default=(d0["tau_h"], d0["tau_b"]))
plots.savefig(fig, out / "09_fig5_sensitivity.png")

# %% [markdown]
# ## Checks

# %%
assert runs[METRIC].between(0, 1).all()
assert len(curves["alpha_base"]) > 0, "no alpha_base runs at the other defaults"
# every curve point is the mean of the runs that have that value and the defaults elsewhere
for name, c in curves.items():
    for _, r in c.iterrows():
        sel = on_defaults(runs, {name})
        v = sel[(sel.dataset == r.dataset) & np.isclose(sel[name], r.value)][METRIC]
        assert len(v) == r["count"] and abs(v.mean() - r["mean"]) < 1e-12, (name, r.dataset, r.value)
# the stable range holds the best value and lies within the swept values
for (name, d), (lo, hi) in stable.items():
    c = curves[name][curves[name].dataset == d]
    best = c.loc[c["mean"].idxmax(), "value"]
    assert lo <= best <= hi and c.value.min() <= lo and hi <= c.value.max(), (name, d)
print("sensitivity checks passed")
