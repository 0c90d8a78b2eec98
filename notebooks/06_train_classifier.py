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
# # 06 · Train one classifier
#
# **One training run per execution**: one dataset, one augmentation method (with optional
# overrides of its parameters), one seed, on the profile's training recipe. The study's
# grids (`studies/*.yaml`) execute this notebook once per configuration with papermill:
#
# ```bash
# python -m mdlib.sweep studies/main_cpu.yaml --jobs 2
# ```
#
# The run is trained with `mdlib.runs.tasks.run_classifier` into
# `runs/<TASK>/<profile>/<hash of the resolved config>/` (config, environment, metrics,
# training history, per-image test predictions, test-set features, weights); a finished
# configuration is loaded, not retrained. This notebook writes nothing else (no figures):
# tables and figures over many runs are made from the run directories afterwards.

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
DATASET = "breastmnist"
METHOD = "no_aug"          # one of mdlib.studies.meddiffusemix.study.ALL_METHODS
METHOD_PARAMS = {}         # overrides of the profile's parameters of METHOD
SEED = 0
MODEL = None               # None: the profile's baseline model (e.g. "small_cnn", "resnet50")
IMAGE_SIZE = None          # None: the profile's image_size
LIMITED_DATA = None        # None: the profile's study setting for DATASET (else its regime); or {"fraction": 0.1}, {"per_class": 100}, "full"
TRAIN = {}                 # overrides of the training recipe (e.g. {"epochs": 40, "batch_size": 64})
TASK = "study"             # run directory group: runs/<TASK>/<profile>/<hash>/

# %% [markdown]
# ## Resolve the configuration
#
# The profile with `IMAGE_SIZE` / `LIMITED_DATA` applied: `LIMITED_DATA = None` takes the
# profile's `study` setting for the dataset (`mdlib.runs.tasks.study_setup`: the cpu profile's
# study uses a fixed seeded subset of PneumoniaMNIST and LC25000 and the full BreastMNIST
# training split, with one training recipe), else the profile's regime; a value replaces
# the regime as a whole (`"full"` means the full training split). `TRAIN` overrides the
# recipe on top of the study setting. Then the method's
# parameters (`mdlib.studies.meddiffusemix.study.method_params`: the profile's equal augmentation budget plus
# `METHOD_PARAMS`), and the model. A model other than the profile's is built with its
# default `model_kwargs` (the profile's are specific to its own model).

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from mdlib import data, profiles
from mdlib.runs import tasks
from mdlib.studies.meddiffusemix import study

if os.environ.get("MDLIB_THREADS"):  # set per job by mdlib.sweep
    torch.set_num_threads(int(os.environ["MDLIB_THREADS"]))

prof = profiles.load(PROFILE, overrides={"image_size": IMAGE_SIZE} if IMAGE_SIZE else None)
prof, study_train = tasks.study_setup(prof, DATASET, LIMITED_DATA, TRAIN)

params = study.method_params(prof, DATASET, METHOD, **(METHOD_PARAMS or {}))
base_model = tasks.train_config(prof, DATASET, SEED).model
train_overrides = dict(study_train)
if MODEL:
    train_overrides["model"] = MODEL
    if MODEL != base_model:
        train_overrides["model_kwargs"] = {}
cfg = tasks.train_config(prof, DATASET, SEED, **train_overrides)
print(f"profile={prof['name']} dataset={DATASET} method={METHOD} seed={SEED} task={TASK}")
print(f"image_size={prof['image_size']} limited_data={prof.get('limited_data')} torch threads={torch.get_num_threads()}")
print("method parameters:", params)
print("training:", cfg.to_dict())

# %% [markdown]
# ## Train (or load the finished run)

# %%
run = tasks.run_classifier(prof, DATASET, SEED, METHOD, method_params=params, task=TASK,
                           **train_overrides)
print(f"RUN_DIR={run.dir}")

# %% [markdown]
# ## Metrics: validation (model selection) and test (evaluated once)

# %%
m = run.read_csv("metrics.csv")
display(m.pivot(index="metric", columns="split", values="value").round(4))
result = tasks.run_metrics(run)
display(pd.DataFrame([result]))

# %% [markdown]
# ## Training curve

# %%
hist = run.read_csv("history.csv")
best = int(result["best_epoch"])
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
axes[0].plot(hist["epoch"], hist["train_loss"], marker="o")
axes[0].set(xlabel="epoch", ylabel="train loss", title="training loss")
axes[1].plot(hist["epoch"], hist["val_auc"], marker="o")
axes[1].axvline(best, color="tab:red", ls="--", label=f"selected (epoch {best})")
axes[1].set(xlabel="epoch", ylabel="val AUC", title="validation AUC")
axes[1].legend()
fig.suptitle(f"{DATASET} · {METHOD} · seed {SEED} · {cfg.model}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Checks

# %%
assert run.done
tasks.check_metrics_sane(pd.DataFrame([tasks.run_metrics(run)]))
assert result["dataset"] == DATASET and result["method"] == METHOD and result["seed"] == SEED
assert len(hist) == cfg.epochs and 1 <= best <= cfg.epochs
y_test = data.load_dataset(DATASET, prof["image_size"]).y("test")
feat_path = run.path("test_features.npz")
assert feat_path.is_file(), feat_path
with np.load(feat_path, allow_pickle=False) as f:
    feats, labels = f["features"], f["labels"]
assert feats.ndim == 2 and feats.shape[0] == len(y_test), (feats.shape, len(y_test))
assert np.isfinite(feats).all() and (labels == y_test).all()
pred = run.read_csv("test_predictions.csv")
assert len(pred) == len(y_test) and (pred["label"].to_numpy() == y_test).all()
print("run checks passed")
