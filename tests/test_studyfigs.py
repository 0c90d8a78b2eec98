"""Fast tests of mdlib.studies.meddiffusemix.analysis (notebooks 10 and 11): CAM concentration, separability,
t-SNE helpers, example picking and run selection. No training, no real data."""
import json

import numpy as np
import pandas as pd
import pytest

from mdlib import profiles
from mdlib.studies.meddiffusemix import analysis as studyfigs
from mdlib.studies.meddiffusemix.analysis import NoRunsError


# --------------------------------------------------------------------------- CAM concentration
def test_cam_concentration_uniform_peak_and_empty():
    h = w = 10  # top 20% = 20 pixels
    uniform = np.full((h, w), 0.5)
    peak = np.zeros((h, w))
    peak[3, 4] = 1.0
    block = np.zeros((h, w))
    block[:4, :5] = 0.7  # 20 pixels hold everything
    empty = np.zeros((h, w))
    c = studyfigs.cam_concentration(np.stack([uniform, peak, block, empty]))
    np.testing.assert_allclose(c[:3], [0.2, 1.0, 1.0])
    assert np.isnan(c[3])


def test_cam_concentration_rounds_up_and_is_scale_free():
    rng = np.random.default_rng(0)
    maps = rng.random((5, 7, 9))  # 63 px -> ceil(12.6) = 13 top pixels
    c = studyfigs.cam_concentration(maps)
    flat = np.sort(maps.reshape(5, -1), axis=1)[:, ::-1]
    np.testing.assert_allclose(c, flat[:, :13].sum(1) / flat.sum(1))
    np.testing.assert_allclose(studyfigs.cam_concentration(maps * 3.0), c)
    assert (c >= 13 / 63 - 1e-12).all() and (c <= 1).all()  # never below the uniform share
    # a single 2-D map; a wider "top" share
    assert studyfigs.cam_concentration(maps[0]).shape == (1,)
    np.testing.assert_allclose(studyfigs.cam_concentration(maps, top=1.0), 1.0)


def test_cam_concentration_more_focused_map_scores_higher():
    yy, xx = np.mgrid[:28, :28]
    wide = np.exp(-((yy - 14) ** 2 + (xx - 14) ** 2) / (2 * 8.0 ** 2))
    narrow = np.exp(-((yy - 14) ** 2 + (xx - 14) ** 2) / (2 * 2.0 ** 2))
    cw, cn = studyfigs.cam_concentration(np.stack([wide, narrow]))
    assert 0.2 < cw < cn <= 1


def test_cam_concentration_rejects_bad_input():
    with pytest.raises(ValueError):
        studyfigs.cam_concentration(np.ones((2, 4, 4)), top=0)
    with pytest.raises(ValueError):
        studyfigs.cam_concentration(-np.ones((2, 4, 4)))
    assert studyfigs.cam_concentration(np.zeros((0, 4, 4))).shape == (0,)


def test_cam_stats_row():
    maps = np.zeros((3, 5, 5))
    maps[0] = 1.0          # uniform: ceil(5) / 25 = 0.2
    maps[1, 0, 0] = 1.0    # one pixel: 1.0
    cams = {"maps": maps, "p_true": np.array([0.9, 0.2, 0.6]),
            "correct": np.array([True, False, True])}
    r = studyfigs.cam_stats_row("ds", "no_aug", {"run": "abc", "test_acc": 2 / 3}, cams)
    assert r["n_test"] == 3 and r["n_empty_maps"] == 1
    assert r["cam_top20_share"] == pytest.approx(0.6)
    assert r["test_acc"] == pytest.approx(r["test_acc_reloaded"])
    assert r["p_true_mean"] == pytest.approx(1.7 / 3)


