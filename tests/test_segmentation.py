"""Segmentation metrics (against hand computations and segmentation-models-pytorch), the
networks (U-Net, autoencoder and its pretrained loading, latent segmenter) and the trainer
(seeded, selected on validation, resumable, paired augmentation)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mdlib.metrics import segmentation as segm
from mdlib.models import segmentation as sm
from mdlib.train import segmentation as st

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- metrics
def test_per_image_metrics_by_hand():
    gt = np.zeros((2, 4, 4), bool)
    pred = np.zeros((2, 4, 4), bool)
    gt[0, :2, :2] = True            # 4 px
    pred[0, :2, :3] = True          # 6 px, 4 overlap: TP 4, FP 2, FN 0, TN 10
    gt[1, 0, 0] = True              # 1 px, missed; FP 1 elsewhere
    pred[1, 3, 3] = True
    m = segm.per_image(pred, gt)
    assert m["dice"][0] == pytest.approx(8 / 10) and m["iou"][0] == pytest.approx(4 / 6)
    assert m["sensitivity"][0] == 1.0 and m["fnr"][0] == 0.0
    assert m["specificity"][0] == pytest.approx(10 / 12) and m["precision"][0] == pytest.approx(4 / 6)
    assert m["dice"][1] == 0.0 and m["iou"][1] == 0.0 and m["fnr"][1] == 1.0
    assert m["specificity"][1] == pytest.approx(14 / 15)
    p = segm.pooled(pred, gt)      # TP 4, FP 3, FN 1, TN 24
    assert p["dice"] == pytest.approx(8 / 12) and p["iou"] == pytest.approx(4 / 8)
    assert p["sensitivity"] == pytest.approx(4 / 5) and p["specificity"] == pytest.approx(24 / 27)


def test_empty_conventions_and_bad_input():
    z = np.zeros((1, 3, 3), bool)
    m = segm.per_image(z, z)
    assert m["dice"][0] == 1.0 and m["iou"][0] == 1.0 and np.isnan(m["sensitivity"][0])
    with pytest.raises(ValueError, match="not binary"):
        segm.per_image(np.full((1, 2, 2), 0.3), z[:, :2, :2])
    with pytest.raises(ValueError, match="differ in shape"):
        segm.per_image(z, np.zeros((1, 4, 4), bool))


def test_metrics_agree_with_smp():
    import segmentation_models_pytorch as smp
    rng = np.random.default_rng(0)
    gt = rng.random((6, 16, 16)) < 0.3
    pred = rng.random((6, 16, 16)) < 0.4
    tp, fp, fn, tn = smp.metrics.get_stats(torch.from_numpy(pred[:, None]).long(),
                                           torch.from_numpy(gt[:, None]).long(), mode="binary")
    ours = segm.per_image(pred, gt)
    f1 = smp.metrics.f1_score(tp, fp, fn, tn, reduction="none").flatten().numpy()
    iou = smp.metrics.iou_score(tp, fp, fn, tn, reduction="none").flatten().numpy()
    sens = smp.metrics.sensitivity(tp, fp, fn, tn, reduction="none").flatten().numpy()
    spec = smp.metrics.specificity(tp, fp, fn, tn, reduction="none").flatten().numpy()
    np.testing.assert_allclose(ours["dice"], f1, rtol=1e-6)
    np.testing.assert_allclose(ours["iou"], iou, rtol=1e-6)
    np.testing.assert_allclose(ours["sensitivity"], sens, rtol=1e-6)
    np.testing.assert_allclose(ours["specificity"], spec, rtol=1e-6)
    pooled = segm.pooled(pred, gt)
    assert pooled["dice"] == pytest.approx(float(smp.metrics.f1_score(tp, fp, fn, tn, reduction="micro")))
    assert pooled["iou"] == pytest.approx(float(smp.metrics.iou_score(tp, fp, fn, tn, reduction="micro")))
    assert segm.summary(pred, gt)["dice"] == pytest.approx(
        float(smp.metrics.f1_score(tp, fp, fn, tn, reduction="micro-imagewise")))


def test_lesion_detection_rules():
    gt = np.zeros((1, 40, 40), bool)
    gt[0, 2:6, 2:6] = True          # 16 px = 1% of the frame: small
    gt[0, 20:36, 20:36] = True      # 256 px = 16%: large
    pred = np.zeros_like(gt)
    pred[0, 20:36, 22:36] = True    # covers the large one (IoU 224/256)
    t = segm.lesion_table(pred, gt)
    assert len(t) == 2 and list(t.small) == [True, False]
    assert list(t.detected) == [False, True] and t.iou.iloc[1] == pytest.approx(224 / 256)
    # one big blob over the small lesion: found but not delineated -> not detected
    blob = np.zeros_like(gt)
    blob[0, 0:14, 0:14] = True
    t2 = segm.lesion_table(blob, gt)
    assert not t2.detected.iloc[0] and t2.iou.iloc[0] == pytest.approx(16 / 196)
    ok = np.zeros_like(gt)
    ok[0, 2:6, 2:7] = True
    assert segm.lesion_table(ok, gt).detected.iloc[0]
    s = segm.small_lesion_metrics(ok, gt)
    assert s["n_small"] == 1 and s["sensitivity"] == 1.0 and s["fnr"] == 0.0
    assert s["specificity"] == pytest.approx(1 - 4 / (1600 - 16 - 256))
    # specks below min_area_frac (0.05% of the frame) are not lesions
    speck = np.zeros((1, 64, 64), bool)
    speck[0, 0, 0] = True
    assert len(segm.lesion_table(speck, speck)) == 0


# --------------------------------------------------------------------------- networks
def test_unet_shapes_and_offline_weights_status():
    enc = "tu-mobilenetv3_small_100"
    net, status = sm.build_unet(enc, None, decoder_channels=(16, 16, 8, 8, 8))
    model = sm.PixelSegmenter(net, status)
    x = torch.rand(2, 3, 32, 32)
    assert model.predict(x).shape == (2, 1, 32, 32)
    assert "random initialisation" in status
    a, _ = sm.build_unet(enc, None, decoder_channels=(16, 16, 8, 8, 8), seed=3)
    b, _ = sm.build_unet(enc, None, decoder_channels=(16, 16, 8, 8, 8), seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_unet_pretrained_weights_skip_with_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))      # an empty cache: nothing there
    _, status = sm.build_unet("resnet18", "imagenet", decoder_channels=(16, 16, 8, 8, 8))
    assert status.startswith("pretrained encoder weights") or "not available here" in status


def tiny_ae():
    return sm.build_autoencoder(sm.AEConfig(block_out_channels=(8, 8), norm_num_groups=4), seed=0)


def test_autoencoder_pretrained_loading_roundtrip(tmp_path):
    ae = tiny_ae()
    ae.register_to_config(scaling_factor=0.5)
    ae.save_pretrained(tmp_path / "sd" / "vae")
    back = sm.load_pretrained_autoencoder(tmp_path / "sd", subfolder="vae")
    assert back.config.scaling_factor == 0.5
    for (k, v), (k2, v2) in zip(ae.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    with pytest.raises(sm.WeightsUnavailable, match="config.json missing"):
        sm.load_pretrained_autoencoder(tmp_path / "nothing")
    with pytest.raises(sm.WeightsUnavailable, match="not available locally"):
        sm.load_pretrained_autoencoder("no-such-org/no-such-vae")


def test_codec_is_frozen_and_shapes():
    codec = sm.LatentCodec(tiny_ae(), 0.7)
    x = torch.rand(3, 3, 16, 16)
    z = codec.encode(x)
    assert z.shape == (3, 4, 8, 8) and codec.factor == 2
    assert codec.decode(z).shape == (3, 3, 16, 16)
    assert codec.decode_mask(codec.encode_mask(torch.ones(3, 1, 16, 16))).shape == (3, 1, 16, 16)
    codec.train()
    assert not codec.ae.training and not any(p.requires_grad for p in codec.parameters())


def tiny_latent(seed=0):
    cfg = sm.LatentSegConfig(vision_channels=8, vision_layers=1, fused_channels=4,
                             denoiser_channels=(8, 16), norm_num_groups=4, attention=False)
    return sm.LatentSegmenter(sm.LatentCodec(tiny_ae(), 0.7), cfg, seed=seed)


def test_latent_segmenter_loss_and_single_step_is_eq11():
    m = tiny_latent()
    x = torch.rand(2, 3, 16, 16)
    mask = (torch.rand(2, 1, 16, 16) > 0.5).float()
    batch = m.prepare(x, mask)
    loss, parts = m.training_loss(batch, torch.Generator().manual_seed(0), parts=True)
    assert torch.isfinite(loss) and set(parts) == {"eps", "latent", "dice"}
    loss.backward()
    assert all(p.grad is None for p in m.codec.parameters())          # frozen
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.denoiser.parameters())
    # single step from t = T - 1: z0 = (z_t - sqrt(1 - a) eps) / sqrt(a), z_t the fixed noise
    z_a = batch["z"]
    with torch.no_grad():
        got = m.predict_latent(z_a, steps=1)
        T = m.cfg.num_train_timesteps
        z_t = torch.randn(z_a.shape, generator=torch.Generator().manual_seed(m.cfg.infer_seed))
        t = torch.full((2,), T - 1, dtype=torch.long)
        eps = m.denoiser(torch.cat([z_t, m.fused(z_a)], 1), t).sample
        a = m.scheduler.alphas_cumprod[T - 1]
        want = (z_t - (1 - a).sqrt() * eps) / a.sqrt()
    torch.testing.assert_close(got, want)
    assert m.predict(x).shape == (2, 1, 16, 16) and m.predict(x, steps=3).shape == (2, 1, 16, 16)
    assert not any(k.startswith("codec.") for k in m.trainable_state_dict())


def test_latent_segmenter_trains_a_share_of_each_batch_at_the_inference_step(monkeypatch):
    """p_last: that share of a batch is trained at t = T - 1 (where single-step inference
    starts), the rest at uniform t; the default (0) leaves the configuration as before."""
    assert "p_last" not in sm.LatentSegConfig().to_dict()
    assert sm.LatentSegConfig(p_last=0.5).to_dict()["p_last"] == 0.5
    with pytest.raises(ValueError, match="p_last"):
        sm.LatentSegConfig(p_last=1.5)
    m = tiny_latent()
    m.cfg.p_last = 0.5
    seen = []
    real = m._eps
    monkeypatch.setattr(m, "_eps", lambda z_t, t, f: (seen.append(t.clone()), real(z_t, t, f))[1])
    x = torch.rand(8, 3, 16, 16)
    batch = m.prepare(x, (torch.rand(8, 1, 16, 16) > 0.5).float())
    m.training_loss(batch, torch.Generator().manual_seed(0))
    T = m.cfg.num_train_timesteps
    assert (seen[0][:4] == T - 1).all() and (seen[0][4:] < T - 1).all()


def test_inpaint_unet_inputs():
    u = sm.build_inpaint_unet(sm.InpaintConfig(block_out_channels=(8, 16), norm_num_groups=4,
                                               cross_attention_dim=12), 4)
    out = u(torch.randn(2, 9, 8, 8), torch.tensor([1, 500]),
            encoder_hidden_states=torch.randn(2, 5, 12)).sample
    assert out.shape == (2, 4, 8, 8)


# --------------------------------------------------------------------------- trainer
def _toy(n=12, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random((n, size, size, 3)) * 80).astype(np.uint8)
    m = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        r, c = rng.integers(4, size - 14, 2)
        m[i, r:r + 10, c:c + 10] = 1
        x[i, r:r + 10, c:c + 10] += 120
    return x, m


def _unet(seed=0):
    """A tiny pixel network (the trainer does not care which): conv - relu - conv."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.Conv2d(8, 1, 3, padding=1))
    return sm.PixelSegmenter(net, "tiny")


