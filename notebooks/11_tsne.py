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
# # 11 · t-SNE of the learned features
#
# How well does each classifier's **penultimate feature space** separate the classes of the
# test split? For every method of the study (seed `SEED`, backbone `MODEL`) this notebook
# reads the test-set features that the run saved (`test_features.npz`: the pre-logits
# features of the selected model, written by `mdlib.runs.tasks.run_classifier`) and
#
# * embeds them in 2-D with t-SNE (scikit-learn `TSNE`, PCA initialisation, fixed
#   `random_state = SEED`, perplexity `PERPLEXITY` clipped to at most `(n - 1) / 3` for small
#   test sets; features wider than 50 dimensions are first reduced to 50 with PCA), one
#   panel per method, coloured by the true class: `figures/<profile>/11_tsne_<dataset>.png`;
# * summarises class separation with numbers computed from the features
#   (`11_tsne_separability.csv`; panel titles: the run's test accuracy and the feature-space
#   silhouette): the **silhouette score** of the true labels in the original
#   feature space and in the 2-D embedding (from -1 to 1; higher = tighter, better separated
#   classes), and the **leave-one-out 5-NN accuracy** in both spaces.
#
# t-SNE preserves neighbourhoods, not distances or cluster sizes: the scatter plots are for
# looking, the feature-space numbers for comparing. This notebook reads finished runs only;
# on the `smoke` profile it first makes the missing seed-`SEED` runs (seconds each), on other
# profiles missing runs stop it with the command that makes them.

# %% tags=["parameters"]
import os
PROFILE = os.environ.get("MDLIB_PROFILE", "smoke")  # smoke | cpu | gpu
TASK = "study"        # runs/<TASK>/<profile>/
DATASETS = None       # None: every dataset with at least one run
SEED = 0
MODEL = "small_cnn"
PERPLEXITY = 30       # clipped to (n - 1) / 3 for small test sets

# %%
import numpy as np
import pandas as pd
from IPython.display import display
from mdlib import data, paths, plots, profiles
from mdlib.studies.meddiffusemix import analysis, figures, study
from mdlib.studies.meddiffusemix.analysis import label

prof = profiles.load(PROFILE)
out = paths.figures_dir(prof["name"])
sel = analysis.study_runs(prof, TASK, SEED, MODEL, DATASETS, study.ALL_METHODS)
names = sorted(sel.dataset.unique())
print(f"profile={prof['name']} task={TASK} seed={SEED} model={MODEL} datasets={names}")
display(sel[["dataset", "method", "variant", "run", "test_acc", "test_auc"]])

# %% [markdown]
# ## t-SNE of the test-set features, one panel per method

# %%
rows, emb = [], {}
groups = {}
for name in names:
    ds_full = data.load_dataset(name, prof["image_size"])
    class_names = ds_full.class_names
    groups[name] = None if ds_full.groups is None else ds_full.groups["test"]
    panels = []
    for r in sel[sel.dataset == name].itertuples():  # in the order of study.ALL_METHODS
        feats, labels = analysis.load_features(r.run_dir)
        e = emb[name, r.method] = analysis.tsne_embed(feats, PERPLEXITY, SEED)
        sep = analysis.separability(feats, labels, e, groups=groups[name])
        rows.append({"dataset": name, "method": r.method, "run": r.run, "n_test": len(labels),
                     "feature_dim": feats.shape[1],
                     "perplexity": analysis.clip_perplexity(PERPLEXITY, len(labels)),
                     **sep, "test_acc": r.test_acc})
        panels.append({"title": f"{label(r.method)}\ntest acc {r.test_acc:.3f} · silhouette {sep['silhouette_features']:.2f}",
                       "emb": e, "labels": labels})
    fig = figures.tsne_figure(panels, class_names,
                                title=f"{name}: t-SNE of the test-set features ({MODEL}, seed {SEED})")
    plots.savefig(fig, out / f"11_tsne_{name}.png")
sep = pd.DataFrame(rows)
sep.to_csv(out / "11_tsne_separability.csv", index=False)

# %% [markdown]
# ## Class separation per method
#
# `silhouette_features` / `knn5_acc_features`: in the classifier's feature space;
# `silhouette_tsne` / `knn5_acc_tsne`: in the 2-D embedding shown above; `test_acc`: the
# run's test accuracy. For LC25000 the k-NN vote takes neighbours from **other source
# tiles** only (`knn_neighbours`): its test images are rotated / flipped copies of ~150
# tiles, and a copy's nearest neighbours are its own siblings.

# %%
display(sep.round(3))

# %% [markdown]
# ## Checks

# %%
assert (out / "11_tsne_separability.csv").is_file() and len(sep) == len(sel)
for name in names:
    assert (out / f"11_tsne_{name}.png").is_file()
    y_test = data.load_dataset(name, prof["image_size"]).y("test")
    for r in sel[sel.dataset == name].itertuples():
        feats, labels = analysis.load_features(r.run_dir)
        assert feats.shape[0] == len(y_test) and (labels == y_test).all()  # one test split
        e = emb[name, r.method]
        assert e.shape == (len(y_test), 2) and np.isfinite(e).all()
for c in ("silhouette_features", "silhouette_tsne"):
    v = sep[c].dropna()
    assert v.between(-1, 1).all(), sep[c]
for c in ("knn5_acc_features", "knn5_acc_tsne", "test_acc"):
    assert sep[c].between(0, 1).all(), sep[c]
assert (sep["perplexity"] < sep["n_test"]).all()
# the k-NN accuracy of one panel per dataset recomputed with scikit-learn (leave one image
# out, or leave one group out where the images are grouped); ties may be broken
# differently, so a few images of slack
from sklearn.model_selection import LeaveOneGroupOut, LeaveOneOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
for name in names:
    r = sel[sel.dataset == name].iloc[0]
    feats, labels = analysis.load_features(r.run_dir)
    g = groups[name]
    cv = LeaveOneGroupOut() if g is not None else LeaveOneOut()
    pred = cross_val_predict(KNeighborsClassifier(5), feats, labels, groups=g, cv=cv)
    ours = sep[(sep.dataset == name) & (sep.method == r.method)].knn5_acc_features.iloc[0]
    assert abs(float((pred == labels).mean()) - ours) <= 3 / len(labels) + 1e-9, (name, ours, (pred == labels).mean())
for name in names:  # panels in the order of study.ALL_METHODS
    ms = list(sep[sep.dataset == name].method)
    assert ms == sorted(ms, key=list(study.ALL_METHODS).index), ms
print("t-SNE checks passed")
