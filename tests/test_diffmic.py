"""Tests of the DiffMIC-v2 study (mdlib.studies.diffmic; notebooks 17-18): the dense map's
formula, the ROI windows, per-point timesteps in training and one t per step at inference,
the sampler's start from N(M, I), determinism, refused parameters, the test-split swap,
FLOP accounting of the benchmark and the statistics. Tiny tensors and a tiny synthetic
dataset; the notebooks run the study on the smoke profile through nbval."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from mdlib import profiles
from mdlib.data import ImageDataset
from mdlib.studies.diffmic import analysis, bench, model as M, study
from mdlib.studies.diffmic.train import StageConfig, predict, train_dcg, train_diffmic

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(backbone_kwargs={"width": 4}, local_kwargs={"width": 4}, raw_kwargs={"width": 4},
            roi_kwargs={"width": 4}, hidden=8, attn_dim=8, temb_dim=8, k=3, n_points=4,
            roi_frac=0.25)


def tiny_cfg(**kw) -> M.DiffMICConfig:
    return M.DiffMICConfig(n_classes=2, in_chans=1, img_size=16, **{**TINY, **kw})


def tiny_dataset(seed: int = 0, n=(24, 12, 12), size=16) -> ImageDataset:
    """Two classes that differ in brightness, so a few steps learn something."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name, k in zip(("train", "val", "test"), n):
        y = np.arange(k) % 2
        x = rng.integers(0, 120, (k, size, size, 1)) + 100 * y[:, None, None, None]
        splits[name] = (x.astype(np.uint8), y.astype(np.int64))
    return ImageDataset("tiny", size, 2, 1, "ultrasound", ("a", "b"), splits)


STAGE = dict(epochs=2, batch_size=8, eval_every=1, eval_batch_size=5)


# --------------------------------------------------------------------------- guidance map
def test_dense_map_is_eq_4_and_5():
    g = torch.Generator().manual_seed(0)
    p_g = torch.softmax(torch.randn(3, 4, generator=g), 1)
    p_l = torch.softmax(torch.randn(3, 4, generator=g), 1)
    n = 5
    m = M.dense_map(p_g, p_l, n)
    assert m.shape == (3, 4, n, n)
    for i in range(n):
        for j in range(n):
            d = abs(i - j) / (n - 1)
            assert torch.allclose(m[:, :, i, j], (1 - d) * p_g + d * p_l, atol=1e-6)
    assert torch.allclose(m, m.transpose(2, 3))                       # symmetric
    assert torch.allclose(m[:, :, 2, 2], p_g) and torch.allclose(m[:, :, 0, n - 1], p_l)
    assert torch.allclose(m.sum(1), torch.ones(3, n, n), atol=1e-6)   # still distributions
    assert torch.allclose(M.dense_map(p_g, p_l, 1)[:, :, 0, 0], p_g)  # Np = 1: d = 0
    assert M.distance_matrix(3).tolist() == [[0, .5, 1], [.5, 0, .5], [1, .5, 0]]


def test_guidance_of_each_prior_kind():
    p_g = torch.tensor([[0.9, 0.1]])
    p_l = torch.tensor([[0.2, 0.8]])
    torch.manual_seed(0)
    assert M.DiffMICv2(tiny_cfg(prior="none")).guidance(p_g, p_l) is None
    gm = M.DiffMICv2(tiny_cfg(prior="global")).guidance(p_g, p_l)
    assert torch.allclose(gm, p_g[:, :, None, None].expand(-1, -1, 4, 4))
    lm = M.DiffMICv2(tiny_cfg(prior="local")).guidance(p_g, p_l)
    assert torch.allclose(lm, p_l[:, :, None, None].expand(-1, -1, 4, 4))