def test_trainer_seeded_selects_on_val_and_tests_once():
    x, m = _toy()
    cfg = st.SegTrainConfig(steps=6, batch_size=4, eval_every=2, seed=1, augment={})
    r1 = st.train_segmenter(_unet(), (x[:8], m[:8]), (x[8:10], m[8:10]), cfg, x[10:], m[10:], progress=False)
    r2 = st.train_segmenter(_unet(), (x[:8], m[:8]), (x[8:10], m[8:10]), cfg, x[10:], m[10:], progress=False)
    assert all(torch.equal(r1.state_dict[k], r2.state_dict[k]) for k in r1.state_dict)
    plain = st.train_segmenter(_unet(), (x[:8], m[:8]), (x[8:10], m[8:10]),
                               st.SegTrainConfig(steps=6, batch_size=4, eval_every=2, seed=1),
                               progress=False)
    assert not all(torch.equal(r1.state_dict[k], plain.state_dict[k]) for k in r1.state_dict)
    h = r1.history
    assert list(h.step) == [2, 4, 6] and r1.best_step == int(h.step[h.val_dice.idxmax()])
    assert r1.test_probs.shape == (2, 32, 32) and 0 <= r1.test["dice"] <= 1


def test_trainer_resumes_after_a_kill(tmp_path):
    x, m = _toy()
    cfg = st.SegTrainConfig(steps=6, batch_size=4, eval_every=2, checkpoint_every=2, seed=0, augment={})
    full = st.train_segmenter(_unet(), (x[:8], m[:8]), (x[8:10], m[8:10]), cfg, progress=False)
    model = _unet()
    calls = {"n": 0}
    orig = model.training_loss

    def dying(batch, gen=None):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return orig(batch, gen)

    model.training_loss = dying
    with pytest.raises(KeyboardInterrupt):
        st.train_segmenter(model, (x[:8], m[:8]), (x[8:10], m[8:10]), cfg, run_dir=tmp_path, progress=False)
    assert st.StepCheckpoint(tmp_path).latest()["step"] == 4
    resumed = st.train_segmenter(_unet(), (x[:8], m[:8]), (x[8:10], m[8:10]), cfg, run_dir=tmp_path,
                                 progress=False)
    assert all(torch.equal(full.state_dict[k], resumed.state_dict[k]) for k in full.state_dict)
    assert list(resumed.history.step) == [2, 4, 6] and not (tmp_path / "ckpt").exists()


