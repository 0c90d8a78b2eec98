"""mdlib.runs.results: the statistics, each checked against a reference implementation
or its definition (scipy's t interval and bootstrap, a hand-computed Holm vector, a
Monte Carlo power estimate), and compare_methods on matched seeds."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mdlib.runs import results as R


# --------------------------------------------------------------------------- intervals
def test_mean_std_ci_matches_scipy_t_interval():
    x = np.array([0.81, 0.84, 0.79, 0.86, 0.83, 0.80])
    s = R.mean_std_ci(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert s["n"] == 6 and s["mean"] == pytest.approx(x.mean())
    assert s["std"] == pytest.approx(x.std(ddof=1))
    assert s["ci95"] == pytest.approx((hi - lo) / 2, rel=1e-12)
    one = R.mean_std_ci([0.5, np.nan])
    assert one["n"] == 1 and math.isnan(one["std"]) and math.isnan(one["ci95"])
    assert R.mean_std_ci([])["n"] == 0


# --------------------------------------------------------------------------- paired t-test
def _runs(method, accs, seeds=None):
    seeds = range(len(accs)) if seeds is None else seeds
    return pd.DataFrame({"method": method, "seed": list(seeds), "test_acc": accs})


def test_paired_seed_test_matches_scipy_and_pairs_by_seed():
    a = _runs("m", [0.80, 0.85, 0.83, 0.90], seeds=[0, 1, 2, 3])
    b = _runs("r", [0.78, 0.86, 0.80, 0.85, 0.99], seeds=[0, 1, 2, 3, 4])  # seed 4 unpaired
    t = R.paired_seed_test(a, b)
    ref = stats.ttest_rel([0.80, 0.85, 0.83, 0.90], [0.78, 0.86, 0.80, 0.85])
    assert t["n_pairs"] == 4 and t["t_p"] == pytest.approx(ref.pvalue)
    assert t["diff"] == pytest.approx(np.mean([0.02, -0.01, 0.03, 0.05]))
    shuffled = b.sample(frac=1.0, random_state=0)  # order must not matter, seeds do
    assert R.paired_seed_test(a, shuffled)["t_p"] == pytest.approx(ref.pvalue)


def test_paired_seed_test_undefined_p_is_nan():
    a = _runs("m", [0.80, 0.85])
    assert math.isnan(R.paired_seed_test(a, _runs("r", [0.78, 0.83]))["t_p"])  # equal diffs
    assert math.isnan(R.paired_seed_test(a, a.assign(method="r"))["t_p"])  # identical runs
    assert math.isnan(R.paired_seed_test(a.iloc[:1], a.iloc[:1])["t_p"])  # one pair


# --------------------------------------------------------------------------- power
def test_min_detectable_difference_has_the_stated_power():
    sd, n = 0.02, 5
    mde = R.min_detectable_difference(sd, n)
    rng = np.random.default_rng(0)
    d = rng.normal(mde, sd, size=(20000, n))  # paired differences at the MDE
    p = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    assert (p < 0.05).mean() == pytest.approx(0.8, abs=0.015)
    assert R.min_detectable_difference(sd, 10) < mde  # more seeds detect less
    assert math.isnan(R.min_detectable_difference(0.0, 5))
    assert math.isnan(R.min_detectable_difference(sd, 1))


# --------------------------------------------------------------------------- bootstrap
def test_paired_bootstrap_is_the_percentile_bootstrap_by_definition():
    rng = np.random.default_rng(1)
    ca, cb = rng.random(37), rng.random(37)
    b = R.paired_bootstrap(ca, cb, n_boot=4000, seed=7)
    d = ca - cb
    r = np.random.default_rng(7)
    means = np.array([d[r.integers(0, len(d), len(d))].mean() for _ in range(4000)])
    assert (b["boot_lo"], b["boot_hi"]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert b["boot_p"] == pytest.approx(2 * (min((means <= 0).sum(), (means >= 0).sum()) + 1) / 4001)
    assert b["boot_se"] == pytest.approx(means.std(ddof=1))
    assert b["diff"] == pytest.approx(d.mean()) and b["boot_lo"] <= b["diff"] <= b["boot_hi"]


def test_paired_bootstrap_p_is_never_zero_and_undefined_without_spread():
    """A difference no replicate crosses gets p = 2 / (n_boot + 1), not 0; every
    difference equal (or identical arms) leaves nothing to resample: p is NaN, not 0 or 1."""
    rng = np.random.default_rng(4)
    far = R.paired_bootstrap(rng.random(50) + 5, rng.random(50), n_boot=999, seed=0)
    assert far["boot_p"] == pytest.approx(2 / 1000)
    same = R.paired_bootstrap(np.full(12, 0.5), np.full(12, 0.4), n_boot=500, seed=0,
                              groups=np.repeat(np.arange(4), 3))
    assert math.isnan(same["boot_p"]) and same["boot_se"] < 1e-12 and same["diff"] == pytest.approx(0.1)
    assert math.isnan(R.paired_bootstrap(np.ones(8), np.ones(8), n_boot=200)["boot_p"])
    assert math.isnan(R.paired_bootstrap(np.ones(8), np.zeros(8), n_boot=200,
                                         groups=np.zeros(8))["boot_p"])  # one group


def test_paired_bootstrap_agrees_with_scipy_bootstrap():
    rng = np.random.default_rng(2)
    ca, cb = rng.random(200), rng.random(200) * 0.9
    b = R.paired_bootstrap(ca, cb, n_boot=20000, seed=0)
    ref = stats.bootstrap((ca, cb), lambda x, y: np.mean(x - y), paired=True, vectorized=False,
                          n_resamples=20000, method="percentile", random_state=0).confidence_interval
    assert b["boot_lo"] == pytest.approx(ref.low, abs=0.006)
    assert b["boot_hi"] == pytest.approx(ref.high, abs=0.006)


def test_cluster_bootstrap_resamples_groups():
    rng = np.random.default_rng(3)
    base = rng.random(40)
    d1 = np.repeat(base, 10)  # 40 groups of 10 identical copies (rotated tiles)
    zero = np.zeros_like(d1)
    groups = np.repeat(np.arange(40), 10)
    naive = R.paired_bootstrap(d1, zero, n_boot=4000, seed=0)
    clus = R.paired_bootstrap(d1, zero, n_boot=4000, seed=0, groups=groups)
    per_group = R.paired_bootstrap(base, np.zeros(40), n_boot=4000, seed=0)
    assert clus["n_units"] == 40 and naive["n_units"] == 400
    # copies are not independent: the cluster interval is as wide as 40 independent
    # images', about sqrt(10) x the naive one
    assert (clus["boot_hi"] - clus["boot_lo"]) == pytest.approx(
        per_group["boot_hi"] - per_group["boot_lo"], rel=1e-9)
    assert (clus["boot_hi"] - clus["boot_lo"]) > 2.5 * (naive["boot_hi"] - naive["boot_lo"])
    with pytest.raises(ValueError, match="group labels"):
        R.paired_bootstrap(d1, zero, groups=groups[:-1])


# --------------------------------------------------------------------------- Holm
def test_holm_by_hand_with_nan_and_ties():
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.03, 0.2])
    # 5 finite p-values; sorted 0.01, 0.03, 0.03, 0.04, 0.2 -> 5*0.01, 4*0.03, 3*0.03 (max 0.12),
    # 2*0.04 (max 0.12), 1*0.2
    want = np.array([0.05, np.nan, 0.12, 0.12, 0.12, 0.2])
    np.testing.assert_allclose(R.holm(p), want)
    np.testing.assert_allclose(R.holm([0.6, 0.5]), [1.0, 1.0])  # capped at 1
    assert np.isnan(R.holm([np.nan, np.nan])).all()


def test_holm_counts_a_planned_but_undefined_test_when_told_the_family_size():
    """m = the family's size: an undefined p counts as a test that could not reject (as
    p = 1), so the finite ones are adjusted by the full family, as by hand."""
    p = np.array([0.01, np.nan, 0.03])
    np.testing.assert_allclose(R.holm(p, m=3), [0.03, np.nan, 0.06])
    np.testing.assert_allclose(R.holm(p, m=3)[[0, 2]], R.holm([0.01, 1.0, 0.03])[[0, 2]])
    np.testing.assert_allclose(R.holm(p), [0.02, np.nan, 0.03])
    with pytest.raises(ValueError, match="family size"):
        R.holm(p, m=1)


# --------------------------------------------------------------------------- compare_methods
def _write_run(root, name, method, seed, correct, n_classes=2):
    d = root / name
    d.mkdir(parents=True)
    labels = np.arange(len(correct)) % n_classes
    pred = np.where(correct, labels, 1 - labels)
    probs = np.eye(n_classes)[pred] * 0.8 + 0.1
    pd.DataFrame({"test_index": np.arange(len(labels)), "label": labels,
                  **{f"p{c}": probs[:, c] for c in range(n_classes)}}).to_csv(d / "test_predictions.csv", index=False)
    return {"run_dir": str(d), "dataset": "toy", "image_size": 28, "model": "m", "method": method,
            "seed": seed, "test_acc": float(np.mean(correct))}


def test_compare_methods_matches_seeds_and_the_image_bootstrap_agrees(tmp_path):
    rng = np.random.default_rng(4)
    rows = []
    for s in range(5):
        rows.append(_write_run(tmp_path, f"ref{s}", "no_aug", s, rng.random(60) < 0.8))
    for s in range(7):  # two seeds the reference does not have: never paired
        rows.append(_write_run(tmp_path, f"m{s}", "mdm", s, rng.random(60) < 0.85))
    df = pd.DataFrame(rows)
    t = R.compare_methods(df, "no_aug", n_boot=2000).iloc[0].to_dict()
    assert t["n_pairs"] == 5
    ref = R.paired_seed_test(df[(df.method == "mdm") & (df.seed < 5)], df[df.method == "no_aug"])
    assert t["diff"] == pytest.approx(ref["diff"]) and t["t_p"] == pytest.approx(ref["t_p"])
    # matched seeds: the seed-averaged per-image difference is the seed-mean difference
    assert t["img_diff"] == pytest.approx(t["diff"])
    assert t["img_lo"] <= t["img_diff"] <= t["img_hi"]
    assert t["mde_80"] == pytest.approx(R.min_detectable_difference(ref["sd_diff"], 5))
    g = R.compare_methods(df, "no_aug", n_boot=2000, groups={"toy": np.arange(60) // 6}).iloc[0].to_dict()
    assert g["bootstrap"] == "cluster" and g["boot_units"] == 10 and g["img_diff"] == pytest.approx(t["img_diff"])


def test_collect_reads_finished_runs_only(tmp_path):
    base = tmp_path / "study" / "cpu"
    for name, done in (("a", True), ("b", False)):
        d = base / name
        d.mkdir(parents=True)
        cfg = {"config": {"dataset": "toy", "augmentation": {"method": "no_aug", "p": 0.5},
                          "train": {"model": "m", "seed": 3}, "image_size": 28, "limited_data": None}}
        (d / "config.json").write_text(json.dumps(cfg))
        pd.DataFrame({"split": ["test", "val"], "metric": ["acc", "acc"], "value": [0.7, 0.8]}).to_csv(
            d / "metrics.csv", index=False)
        if done:
            (d / "DONE").write_text(json.dumps({"wall_s": 12.0}))
    df = R.collect("study", "cpu", root=tmp_path)
    assert len(df) == 1 and df.iloc[0].test_acc == 0.7 and df.iloc[0].val_acc == 0.8
    assert json.loads(df.iloc[0].params) == {"p": 0.5} and df.iloc[0].seed == 3


def test_group_sign_flip_test_is_scipys_sign_flip_permutation_test_on_group_sums():
    """Exact over all 2^k sign vectors of the groups' summed differences: the same p as
    scipy's one-sample permutation test (which flips signs) of those sums; the floor with
    k groups is 2 / 2^k; NaN for one group or no difference; Monte Carlo past max_exact."""
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(7), rng.integers(3, 9, 7))
    ca = rng.random(len(g)) + 0.05 * (g % 3)
    cb = rng.random(len(g))
    r = R.group_sign_flip_test(ca, cb, g)
    sums = np.bincount(g, weights=ca - cb)
    ref = stats.permutation_test((sums,), np.sum, permutation_type="samples", n_resamples=np.inf,
                                 alternative="two-sided").pvalue
    assert r["exact"] and r["n_groups"] == 7 and r["perm_p"] == pytest.approx(ref)
    assert r["p_floor"] == pytest.approx(2 / 128) and r["diff"] == pytest.approx((ca - cb).mean())
    big = R.group_sign_flip_test(ca + 1, cb, g)  # every group gains: only +-all reach it
    assert big["perm_p"] == pytest.approx(2 / 128)
    assert math.isnan(R.group_sign_flip_test(ca, cb, np.zeros(len(g)))["perm_p"])
    assert math.isnan(R.group_sign_flip_test(ca, ca, g)["perm_p"])
    mc = R.group_sign_flip_test(ca, cb, g, max_exact=4, n_mc=20000)
    assert not mc["exact"] and mc["perm_p"] == pytest.approx(r["perm_p"], abs=0.02)