# --------------------------------------------------------------------------- ROIs
def test_roi_windows_greedy_distinct_and_crops():
    sal = torch.zeros(1, 2, 6, 6)
    sal[0, 0, 1, 1] = 5.0        # strongest peak
    sal[0, 1, 4, 3] = 4.0        # peak of the other class (each class is normalised)
    sal[0, 0, 3, 5] = 2.0
    cells = M.roi_windows(sal, 3, 1)
    assert cells[0, :2].tolist() in ([[1, 1], [4, 3]], [[4, 3], [1, 1]])
    assert len({tuple(c) for c in cells[0].tolist()}) == 3
    flat = torch.zeros(2, 1, 4, 4)  # a constant map: windows still distinct
    c2 = M.roi_windows(flat, 16, 1)
    assert all(len({tuple(c) for c in c2[b].tolist()}) == 16 for b in range(2))
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).view(2, 3, 10, 10)
    ul = torch.tensor([[[0, 0], [5, 6]], [[2, 3], [7, 7]]])
    crops = M.crop_rois(x, ul, 3)
    assert crops.shape == (2, 2, 3, 3, 3)
    for b in range(2):
        for k in range(2):
            r, c = ul[b, k].tolist()
            assert torch.equal(crops[b, k], x[b, :, r:r + 3, c:c + 3])
    px = M.cells_to_pixels(torch.tensor([[[6, 6]]]), (7, 7), 28, 4)
    assert px.tolist() == [[[24, 24]]]  # kept inside the image


def test_gated_attention_weights_sum_to_one():
    torch.manual_seed(0)
    att = M.GatedAttention(6, 4)
    r = torch.randn(3, 5, 6)
    z, a = att(r)
    assert torch.allclose(a.sum(1), torch.ones(3))
    assert torch.allclose(z, (a.unsqueeze(-1) * r).sum(1))


def test_dcg_outputs_shapes_and_roi_size():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    dcg = M.DCG(cfg)
    o = dcg(torch.rand(4, 1, 16, 16))
    assert o.logit_g.shape == (4, 2) and o.logit_l.shape == (4, 2)
    assert o.rois.shape == (4, 3, 1, cfg.roi_size, cfg.roi_size)
    assert torch.allclose(o.p_fused, 0.5 * (o.p_g + o.p_l))
    assert M.DiffMICConfig(img_size=28).roi_size == 4 and M.DiffMICConfig(img_size=224).roi_size == 32


# --------------------------------------------------------------------------- timesteps
def _record_denoiser(model):
    calls = []
    fwd = model.denoiser.forward

    def spy(y_t, cond, f, t):
        calls.append({"y_t": y_t.detach().clone(), "t": t.detach().clone()})
        return fwd(y_t, cond, f, t)
    model.denoiser.forward = spy
    return calls


def test_per_point_timesteps_in_training_shared_in_vanilla():
    g = torch.Generator().manual_seed(0)
    het = M.DiffMICv2(tiny_cfg(n_points=5))
    t = het.train_timesteps(16, g)
    assert t.shape == (16, 5, 5)
    assert all(len(torch.unique(t[b])) > 1 for b in range(16))  # points differ
    van = M.DiffMICv2(tiny_cfg(n_points=5, timesteps="shared"))
    tv = van.train_timesteps(16, g)
    assert all(len(torch.unique(tv[b])) == 1 for b in range(16))
    assert len(torch.unique(tv[:, 0, 0])) > 1  # but images differ
    # the loss hands the per-point timesteps to the denoiser
    calls = _record_denoiser(het)
    x, y = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 0, 1])
    rois = torch.rand(4, 3, 1, het.cfg.roi_size, het.cfg.roi_size)
    p = torch.full((4, 2), 0.5)
    het.loss(x, rois, y, p, p, g)
    assert len(torch.unique(calls[0]["t"][0])) > 1