# --------------------------------------------------------------------------- separability
def _blobs(sep: float, n: int = 60, k: int = 3, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n // k)
    centres = rng.normal(size=(k, d)) * sep
    return centres[y] + rng.normal(size=(len(y), d)), y


def test_knn_loo_accuracy():
    x, y = _blobs(sep=20.0)
    assert studyfigs.knn_loo_accuracy(x, y) == 1.0
    # leave-one-out: a point never votes for itself (two far clusters, labels alternating)
    x2 = np.array([[0.0], [0.1], [10.0], [10.1]])
    y2 = np.array([0, 1, 0, 1])
    assert studyfigs.knn_loo_accuracy(x2, y2, k=1) == 0.0
    assert np.isnan(studyfigs.knn_loo_accuracy(x2[:1], y2[:1]))


def test_knn_loo_accuracy_chunks_match():
    x, y = _blobs(sep=0.7, n=2100, k=3, d=4)  # more than one chunk of 1024 rows
    a = studyfigs.knn_loo_accuracy(x, y)
    from sklearn.neighbors import NearestNeighbors
    nn = NearestNeighbors(n_neighbors=6).fit(x).kneighbors(x, return_distance=False)[:, 1:]
    votes = np.stack([(y[nn] == c).sum(1) for c in range(3)], 1)
    tied = np.sort(votes, 1)[:, -1] == np.sort(votes, 1)[:, -2]  # only ties may differ
    assert abs(a - (votes.argmax(1) == y).mean()) <= tied.mean() + 1e-12


def test_separability_separated_vs_mixed():
    xs, ys = _blobs(sep=20.0)
    rng = np.random.default_rng(1)
    xm, ym = rng.normal(size=xs.shape), ys.copy()
    good = studyfigs.separability(xs, ys, embedding=xs[:, :2])
    bad = studyfigs.separability(xm, ym, embedding=xm[:, :2])
    assert good["silhouette_features"] > 0.7 and abs(bad["silhouette_features"]) < 0.15
    assert good["knn5_acc_features"] == 1.0 and bad["knn5_acc_features"] < 0.6
    assert good["silhouette_tsne"] > bad["silhouette_tsne"]
    assert set(good) == {"silhouette_features", "knn5_acc_features", "silhouette_tsne",
                         "knn5_acc_tsne", "knn_neighbours"}
    one = studyfigs.separability(xs, np.zeros(len(ys), int))
    assert np.isnan(one["silhouette_features"]) and one["knn5_acc_features"] == 1.0
    assert "silhouette_tsne" not in one


def test_clip_perplexity():
    assert studyfigs.clip_perplexity(30, 1000) == 30
    assert studyfigs.clip_perplexity(30, 31) == 10
    assert studyfigs.clip_perplexity(30, 2) == 1
    for n in range(4, 200, 7):
        assert studyfigs.clip_perplexity(30, n) < n


def test_tsne_embed_small_and_deterministic():
    x, y = _blobs(sep=15.0, n=30, d=60)  # wider than 50: PCA first
    e1 = studyfigs.tsne_embed(x, perplexity=30, seed=0)
    e2 = studyfigs.tsne_embed(x, perplexity=30, seed=0)
    assert e1.shape == (30, 2) and np.isfinite(e1).all()
    np.testing.assert_array_equal(e1, e2)
    assert studyfigs.knn_loo_accuracy(e1, y) == 1.0
    with pytest.raises(ValueError):
        studyfigs.tsne_embed(x[:3])


# --------------------------------------------------------------------------- picking examples
def test_pick_per_class_is_seeded_and_grouped():
    y = np.array([0] * 10 + [1] * 1 + [2] * 5)
    a = studyfigs.pick_per_class(y, 2, seed=3)
    assert list(y[a]) == [0, 0, 1, 2, 2]
    np.testing.assert_array_equal(a, studyfigs.pick_per_class(y, 2, seed=3))
    assert len(set(a)) == len(a)


def test_bank_examples_accepted_only():
    rec = pd.DataFrame({"index": np.arange(8), "label": [0, 0, 0, 1, 1, 1, 0, 1],
                        "alpha": np.linspace(0.1, 0.8, 8),
                        "status": ["accepted", "kept_at_min", "accepted", "noop_empty_high",
                                   "accepted", "dropped", "accepted", "noop_empty_mask"]})
    ex = studyfigs.bank_examples(rec, per_class=2, seed=0)
    assert (ex["status"] == "accepted").all()
    assert list(ex["label"]) == [0, 0, 1]
    np.testing.assert_array_equal(ex["pos"], ex["index"])  # bank position of each row
    none = studyfigs.bank_examples(rec.assign(status="dropped"), 2)
    assert none.empty
    unchecked = studyfigs.bank_examples(rec.assign(status="accepted_unchecked"), 1)
    assert list(unchecked["label"]) == [0, 1]


# --------------------------------------------------------------------------- run selection
@pytest.fixture
def prof():
    return profiles.load("smoke")


def _row(ds, method, seed=0, model="small_cnn", run="r", params=None, prof=None,
         limited=None, acc=0.5, run_dir="/nonexistent"):
    if params is None:
        from mdlib import augment
        from mdlib.studies.meddiffusemix import study
        params = augment.get(method, **study.method_params(prof, ds, method)).config()
        params.pop("method")
    return {"run": run, "run_dir": run_dir, "dataset": ds, "method": method,
            "params": json.dumps(params, sort_keys=True), "model": model, "seed": seed,
            "image_size": prof["image_size"],
            "limited_data": json.dumps(prof.get("limited_data") if limited is None else limited,
                                       sort_keys=True),
            "test_acc": acc}


def test_select_runs_no_runs_message(prof):
    with pytest.raises(NoRunsError) as e:
        studyfigs.select_runs(pd.DataFrame(), prof, "study")
    msg = str(e.value)
    assert "study" in msg and "smoke" in msg and "python -m mdlib.sweep studies/" in msg


def test_select_runs_wrong_seed_or_model(prof):
    df = pd.DataFrame([_row("breastmnist", "no_aug", seed=1, prof=prof)])
    with pytest.raises(NoRunsError, match="seed 0"):
        studyfigs.select_runs(df, prof, "study", seed=0)
    with pytest.raises(NoRunsError, match="resnet18"):
        studyfigs.select_runs(df, prof, "study", seed=1, model="resnet18")


def test_select_runs_order_and_preference(prof, tmp_path):
    def done(name, t):
        d = tmp_path / name
        d.mkdir()
        (d / "DONE").write_text("{}")
        import os
        os.utime(d / "DONE", (t, t))
        return str(d)

    rows = [
        _row("breastmnist", "meddiffusemix", prof=prof, run="mdm"),
        _row("breastmnist", "no_aug", prof=prof, run="old", run_dir=done("old", 1000)),
        _row("breastmnist", "no_aug", prof=prof, run="new", run_dir=done("new", 2000)),
        # an ablation variant and another regime: never preferred over the default
        _row("breastmnist", "mixup", prof=prof, run="variant", params={"alpha": 9.0, "p": 0.5},
             run_dir=done("variant", 3000)),
        _row("breastmnist", "mixup", prof=prof, run="default", run_dir=done("default", 500)),
        _row("breastmnist", "dba", prof=prof, run="regime", limited={"per_class": 7},
             run_dir=done("regime", 3000)),
        _row("breastmnist", "dba", prof=prof, run="dba", run_dir=done("dba", 10)),
        _row("pneumoniamnist", "no_aug", prof=prof, run="pn"),
        _row("breastmnist", "no_aug", prof=prof, run="seed1", seed=1),
    ]
    sel = studyfigs.select_runs(pd.DataFrame(rows), prof, "study", seed=0)
    b = sel[sel.dataset == "breastmnist"]
    assert list(b.method) == ["no_aug", "mixup", "dba", "meddiffusemix"]  # ALL_METHODS order
    assert list(b.run) == ["new", "default", "dba", "mdm"]
    assert studyfigs.datasets_with(sel, ["no_aug", "meddiffusemix"]) == ["breastmnist"]
    assert studyfigs.datasets_with(sel, ["no_aug"]) == ["breastmnist", "pneumoniamnist"]
    only = studyfigs.select_runs(pd.DataFrame(rows), prof, "study", datasets=["pneumoniamnist"])
    assert list(only.run) == ["pn"]
    # a variant is still used when it is the only run of its method
    v = studyfigs.select_runs(pd.DataFrame([rows[3]]), prof, "study")
    assert list(v.run) == ["variant"] and v.variant.iloc[0] != "default"


def test_study_runs_missing_runs_on_a_real_profile():
    prof = profiles.load("cpu")  # runs root is a fresh temporary folder (conftest)
    with pytest.raises(NoRunsError) as e:
        studyfigs.study_runs(prof, "study", methods=("no_aug", "meddiffusemix"), need_all=True)
    msg = str(e.value)
    assert "'study'" in msg and "'cpu'" in msg and "mdlib.sweep" in msg


def test_ensure_smoke_runs_refuses_other_profiles():
    with pytest.raises(ValueError, match="not 'smoke'"):
        studyfigs.ensure_smoke_runs(profiles.load("cpu"), "study", ["no_aug"])


def test_how_to_make_runs_names_a_grid_of_the_profile():
    msg = studyfigs.how_to_make_runs("study", "cpu")
    assert "python -m mdlib.sweep studies/" in msg and "PROFILE=cpu" in msg


def test_knn_with_groups_ignores_near_copies():
    """Rotated copies of one tile are each other's nearest neighbours: without groups a
    k-NN vote over copies looks perfect even when the tiles' labels are random; leaving
    the whole group out measures separation between tiles."""
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    rng = np.random.default_rng(0)
    tiles = rng.normal(size=(60, 8))
    y_tile = rng.integers(0, 2, 60)  # labels unrelated to the features
    x = np.repeat(tiles, 6, axis=0) + 0.01 * rng.normal(size=(360, 8))
    y, g = np.repeat(y_tile, 6), np.repeat(np.arange(60), 6)
    naive = studyfigs.knn_loo_accuracy(x, y, 5)
    grouped = studyfigs.knn_loo_accuracy(x, y, 5, groups=g)
    assert naive == 1.0 and grouped < 0.7
    ref = cross_val_predict(KNeighborsClassifier(5), x, y, groups=g, cv=LeaveOneGroupOut())
    assert abs(grouped - (ref == y).mean()) <= 3 / len(y)

