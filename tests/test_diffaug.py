"""The DiffAug study: prompts and their embeddings, placement on normal tissue, the gate's
IoU, the generator (Eq. 7, guided DDIM inpainting that leaves the background untouched),
statistics, and the protocol's promise that the test frames never reach training: swapping
them changes nothing the autoencoder, generator, gate and segmenters learned."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mdlib import profiles
from mdlib.models import segmentation as sm
from mdlib.studies.diffaug import analysis, evaluate, prompts as P, synthesis as S

pytestmark = pytest.mark.usefixtures("one_thread")


def disk(size, cy, cx, r):
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


# --------------------------------------------------------------------------- prompts
def test_attribute_words_and_prompt():
    img = (120 + np.random.default_rng(0).integers(0, 9, (96, 96, 1))).astype(np.uint8).repeat(3, -1)
    m = np.zeros((96, 96), bool)
    m[12:21, 12:21] = True                        # 81 px = 0.9%: small, convex, upper left
    img[m] = (200, 60, 60)                        # redder than the mucosa, flat (smooth)
    a = P.attributes(img, m.astype(np.uint8))
    th = P.Thresholds(redness_lo=0.0, redness_hi=10.0, texture_mid=5.0)
    w = P.words(a, th)
    assert (w["size"], w["shape"], w["colour"], w["location"]) == ("small", "round", "reddish", "upper left")
    assert P.compose(w) == ("colonoscopy frame with a small round reddish polyp with a smooth surface "
                            "at the upper left")
    big = np.zeros((96, 96), bool)
    big[30:70, 20:80] = True                      # 26%: large, oval (eccentricity 0.8)
    w2 = P.words(P.attributes(img, big.astype(np.uint8)), th)
    assert w2["size"] == "large" and w2["shape"] in ("oval", "round") and w2["location"] == "centre"
    lobed = disk(96, 50, 40, 12) | disk(96, 50, 62, 12)
    lobed[50:, :] = False
    assert P.words(P.attributes(img, lobed.astype(np.uint8)), th)["shape"] == "irregular lobulated"
    assert P.paper_prompts() and "healthy mucosa" in P.PAPER_BANK["negative"]


def test_thresholds_are_training_terciles():
    t = pd.DataFrame({"redness": np.arange(9.0), "texture": np.arange(9.0)})
    th = P.fit_thresholds(t)
    assert th.redness_lo == pytest.approx(np.quantile(np.arange(9.0), 1 / 3))
    assert th.texture_mid == 4.0


def test_text_encoder_offline_token_embeddings():
    enc = P.TextEncoder(max_tokens=16)
    e, m = enc.encode(["a small polyp", "", "a small polyp", "a large pedunculated polyp"])
    assert e.shape == (4, 16, enc.dim) and enc.dim == 384 and m.shape == (4, 16)
    assert np.array_equal(e[0], e[2]) and not np.allclose(e[0], e[3])
    assert m[1].sum() == 2 and m[0].sum() > m[1].sum()      # "" is [CLS] [SEP]
    assert (e[~m] == 0).all()


# --------------------------------------------------------------------------- synthesis
def test_placement_stays_inside_the_allowed_region():
    rng = np.random.default_rng(0)
    allowed = np.zeros((64, 64), bool)
    allowed[8:40, 20:60] = True
    crop = disk(13, 6, 6, 6)
    for _ in range(20):
        placed, geo = S.place(crop, allowed, rng, scale=(0.6, 1.3))
        assert placed is not None and placed.any() and not (placed & ~allowed).any()
    none, _ = S.place(crop, np.zeros((64, 64), bool), rng)
    assert none is None


def test_visible_field_excludes_the_black_border():
    f = np.full((64, 64, 3), 150, np.uint8)
    f[:, :10] = 0
    v = S.visible_field(f, 3)
    assert not v[:, :8].any() and v[20:40, 20:40].all() and not v[:2].any()


def _train_set(n=6, size=64, seed=0):
    rng = np.random.default_rng(seed)
    x = np.full((n, size, size, 3), 140, np.uint8) + rng.integers(0, 10, (n, size, size, 1)).astype(np.uint8)
    m = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        m[i][disk(size, 20 + 3 * i, 20, 6)] = 1
    return x, m


def test_plan_is_deterministic_and_avoids_the_own_polyp():
    x, m = _train_set()
    perm = np.random.default_rng(0).permutation(len(x))
    donors = [{"colour": "pale", "surface": "smooth surface"}, {"colour": "", "surface": "irregular surface"}]
    a = S.plan_sample(3, x, m, perm, donors, seed=7)
    b = S.plan_sample(3, x, m, perm, donors, seed=7)
    assert a["record"] == b["record"] and np.array_equal(a["mask"], b["mask"])
    r = a["record"]
    assert r["target"] == perm[3] and r["source"] != r["target"] and r["placed"]
    from scipy import ndimage as ndi
    near_own = ndi.binary_dilation(m[r["target"]] > 0, iterations=2)
    assert not (a["mask"] & near_own).any()
    assert r["prompt_text"].startswith("colonoscopy frame with a ")
    assert S.prompt_for(r, "single_prompt") == P.GENERIC_PROMPT and S.prompt_for(r, "no_text") == ""


def test_gate_iou_ignores_the_frames_own_polyp():
    own = np.zeros((1, 20, 20), bool)
    own[0, 0:4, 0:4] = True
    intended = np.zeros_like(own)
    intended[0, 10:16, 10:16] = True              # 36 px
    pred = own | intended                          # finds both polyps
    assert S.gate_iou(pred, intended, own, margin_px=3)[0] == 1.0
    half = own.copy()
    half[0, 10:16, 10:13] = True                   # half of the new polyp
    assert S.gate_iou(half, intended, own, margin_px=3)[0] == pytest.approx(18 / 36)
    nothing = own.copy()
    assert S.gate_iou(nothing, intended, own, margin_px=3)[0] == 0.0


# --------------------------------------------------------------------------- generator
def _tiny_codec():
    ae = sm.build_autoencoder(sm.AEConfig(block_out_channels=(8, 8), norm_num_groups=4))
    return sm.LatentCodec(ae, 1.0)


def test_generator_trains_and_inpaints_only_the_region():
    from mdlib.studies.diffaug.generator import GenTrainConfig, _feather, inpaint, train_generator
    codec = _tiny_codec()
    net = sm.InpaintConfig(block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=12)
    frames = torch.rand(4, 3, 16, 16)
    masks = torch.zeros(4, 1, 16, 16)
    masks[:, :, 4:10, 4:10] = 1
    emb = np.random.default_rng(0).normal(size=(3, 5, 12)).astype(np.float32)
    emsk = np.ones((3, 5), bool)
    cfg = GenTrainConfig(steps=3, batch_size=2, warmup_steps=1, checkpoint_every=100)
    ema, raw, hist, _ = train_generator(codec, frames, masks, emb, emsk, np.array([2, 2, 2, 2]), 0, 1,
                                        net, cfg, progress=False)
    assert len(hist) == 3 and np.isfinite(hist[["inside", "outside"]].to_numpy()).all()
    assert (hist.outside > 0).all()                # the preservation term is live (has a gradient)
    unet = sm.build_inpaint_unet(net, 4)
    unet.load_state_dict(ema)
    region = torch.zeros(2, 1, 16, 16)
    region[:, :, 5:9, 5:9] = 1
    cond = (emb[[2, 2]], emsk[[2, 2]])
    out1 = inpaint(unet, codec, frames[:2], region, cond, (emb[:1], emsk[:1]), [1, 2], steps=3, guidance=3.0)
    out2 = inpaint(unet, codec, frames[:2], region, cond, (emb[:1], emsk[:1]), [1, 2], steps=3, guidance=3.0)
    assert torch.equal(out1, out2)                 # seeded per sample
    w = _feather(region, 1.0 * 16 / 96)
    keep = (w == 0).expand_as(out1)
    assert keep.any() and torch.equal(out1[keep], frames[:2][keep])   # background untouched
    assert not torch.equal(out1[~keep], frames[:2][~keep])
    plain = inpaint(unet, codec, frames[:2], region, cond, (emb[:1], emsk[:1]), [1, 2], steps=3, guidance=1.0)
    assert plain.shape == out1.shape
    # clip_x0 bounds the clean-latent estimate at every step, so the final latent stays near
    # [-clip, clip] (the last step adds sqrt(1 - a_0) of the noise estimate); without it the
    # barely trained network's first estimates are far out
    seen = []
    decode = codec.decode
    codec.decode = lambda z: (seen.append(z.clone()), decode(z))[1]
    inpaint(unet, codec, frames[:2], region, cond, (emb[:1], emsk[:1]), [1, 2], steps=3, guidance=3.0)
    inpaint(unet, codec, frames[:2], region, cond, (emb[:1], emsk[:1]), [1, 2], steps=3, guidance=3.0,
            clip_x0=0.05)
    codec.decode = decode
    assert seen[0].abs().max() > 1.0 and seen[1].abs().max() < 0.2


def test_clip_x0_setting_is_checked_up_front():
    from mdlib.studies.diffaug import study
    assert study.clip_x0(profiles.load("cpu")) == 3.0
    for bad in (-1, 0, "3", True):
        p = profiles.load("smoke", overrides={"diffaug": {"synthesis": {"clip_x0": bad}}})
        with pytest.raises(ValueError, match="diffaug.synthesis.clip_x0"):
            study.settings(p)


# --------------------------------------------------------------------------- statistics
def test_group_bootstrap_and_detectable_difference():
    from scipy import stats
    same = analysis.group_bootstrap(np.full(12, 0.5), np.full(12, 0.4), np.repeat(np.arange(4), 3))
    assert same["diff"] == pytest.approx(0.1) and same["boot_lo"] == pytest.approx(0.1)
    assert same["boot_hi"] == pytest.approx(0.1) and same["n_groups"] == 4 and same["n_units"] == 12
    assert np.isnan(same["boot_p"])  # every difference equal: nothing to resample, not p = 0
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(6), 20)
    d = np.repeat(rng.normal(0, 1, 6), 20) + rng.normal(0, 0.05, 120)   # differences shared within a group
    grouped = analysis.group_bootstrap(d, np.zeros(120), g)
    frames = analysis.group_bootstrap(d, np.zeros(120), np.arange(120))
    assert grouped["boot_hi"] - grouped["boot_lo"] > 3 * (frames["boot_hi"] - frames["boot_lo"])
    x = np.array([0.01, 0.03, 0.02])
    mdd = analysis.detectable_difference(x)  # exact (noncentral t): at that mean difference a
    nc = mdd / x.std(ddof=1) * np.sqrt(3)    # paired t-test over 3 seeds has power 0.8
    tc = stats.t.ppf(0.975, 2)
    assert stats.nct.sf(tc, 2, nc) + stats.nct.cdf(-tc, 2, nc) == pytest.approx(0.8, abs=1e-4)
    shortcut = (tc + stats.t.ppf(0.8, 2)) * x.std(ddof=1) / np.sqrt(3)
    assert mdd > shortcut  # the textbook shortcut understates it at 2 degrees of freedom
    assert np.isnan(analysis.detectable_difference([0.1]))
    assert np.isnan(analysis.detectable_difference([0.02, 0.02, 0.02]))  # no spread


def test_family_shows_the_primary_unadjusted_and_the_rest_holm_adjusted(tmp_path):
    """test_family: the primary alone (its p in t_p_adj as it is, t_p_holm empty), the
    others one Holm family; adjustment says which for every row."""
    from mdlib.runs.results import group_sign_flip_test, holm
    rng = np.random.default_rng(0)
    rows, per_seed = [], {}
    for label, shift in (("base", 0.0), ("with", 0.03), ("other", 0.01), ("third", -0.01)):
        for seed in range(3):
            d = tmp_path / f"{label}{seed}"
            d.mkdir()
            dice = np.clip(0.5 + shift + rng.normal(0, 0.05, 24), 0, 1)
            per_seed.setdefault(label, []).append(dice)
            pd.DataFrame({"id": [str(i) for i in range(24)], "group": np.repeat(np.arange(6), 4),
                          "dice": dice}).to_csv(d / "test_per_image.csv", index=False)
            rows.append({"label": label, "seed": seed, "run_dir": str(d), "test_dice": dice.mean()})
    df = pd.DataFrame(rows)
    t = analysis.test_family(df, ("with", "base", "test_dice"),
                             [("other", "base", "test_dice"), ("third", "base", "test_dice")])
    p, sec = t[t.role == "primary"].iloc[0], t[t.role == "secondary"]
    assert np.isnan(p.t_p_holm) and p.t_p_adj == p.t_p and p.boot_p_adj == p.boot_p
    assert p.adjustment == "primary: not adjusted" and (sec.adjustment == "Holm, family of 2").all()
    assert np.allclose(sec.t_p_adj, holm(sec.t_p.to_numpy(), m=2)) and np.allclose(sec.t_p_adj, sec.t_p_holm)
    assert np.allclose(sec.perm_p_adj, holm(sec.perm_p.to_numpy(), m=2)) and p.perm_p_adj == p.perm_p
    assert (t.n_groups == 6).all() and (t.n_seeds == 3).all()
    assert (t.perm_p_floor == 2 / 64).all()  # 6 sequences
    groups = np.repeat(np.arange(6), 4)
    for _, r in t.iterrows():  # the sign-flip test of the seed-averaged per-frame differences
        ref = group_sign_flip_test(np.mean(per_seed[r.a], 0), np.mean(per_seed[r.b], 0), groups)
        assert r.perm_p == pytest.approx(ref["perm_p"]) and 2 / 64 <= r.perm_p <= 1


# --------------------------------------------------------------------------- the protocol
def _folder(root, seed=0, n=80, size=32, replace_ids=()):
    """Frames named 1..n (CVC-ClinicDB's first five sequences) with one reddish blob each."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for i in range(1, n + 1):
        r = np.random.default_rng([seed + (1000 if str(i) in replace_ids else 0), i])
        x = np.full((size, size, 3), (150, 110, 100), np.uint8) + r.integers(0, 20, (size, size, 1)).astype(np.uint8)
        m = disk(size, int(r.integers(8, 24)), int(r.integers(8, 24)), int(r.integers(3, 7)))
        x[m] = (200, 70, 60)
        Image.fromarray(x).save(root / "images" / f"{i}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"{i}.png")
    return root


def _tiny_profile(root):
    return profiles.load("smoke", overrides={"diffaug": {
        "data": {"root": str(root), "n_test": 16, "n_val": 12, "split_seed": 0},
        "subset": {"train": 20, "val": 6, "test": None}, "image_size": 32, "jobs": 1,
        "autoencoder": {"steps": 2, "batch_size": 4},
        "train": {"steps": 2, "batch_size": 4, "eval_every": 1, "checkpoint_every": 1},
        "generator": {"train": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 1}},
        "synthesis": {"steps": 2, "batch": 8, "max_generations_factor": 0.5},
        "gate": {"theta": 0.01, "iterative_steps": 2, "seed": 0}, "multiples": [0.5, 1]}})


def _learned(prof):
    from mdlib.studies.diffaug import study
    study._DATA.clear()
    study._CACHE.clear()
    ae = study.autoencoder_run(prof, progress=False)
    judge = study.segmenter_run(prof, study.arm("unet"), 0, progress=False)
    gate = study.segmenter_run(prof, study.gate_arm(), 0, progress=False)
    gen = study.generator_run(prof, progress=False)
    pool = study.ensure_pool(prof, "text", progress=False)
    aug = study.segmenter_run(prof, study.arm("unet", "text", "single", 1.0), 0, progress=False)
    from mdlib.train.checkpoints import load_checkpoint
    w = {"autoencoder": load_checkpoint(ae.path("ae.safetensors"))[0],
         "judge U-Net": load_checkpoint(judge.path("model.safetensors"))[0],
         "gate": load_checkpoint(gate.path("model.safetensors"))[0],
         "generator": load_checkpoint(gen.path("unet_ema.safetensors"))[0],
         "U-Net + DiffAug": load_checkpoint(aug.path("model.safetensors"))[0]}
    p = study.read_pool(pool)
    return w, p, judge, study.dataset(prof)


def test_swapping_the_test_frames_changes_nothing_learned(tmp_path, monkeypatch):
    a_root = _folder(tmp_path / "a")
    prof_a = _tiny_profile(a_root)
    monkeypatch.setenv("MDLIB_RUNS_ROOT", str(tmp_path / "runs_a"))
    wa, pa, judge_a, ds_a = _learned(prof_a)
    test_ids = set(ds_a.ids_of("test"))
    assert len(test_ids) >= 10
    b_root = _folder(tmp_path / "b", replace_ids=test_ids)      # only the test frames differ
    prof_b = _tiny_profile(b_root)
    monkeypatch.setenv("MDLIB_RUNS_ROOT", str(tmp_path / "runs_b"))
    wb, pb, judge_b, ds_b = _learned(prof_b)
    assert not np.array_equal(ds_a.x("test"), ds_b.x("test"))      # the swap happened
    assert np.array_equal(ds_a.x("train"), ds_b.x("train")) and np.array_equal(ds_a.x("val"), ds_b.x("val"))
    for name in wa:
        assert wa[name].keys() == wb[name].keys(), name
        same = all(torch.equal(wa[name][k], wb[name][k]) for k in wa[name])
        assert same, f"{name}: weights depend on the test frames"
    assert np.array_equal(pa["x"], pb["x"]) and np.array_equal(pa["iou_single"], pb["iou_single"])
    ta = pd.read_csv(judge_a.path("test_per_image.csv"))
    tb = pd.read_csv(judge_b.path("test_per_image.csv"))
    assert not np.allclose(ta.dice, tb.dice)                       # ... and the test itself changed
    # the evaluation command on a folder pair reproduces the run's own test record
    sub = tmp_path / "ext"
    for d in ("images", "masks"):
        (sub / d).mkdir(parents=True)
        for i in ds_a.ids_of("test"):
            shutil.copy(a_root / d / f"{i}.png", sub / d / f"{i}.png")
    out = tmp_path / "per_image.csv"
    assert evaluate.main([str(judge_a.dir), str(sub), "--out", str(out)]) == 0
    ev = pd.read_csv(out, dtype={"id": str}).merge(ta.astype({"id": str}), on="id", suffixes=("_cmd", "_run"))
    assert len(ev) == len(ta) and np.allclose(ev.dice_cmd, ev.dice_run)
    with pytest.raises(FileNotFoundError, match="not a finished segmenter run"):
        evaluate.evaluate_folder(tmp_path, sub)


def test_theta_rule_is_the_gates_median_validation_iou(tmp_path, monkeypatch):
    """gate.theta = val_median: the threshold is the trained gate's median IoU on the real
    validation frames (the test frames are never shown to it), kept beside the gate's run;
    a threshold that is neither a number in (0, 1) nor a known rule is refused up front."""
    from mdlib.studies.diffaug import study
    root = _folder(tmp_path / "a")
    base = _tiny_profile(root)
    prof = profiles.load("smoke", overrides={"diffaug": {**base["diffaug"],
                                                         "gate": {"theta": "val_median", "iterative_steps": 2, "seed": 0}}})
    study._DATA.clear()
    study._CACHE.clear()
    study.autoencoder_run(prof, progress=False)
    study.segmenter_run(prof, study.gate_arm(), 0, progress=False)
    ds = study.dataset(prof)
    m = ds.m("val") > 0
    shown = []

    def fake_predict(model, x, batch_size=32, steps=1):
        """single step: half the frames right, half shifted away; iterative: all shifted"""
        shown.append((np.asarray(x).copy(), steps))
        p = m.astype(float).copy()
        moved = slice(1, None, 2) if steps == 1 else slice(None)
        p[moved] = np.roll(p[moved], 3, axis=-1)
        return p
    monkeypatch.setattr(study, "predict_masks", fake_predict)
    theta = study.gate_theta(prof)
    pred = m.copy()
    pred[1::2] = np.roll(pred[1::2], 3, axis=-1)
    iou = (pred & m).reshape(len(m), -1).sum(1) / np.maximum((pred | m).reshape(len(m), -1).sum(1), 1)
    assert theta == pytest.approx(float(np.median(iou))) and 0 < theta < 1
    assert len(shown) == 1 and np.array_equal(shown[0][0], ds.x("val"))  # validation frames only
    assert study.gate_theta(prof) == theta and len(shown) == 1          # kept, not recomputed
    assert study.theta_setting(prof) == "val_median"
    # the iterative gate: the same rule with its own inference (2 DDIM steps), its own file
    theta_it = study.gate_theta(prof, "iterative")
    shifted = np.roll(m, 3, axis=-1)
    iou_it = (shifted & m).reshape(len(m), -1).sum(1) / np.maximum((shifted | m).reshape(len(m), -1).sum(1), 1)
    assert theta_it == pytest.approx(float(np.median(iou_it))) and theta_it != theta
    assert len(shown) == 2 and shown[1][1] == 2 and np.array_equal(shown[1][0], ds.x("val"))
    assert study.gate_theta(prof, "iterative") == theta_it and len(shown) == 2
    gate_run = study.gate_model(prof, train=False)[1]
    assert gate_run.read_json("gate_theta_iterative.json")["steps"] == 2
    with pytest.raises(ValueError, match="gate mode"):
        study.gate_theta(prof, "ddim")
    for bad in ("median", 1.5, 0):
        p = profiles.load("smoke", overrides={"diffaug": {"gate": {"theta": bad}}})
        with pytest.raises(ValueError, match="diffaug.gate.theta"):
            study.settings(p)


def test_a_pools_wall_time_leaves_out_its_pauses(tmp_path):
    """pool_active_s: the span of the pool's files, without a gap longer than the pause
    limit (a kill and a later resume), so 16_timing.csv does not count the pause."""
    import os
    from mdlib.studies.diffaug import study
    times = {"config.json": 0, "part_0000.npz": 30, "part_0001.npz": 55, "iter_0000.npz": 80,
             "part_0002.npz": 80 + 3600, "part_0003.npz": 80 + 3620, "DONE": 80 + 3630}
    for name, t in times.items():
        f = tmp_path / name
        f.write_text("x")
        os.utime(f, (1e9 + t, 1e9 + t))
    assert study.pool_active_s(tmp_path) == pytest.approx(80 + 20 + 10)
    assert study.pool_active_s(tmp_path, pause_s=1e9) == pytest.approx(3710)


def test_report_states_table5_direction_from_the_numbers():
    """The README's Table 5 sentence follows the distances: which side is closer, and
    'clearly' only when the subset spreads do not overlap."""
    from mdlib.studies.diffaug.report import _realism_line
    t5 = pd.DataFrame({"set": ["accepted", "rejected", "real (other half of training polyps)"],
                       "fd_mean": [0.5, 0.15, 0.07], "fd_std": [0.05, 0.03, 0.0]})
    far = _realism_line(t5)[0]
    assert "farther from" in far and "less realistic" in far and "do not overlap" in far
    near = _realism_line(t5.assign(fd_mean=[0.14, 0.15, 0.07]))[0]
    assert "closer to" in near and "more realistic" in near and "not clearly" in near
    assert _realism_line(t5[t5.set != "rejected"]) == []


def test_report_family_line_counts_only_what_both_tests_support():
    """The secondary family in words: a comparison counts when both Holm-adjusted tests are
    below 0.05; one below on a single test is named as such; an undefined test never counts."""
    from mdlib.studies.diffaug.report import _family_line
    base = dict(b="U-Net", metric="test_dice", diff_seed_mean=0.01, perm_p=0.05)
    tests = pd.DataFrame([
        dict(base, a="primary arm", role="primary", t_p_adj=0.001, boot_p_adj=0.001),
        dict(base, a="arm both", role="secondary", t_p_adj=0.01, boot_p_adj=0.02),
        dict(base, a="arm boot only", role="secondary", t_p_adj=0.9, boot_p_adj=0.004),
        dict(base, a="arm none", role="secondary", t_p_adj=0.5, boot_p_adj=0.6),
        dict(base, a="arm undefined", role="secondary", t_p_adj=np.nan, boot_p_adj=0.01),
    ])
    line = _family_line(tests)[0]
    head, _, rest = line.partition("On one test only")
    assert "arm both" in head and "arm boot only" not in head and "primary arm" not in line
    assert "arm boot only" in rest and "arm undefined" in rest and "arm none" not in line
    none = _family_line(tests[tests.a.isin(["primary arm", "arm none"])])[0]
    assert none.startswith("No secondary comparison reaches 0.05") and "(1 comparison)" in none


def test_report_size_sensitivity_and_inconclusive_lines_follow_the_numbers():
    """The generated sentences on gate size preference, pixel sensitivity and an
    inconclusive primary are computed from their tables, in both directions."""
    from mdlib.studies.diffaug.report import _inconclusive, _sensitivity_line, _size_line
    area = np.linspace(0.01, 0.2, 40)
    iou = (np.arange(40) >= 25).astype(float)    # the 15 largest pass: 10 of q4, 5 of q3
    big = _size_line(pd.DataFrame({"intended_area_frac": area, "iou_single": iou}), 0.5)[0]
    assert "0.0%, 0.0%, 50.0%, 100.0%" in big and "prefers large" in big
    prim = pd.Series(dict(a="U-Net + DiffAug 1x", b="U-Net", metric="test_dice", role="primary",
                          diff_seed_mean=-0.002, diff_seed_ci95=0.12, t_p=0.9, boot_p=0.8))
    assert "[-0.122, 0.118]" in _inconclusive(prim)
    helped = prim.copy()
    helped[["diff_seed_mean", "t_p", "boot_p"]] = [0.05, 0.01, 0.01]
    assert _inconclusive(helped) == ""
    summ = pd.DataFrame({"label": ["U-Net", "U-Net + DiffAug 1x", "U-Net + DiffAug 2x"],
                         "n_synthetic": [0, 428, 856], "test_sensitivity_mean": [0.5, 0.6, 0.4],
                         "test_dice_mean": [0.45, 0.45, 0.45]})
    tests = pd.DataFrame([dict(prim)])
    line = _sensitivity_line(summ, tests)[0]
    assert "is higher (U-Net 0.500 → 0.600)" in line and "1 of the 2 synthetic U-Net arms" in line
    down = _sensitivity_line(summ.assign(test_sensitivity_mean=[0.5, 0.4, 0.4]), tests)[0]
    assert "higher in 0 of 1 families" in down
    both = _sensitivity_line(summ.assign(test_precision_mean=[0.5, 0.4, 0.45],
                                         test_specificity_mean=[0.95, 0.92, 0.93]), tests)[0]
    assert "Pixel precision moves the other way (lower: U-Net 0.500 → 0.400)" in both
    assert "specificity (U-Net 0.950 → 0.920)" in both