def test_per_point_timestep_embedding_differs_by_point():
    torch.manual_seed(0)
    d = M.Denoiser(2, 2, 8, 3, 8)
    torch.nn.init.normal_(d.temb[2].weight)
    t = torch.tensor([[[0, 999], [500, 0]]])
    e = d.timestep_embedding(t)                      # (L, 2, B, H, Np, Np)
    assert e.shape == (3, 2, 1, 8, 2, 2)
    assert torch.allclose(e[..., 0, 0], e[..., 1, 1])      # same t, same embedding
    assert not torch.allclose(e[..., 0, 0], e[..., 0, 1])  # other t, other embedding


def test_inference_same_t_at_every_point_and_ddim_schedule():
    torch.manual_seed(0)
    model = M.DiffMICv2(tiny_cfg(sample_steps=10)).eval()
    calls = _record_denoiser(model)
    x = torch.rand(3, 1, 16, 16)
    rois = torch.rand(3, 3, 1, model.cfg.roi_size, model.cfg.roi_size)
    p = torch.softmax(torch.randn(3, 2), 1)
    model.sample(x, rois, p, p, model.draw_noise(3, torch.Generator().manual_seed(1)))
    assert len(calls) == 10
    ts = [int(c["t"].flatten()[0]) for c in calls]
    assert ts == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert all(bool((c["t"] == c["t"].flatten()[0]).all()) for c in calls)


def test_sampler_starts_from_normal_around_the_dense_map():
    torch.manual_seed(0)
    model = M.DiffMICv2(tiny_cfg()).eval()
    calls = _record_denoiser(model)
    g = torch.Generator().manual_seed(0)
    p_g, p_l = torch.softmax(torch.randn(6, 2, generator=g), 1), torch.softmax(torch.randn(6, 2, generator=g), 1)
    noise = model.draw_noise(6, g)
    x = torch.rand(6, 1, 16, 16)
    rois = torch.rand(6, 3, 1, model.cfg.roi_size, model.cfg.roi_size)
    model.sample(x, rois, p_g, p_l, noise)
    m = M.dense_map(p_g, p_l, 4)
    assert torch.allclose(calls[0]["y_t"], m + noise["gauss"])      # y_T = M + z
    big = model.draw_noise(4000, torch.Generator().manual_seed(2))
    mm = M.dense_map(torch.full((4000, 2), 0.3), torch.full((4000, 2), 0.7), 4)
    z = model.initial(mm, big) - mm
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02   # N(M, I)
    uni = M.DiffMICv2(tiny_cfg(init="uniform")).initial(mm, big)          # the code's start
    assert float(uni.min()) >= 0 and float(uni.max()) <= 1
    assert torch.allclose(uni, M.dense_map(big["uniform"][:, 0], big["uniform"][:, 1], 4))


def test_prediction_does_not_depend_on_batch_size():
    torch.manual_seed(0)
    model = M.DiffMICv2(tiny_cfg()).eval()
    torch.nn.init.normal_(model.denoiser.out.weight, std=0.1)
    x = torch.rand(7, 1, 16, 16)
    ul = torch.zeros(7, 3, 2, dtype=torch.long)
    p = torch.softmax(torch.randn(7, 2), 1)
    noise = model.draw_noise(7, torch.Generator().manual_seed(0))
    a = predict(model, x, ul, p, p, noise, batch_size=7)
    b = predict(model, x, ul, p, p, noise, batch_size=2)
    assert np.allclose(a, b, atol=1e-5) and np.allclose(a.sum(1), 1)


def test_to_probs():
    p = M.to_probs(torch.tensor([[0.8, 0.2], [-0.3, 0.9], [-1.0, -1.0]]))
    assert torch.allclose(p.sum(1), torch.ones(3))
    assert p[1, 0] < 1e-5 and torch.allclose(p[2], torch.tensor([0.5, 0.5]))