def test_latent_segmenter_trains_with_the_same_loop():
    x, m = _toy(n=8, size=24)
    cfg = st.SegTrainConfig(steps=2, batch_size=4, eval_every=1, seed=0)
    r = st.train_segmenter(tiny_latent(), (x[:6], m[:6]), (x[6:], m[6:]), cfg, x[6:], m[6:], progress=False)
    assert not any(k.startswith("codec.") for k in r.state_dict) and r.test_probs.shape == (2, 24, 24)


def test_paired_augmentation_moves_image_and_mask_together():
    x, m = _toy(n=6)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    xt[:, 0] = torch.from_numpy(m).float()           # channel 0 is the mask itself
    mt = torch.from_numpy(m)[:, None].float()
    aug = st.PairedAugment(flip=0.5, degrees=30, scale=(0.8, 1.2), elastic_p=1.0)
    xa, ma = aug(xt, mt, torch.Generator().manual_seed(0))
    xb, mb = aug(xt, mt, torch.Generator().manual_seed(0))
    assert torch.equal(xa, xb) and torch.equal(ma, mb)                    # seeded
    assert set(torch.unique(ma).tolist()) <= {0.0, 1.0}                   # masks stay binary
    assert not torch.equal(ma, mt)                                         # something moved
    inter = ((xa[:, 0] > 0.5) & (ma[:, 0] > 0.5)).sum()
    union = ((xa[:, 0] > 0.5) | (ma[:, 0] > 0.5)).sum()
    assert inter / union > 0.85                                            # moved together
    with pytest.raises(TypeError):
        st.PairedAugment(rotation=3)


def test_config_checks():
    with pytest.raises(ValueError, match="steps"):
        st.SegTrainConfig(steps=0)
    with pytest.raises(ValueError, match="threshold"):
        st.SegTrainConfig(threshold=1.5)
