"""Tests for mdlib.synthetic (notebook 12) and mdlib.lossfid (notebook 13): the set
sizes and class balance, the regimes' data, the equal step budget, the grid, LIME maps
and the statistics; the notebooks themselves run on the smoke profile through nbval."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mdlib import profiles
from mdlib.studies.lossfid import study as lossfid
from mdlib.studies.synthetic import study as synthetic
from mdlib.data import ImageDataset

pytestmark = pytest.mark.usefixtures("one_thread")


def toy_dataset(n_per_class=(6, 10), size=28) -> ImageDataset:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(len(n_per_class)), n_per_class)
    x = rng.integers(0, 256, (len(y), size, size, 1), dtype=np.uint8)
    splits = {"train": (x, y), "val": (x[:6], y[:6]), "test": (x[-6:], y[-6:])}
    return ImageDataset("toy", size, 2, 1, "xray", ("a", "b"), splits)


def test_class_counts_and_nested_subsets():
    y_real = np.repeat([0, 1], [6, 10])
    assert synthetic.class_counts(y_real, 2, 0.5).tolist() == [3, 5]
    assert synthetic.class_counts(y_real, 2, 5).tolist() == [30, 50]
    assert synthetic.class_counts(np.array([1, 1]), 2, 1).tolist() == [0, 2]  # absent class
    y_pool = np.repeat([0, 1], [30, 50])
    small = synthetic.subset_indices(y_pool, np.array([3, 5]))
    big = synthetic.subset_indices(y_pool, np.array([6, 10]))
    assert set(small) <= set(big)  # the sets of the sweep are nested
    assert np.bincount(y_pool[big]).tolist() == [6, 10]
    with pytest.raises(ValueError, match="larger max multiple"):
        synthetic.subset_indices(y_pool, np.array([31, 5]))


def test_regime_data_keeps_val_and_test_real():
    real = toy_dataset()
    rng = np.random.default_rng(1)
    y_pool = np.repeat([0, 1], [12, 20])
    x_pool = rng.integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)
    syn = synthetic.regime_data(real, x_pool, y_pool, "synthetic", 2)
    both = synthetic.regime_data(real, x_pool, y_pool, "real+synthetic", 1)
    assert synthetic.regime_data(real, None, None, "real", 0) is real
    assert np.bincount(syn.y("train")).tolist() == [12, 20]
    assert len(both.y("train")) == 16 + 16
    np.testing.assert_array_equal(both.x("train")[:16], real.x("train"))
    for d in (syn, both):
        for s in ("val", "test"):
            assert d.x(s) is real.x(s) and d.y(s) is real.y(s)
    with pytest.raises(ValueError, match="regime"):
        synthetic.regime_data(real, x_pool, y_pool, "fake", 1)
    with pytest.raises(ValueError, match="do not match"):
        synthetic.regime_data(real, x_pool[:, :14, :14], y_pool, "synthetic", 1)


def test_budget_epochs_gives_equal_steps():
    import math
    for n_train in (235, 471, 942, 2826):
        e = synthetic.budget_epochs(40, 471, n_train, 64)
        steps = e * math.ceil(n_train / 64)
        assert abs(steps - 40 * math.ceil(471 / 64)) <= math.ceil(n_train / 64) / 2 + 1e-9
    assert synthetic.budget_epochs(40, 471, 471, 64) == 40
    assert synthetic.budget_epochs(40, 471, 50000, 64) == 1
    assert synthetic.budget_epochs(40, 471, 2826, 64, budget="epochs") == 40


def test_settings_validation_and_grid():
    prof = profiles.load("cpu")
    s = synthetic.settings(prof)
    g = synthetic.grid(prof)
    n_sweep = len(s["seeds"]) * (1 + 2 * len(s["multiples"]))
    n_other = len(s["seeds"]) * 3 * len(s["backbones"])
    assert len(g) == len(s["datasets"]) * (n_sweep + n_other)
    assert len({tuple(sorted(j.items())) for j in g}) == len(g)  # no duplicates
    bad = profiles.load("cpu", {"synthetic": {"budget": "hours"}})
    with pytest.raises(ValueError, match="budget"):
        synthetic.settings(bad)
    with pytest.raises(ValueError, match="unknown"):
        synthetic.settings(profiles.load("cpu", {"synthetic": {"multiple": [1]}}))
    with pytest.raises(ValueError, match="backbones"):
        synthetic.settings(profiles.load("cpu", {"synthetic": {"backbones": ["alexnet"]}}))
    with pytest.raises(ValueError, match="backbone_multiple"):
        synthetic.settings(profiles.load("cpu", {"synthetic": {"backbone_multiple": 4}}))
    with pytest.raises(KeyError, match="synthetic"):
        synthetic.settings({"name": "x"})


def test_lime_maps_and_map_correlation():
    from mdlib.models import build_model
    torch.manual_seed(0)
    m = build_model("small_cnn", 1, 2, 28, width=4).eval()
    x = torch.rand(2, 1, 28, 28)
    maps, segs = synthetic.lime_maps(m, x, [0, 1], num_samples=40, n_segments=9, seed=0)
    assert maps.shape == segs.shape == (2, 28, 28) and np.isfinite(maps).all()
    # one weight per superpixel: the map is constant on each superpixel
    for mp, sg in zip(maps, segs):
        for k in np.unique(sg):
            assert np.ptp(mp[sg == k]) == 0
    again, _ = synthetic.lime_maps(m, x, [0, 1], num_samples=40, n_segments=9, seed=0)
    np.testing.assert_array_equal(maps, again)  # seeded
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 6, 6)), rng.normal(size=(5, 6, 6))
    want = [np.corrcoef(u.ravel(), v.ravel())[0, 1] for u, v in zip(a, b)]
    np.testing.assert_allclose(synthetic.map_correlation(a, b), want, rtol=1e-10)
    assert np.isnan(synthetic.map_correlation(np.ones((1, 3, 3)), a[:1, :3, :3])[0])


def test_lossfid_settings_and_paired_difference():
    prof = profiles.load("cpu")
    s = lossfid.settings(prof)
    assert set(s["losses"]) == {"l2", "huber"} and len(s["seeds"]) >= 2
    with pytest.raises(ValueError, match="losses"):
        lossfid.settings(profiles.load("cpu", {"loss_study": {"losses": ["l1"]}}))
    with pytest.raises(ValueError, match="2 seeds"):
        lossfid.settings(profiles.load("cpu", {"loss_study": {"seeds": [0]}}))
    with pytest.raises(ValueError, match="inception_dims"):
        lossfid.settings(profiles.load("cpu", {"loss_study": {"inception_dims": [100]}}))
    from scipy import stats
    fd = pd.DataFrame({"dataset": "d", "extractor": "g", "feature": "f", "dim": 4,
                       "loss": ["l2", "huber"] * 3, "seed": [0, 0, 1, 1, 2, 2],
                       "fd": [1.0, 1.5, 2.0, 2.1, 1.2, 1.9]})
    d = lossfid.paired_difference(fd).iloc[0]
    assert d.diff_mean == pytest.approx(np.mean([0.5, 0.1, 0.7]))
    assert d.p_paired_t == pytest.approx(stats.ttest_rel([1.5, 2.1, 1.9], [1.0, 2.0, 1.2]).pvalue)
    from mdlib.runs.results import summarise
    summ = summarise(fd, metrics=("fd",), by=("dataset", "loss"))
    assert summ.set_index("loss").loc["l2", "fd_mean"] == pytest.approx(np.mean([1.0, 2.0, 1.2]))


def test_matched_subset_has_the_target_class_mix():
    y_from = np.repeat([0, 1, 2], [50, 200, 30])
    y_to = np.repeat([0, 1, 2], [30, 60, 10])
    idx = lossfid.matched_subset(y_from, y_to, seed=1)
    assert len(np.unique(idx)) == len(idx)
    counts = np.bincount(y_from[idx], minlength=3)
    # class 0 limits the size (50 available for 30 wanted: ratio 5/3; class 2 allows 3)
    assert counts.tolist() == [50, 100, 16]
    np.testing.assert_allclose(counts / counts.sum(), [0.3, 0.6, 0.1], atol=0.01)
    np.testing.assert_array_equal(idx, lossfid.matched_subset(y_from, y_to, seed=1))