# --------------------------------------------------------------------------- refused
def test_bad_parameters_refused():
    with pytest.raises(ValueError, match="n_points=0"):
        M.DiffMICConfig(n_points=0)
    with pytest.raises(ValueError, match="n_points"):
        M.distance_matrix(0)
    with pytest.raises(ValueError, match="kernel=2"):
        M.DiffMICConfig(kernel=2)
    with pytest.raises(ValueError, match="prior="):
        M.DiffMICConfig(prior="both")
    with pytest.raises(ValueError, match="sample_steps"):
        M.DiffMICConfig(sample_steps=2000)
    # 16 px small CNN: a 4x4 saliency map, 1x1-cell windows: 16 windows
    M.DCG(tiny_cfg(k=16))
    with pytest.raises(ValueError, match="k=17 is larger than the 16 ROI windows"):
        M.DCG(tiny_cfg(k=17))
    with pytest.raises(ValueError, match="k=50"):
        M.roi_windows(torch.zeros(1, 2, 7, 7), 50, 1)
    with pytest.raises(ValueError, match="cannot encode the 2x2 px ROIs"):
        M.DCG(tiny_cfg(roi_frac=32 / 224))
    with pytest.raises(ValueError, match="select_metric"):
        StageConfig(select_metric="loss")
    with pytest.raises(ValueError, match="dcg_mode"):
        train_diffmic(tiny_dataset(), tiny_cfg(), StageConfig(), priors={}, dcg_mode="both")


def test_profile_section_checked_before_work():
    base = profiles.load("smoke")
    for bad, match in [
        ({"datasets": ["chestmnist9"]}, "unknown"),
        ({"sizes": {"breastmnist": [48]}}, "available"),
        ({"model": {"n_points": 0}}, "n_points=0"),
        ({"model": {"nonsense": 1}}, "unknown key"),
        ({"ablation": {"variants": ["C9"]}}, "C9"),
        ({"sensitivity": {"k": [0]}}, "sensitivity.k"),
        ({"tea": 1}, "unknown key"),
    ]:
        prof = profiles.load("smoke", overrides={"diffmic": bad})
        with pytest.raises(ValueError, match=match):
            study.settings(prof)
    with pytest.raises(ValueError, match="unknown dataset"):
        study.parse_setting("nodata@28", base)
    with pytest.raises(ValueError, match="variant"):
        study.diffmic_config(base, "breastmnist", 0, "C7")


def test_every_profile_has_a_valid_section_and_the_grid_has_no_duplicates():
    for name in ("smoke", "cpu", "gpu"):
        s = study.settings(profiles.load(name))
        assert s["seeds"]
    prof = profiles.load("smoke")
    first, second = study.grid(prof)
    hashes = [j["run"] for j in first + second]
    assert len(hashes) == len(set(hashes))
    kinds = {j["kind"] for j in first} | {j["kind"] for j in second}
    assert kinds == {"c1", "dcg", "diffmic"}
    # a sweep's default value is the default run itself (normalised overrides)
    assert (study.job_run(prof, study._job("diffmic", "breastmnist", 0, "full", {"n_points": 6})).hash
            == study.job_run(prof, study._job("diffmic", "breastmnist", 0, "full")).hash)
    # C1 gets the steps of both stages
    assert study.c1_train_config(prof, "breastmnist", 0).epochs == 4
    assert study.parse_setting("breastmnist@64", prof) == ("breastmnist", 64)


def test_pretrained_missing_is_a_clear_error(monkeypatch):
    def offline(*a, **k):
        raise OSError("no connection")
    monkeypatch.setattr(M, "build_model", offline)
    with pytest.raises(RuntimeError, match="pretrained weights for 'resnet18' are not available"):
        M.build_encoder("resnet18", 1, 28, pretrained=True)
    with pytest.raises(OSError):
        M.build_encoder("resnet18", 1, 28, pretrained=False)


# --------------------------------------------------------------------------- training
def _train(data, seed=0, **kw):
    cfg = tiny_cfg(**kw)
    d = train_dcg(data, cfg, StageConfig(seed=seed, **STAGE), progress=False)
    q = train_diffmic(data, cfg, StageConfig(seed=seed, **STAGE), priors=d.extras["priors"],
                      progress=False)
    return d, q


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_determinism_for_a_fixed_seed():
    data = tiny_dataset()
    d1, q1 = _train(data, 0)
    d2, q2 = _train(data, 0)
    assert _same_state(d1.state_dict, d2.state_dict) and _same_state(q1.state_dict, q2.state_dict)
    pd.testing.assert_frame_equal(q1.history, q2.history)
    assert np.array_equal(q1.test_probs, q2.test_probs)
    assert np.array_equal(q1.extras["trajectory"], q2.extras["trajectory"])
    _, q3 = _train(data, 1)
    assert not _same_state(q1.state_dict, q3.state_dict)
    assert q1.extras["trajectory"].shape == (11, 12, 2, 4, 4)
    assert np.allclose(q1.test_probs.sum(1), 1)


def test_swapping_the_test_split_changes_neither_model_nor_prior():
    data = tiny_dataset(0)
    other = tiny_dataset(7)  # different images and labels order
    x_te, y_te = other.splits["test"]
    swapped = copy.copy(data)
    swapped.splits = dict(data.splits, test=(x_te, 1 - y_te))
    d1, q1 = _train(data)
    d2, q2 = _train(swapped)
    assert d1.best_epoch == d2.best_epoch and q1.best_epoch == q2.best_epoch
    assert _same_state(d1.state_dict, d2.state_dict)              # the DCG (the prior)
    for split in ("train", "val"):
        for k, v in d1.extras["priors"][split].items():
            assert torch.equal(v, d2.extras["priors"][split][k]), (split, k)
    assert _same_state(q1.state_dict, q2.state_dict)              # the selected model
    pd.testing.assert_frame_equal(q1.history, q2.history)
    assert q1.val == q2.val
    assert not np.array_equal(q1.test_labels, q2.test_labels)     # the swap did happen


def test_joint_dcg_mode_trains_the_dcg_too():
    data = tiny_dataset()
    cfg = tiny_cfg()
    d = train_dcg(data, cfg, StageConfig(**STAGE), progress=False)
    q = train_diffmic(data, cfg, StageConfig(**STAGE), dcg=d.model, dcg_mode="joint",
                      progress=False)
    dcg_keys = [k for k in q.state_dict if k.startswith("dcg.")]
    assert dcg_keys
    changed = any(not torch.equal(q.state_dict[k], d.state_dict[k[4:]]) for k in dcg_keys
                  if q.state_dict[k].is_floating_point())
    assert changed and q.test_probs.shape == (12, 2)


# --------------------------------------------------------------------------- benchmark
def test_bench_flops_add_up_and_grow_with_steps():
    cfg = tiny_cfg()
    t = bench.case("tiny", cfg, batch=4, steps=(2, 8), repeats=1)
    m = t[t.row == "method"].set_index("method")
    p = t[t.row == "part"].set_index("method")
    assert (m.gflops_per_image > 0).all()
    f2, f8 = m.loc["DiffMIC-v2 (2 steps)", "gflops_per_image"], m.loc["DiffMIC-v2 (8 steps)", "gflops_per_image"]
    step = p.loc["denoiser, one step", "gflops_per_image"]
    assert np.isclose(f8 - f2, 6 * step, rtol=1e-6)
    once = (p.loc["DCG global branch"] + p.loc["DCG local branch (K ROIs)"]
            + p.loc["feature prior F (raw + ROI encoders)"]).gflops_per_image
    assert np.isclose(f2, once + 2 * step, rtol=0.02)  # the parts account for the pipeline
    chk = bench.target_check(t, steps=2)
    assert chk.loc[0, "dominant_part"] in set(p.index)


# --------------------------------------------------------------------------- statistics
def test_stars():
    assert [analysis.stars(p) for p in (0.005, 0.03, 0.07, 0.2, np.nan)] == ["***", "**", "*", "n.s.", "-"]


def test_primary_is_unadjusted_and_the_rest_holm(tmp_path):
    rows = []
    rng = np.random.default_rng(0)
    for method, shift in (("full", 0.05), ("C1", 0.0), ("DCG", 0.01)):
        for seed in range(3):
            d = tmp_path / f"{method}{seed}"
            d.mkdir()
            probs = rng.random((10, 2))
            pd.DataFrame({"test_index": range(10), "label": rng.integers(0, 2, 10),
                          "p0": probs[:, 0], "p1": probs[:, 1]}).to_csv(d / "test_predictions.csv", index=False)
            rows.append({"setting": "s", "dataset": "breastmnist", "image_size": 28, "method": method,
                         "seed": seed, "overrides": "{}", "run_dir": str(d),
                         **{m: 0.7 + shift + 0.01 * rng.random() for m in analysis.METRICS}})
    df = pd.DataFrame(rows)
    t = analysis.table2_tests(df, ["s"])
    prim = t[t.role == "primary"]
    assert len(prim) == 1 and prim.iloc[0].metric == "test_acc" and prim.iloc[0].b == "C1"
    assert np.isnan(prim.iloc[0].p_holm) and prim.iloc[0].p_used == prim.iloc[0].t_p
    sec = t[t.role == "secondary"]
    assert np.allclose(sec.p_holm.to_numpy(), analysis.results.holm(sec.t_p.to_numpy()), equal_nan=True)
    assert "img_p" in t and np.isfinite(prim.iloc[0].img_p)
    assert prim.iloc[0].mde == pytest.approx(analysis.results.min_detectable_difference(
        prim.iloc[0].diff_sd, 3))
    same = df.copy()  # every seed the same difference: no spread, nothing detectable is defined
    same.loc[same.method == "full", "test_acc"] = same.loc[same.method == "C1", "test_acc"].to_numpy() + 0.02
    p0 = analysis.table2_tests(same, ["s"]).query("role == 'primary'").iloc[0]
    assert np.isnan(p0.mde) and np.isnan(p0.t_p)
    tab = analysis.table2(df, ["s"])
    assert list(tab.method) == ["C1", "DCG", "full"] and tab.ref_v2_resnet18_28_acc.iloc[0] == 0.863
    at64 = pd.concat([df, df.assign(setting="s@64", image_size=64)])  # the 28 px reference
    tab = analysis.table2(at64, ["s", "s@64"])                         # stands at 28 px only
    assert (tab[tab.setting == "s"].ref_v2_resnet18_28_acc == 0.863).all()
    assert tab[tab.setting == "s@64"].ref_v2_resnet18_28_acc.isna().all()


def test_findings_count_the_primary_tests_by_fixed_rules(tmp_path):
    """The README's sentence counts significant gains / losses from the primary rows only,
    says where the t-test is undefined, and gives the range of the differences."""
    import pandas as pd
    from mdlib.studies.diffmic import report
    pd.DataFrame([
        dict(setting="a", role="primary", diff=-0.05, t_p=0.01, n_seeds=3),
        dict(setting="b", role="primary", diff=0.02, t_p=0.40, n_seeds=3),
        dict(setting="c", role="primary", diff=-0.01, t_p=float("nan"), n_seeds=3),
        dict(setting="a", role="secondary", diff=0.30, t_p=0.001, n_seeds=3),
    ]).to_csv(tmp_path / "17_table2_tests.csv", index=False)
    text = report.findings_section(tmp_path, "cpu")[0]
    assert "higher test accuracy than its own plain backbone C1 in 0 of 3 settings" in text
    assert "significantly lower one in 1" in text and "undefined in 1" in text
    assert "from -0.050 to +0.020" in text and "3 matched seeds" in text
    assert report.findings_section(tmp_path / "none", "cpu") == []
