"""Tests for mdlib.diffusion: tiny models, a few training steps, a few DDIM steps."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from mdlib.diffusion import ddpm as D
from mdlib.diffusion import CheckpointError, DiffusionConfig, DiffusionModel, train_diffusion

TINY = dict(block_out_channels=(8, 16), batch_size=4, train_steps=4, checkpoint_every=2,
            sample_steps=4)


def tiny_cfg(**kw) -> DiffusionConfig:
    d = dict(image_size=28, channels=1, n_classes=2, **TINY)
    d.update(kw)
    return DiffusionConfig(**d)


# tiny models gain nothing from threads (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def breast(breast_npz):
    """A few real training images (uint8 (N,H,W,C)) and labels (conftest's data rule)."""
    from mdlib.data import check_file
    ds = check_file(breast_npz, verify=False)
    x, y = ds.x("train"), ds.y("train")
    idx = np.concatenate([np.flatnonzero(y == c)[:8] for c in range(2)])
    return x[idx], y[idx]


@pytest.fixture(scope="module")
def trained(breast, tmp_path_factory):
    out = tmp_path_factory.mktemp("diff") / "model"
    model = train_diffusion(*breast, tiny_cfg(), out, progress=False)
    return model, out


def unit(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0


def state_dict_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("kw, field", [
    (dict(image_size=0), "image_size"), (dict(channels=0), "channels"),
    (dict(n_classes=0), "n_classes"), (dict(block_out_channels=()), "block_out_channels"),
    (dict(block_out_channels=(8, -16)), "block_out_channels"),
    (dict(layers_per_block=0), "layers_per_block"), (dict(attention="yes"), "attention"),
    (dict(num_train_timesteps=1), "num_train_timesteps"), (dict(lr=0.0), "lr"),
    (dict(lr=float("nan")), "lr"), (dict(batch_size=0), "batch_size"),
    (dict(train_steps=0), "train_steps"), (dict(ema=1), "ema"),
    (dict(ema_decay=1.0), "ema_decay"), (dict(loss="l1"), "loss"),
    (dict(huber_delta=0.0), "huber_delta"), (dict(seed=-1), "seed"),
    (dict(checkpoint_every=0), "checkpoint_every"), (dict(sample_steps=0), "sample_steps"),
    (dict(sample_steps=2000), "sample_steps"), (dict(device="gpu"), "device"),
    (dict(norm_num_groups=3), "norm_num_groups"), (dict(pad_multiple=3), "pad_multiple"),
    (dict(grad_clip=-1.0), "grad_clip"), (dict(weight_decay=-1.0), "weight_decay"),
    (dict(train_steps=2.5), "train_steps"),
])
def test_config_rejects_bad_fields(kw, field):
    with pytest.raises(ValueError, match=field):
        tiny_cfg(**kw)


def test_config_padding_and_roundtrip():
    assert DiffusionConfig(28, 1, 2).padding == (0, 0)  # 28 = 4 * 7: no padding needed
    assert DiffusionConfig(28, 1, 2, pad_multiple=32).padding == (2, 2)
    c = DiffusionConfig(28, 1, 2, block_out_channels=(8, 16, 32, 64))  # multiple of 8
    assert (c.padding, c.work_size) == ((2, 2), 32)
    assert DiffusionConfig(64, 3, 5).padding == (0, 0)
    assert DiffusionConfig(30, 1, 2).padding == (1, 1)
    c = tiny_cfg(loss="huber", pad_multiple=32)
    assert DiffusionConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.differences(tiny_cfg(pad_multiple=32, train_steps=99, device="cpu")) == \
        {"loss": ("huber", "l2")}


# --------------------------------------------------------------------------- training
def test_training_writes_diffusers_checkpoint(trained):
    from diffusers import DDPMScheduler, UNet2DModel
    model, out = trained
    for name in ("unet", "unet_ema", "scheduler", "optimizer.pt", "loss.csv",
                 "diffusion_state.json"):
        assert (out / name).exists(), name
    assert not (out / D._STAGING).exists() and not (out / D._READY).exists()
    unet = UNet2DModel.from_pretrained(out / "unet")
    assert unet.config.num_class_embeds == 2 and unet.config.sample_size == 28
    assert set(unet.config.down_block_types) == {"DownBlock2D"}
    assert not unet.config.add_attention
    ema = UNet2DModel.from_pretrained(out / "unet_ema")
    assert state_dict_equal(ema, model.unet.cpu())  # the returned model uses EMA weights
    assert not state_dict_equal(ema, unet)
    sched = DDPMScheduler.from_pretrained(out / "scheduler")
    assert sched.config.num_train_timesteps == 1000 and sched.config.beta_schedule == "linear"
    extra = torch.load(out / "optimizer.pt", weights_only=True)
    assert {"optimizer", "rng"} <= set(extra)
    state = json.loads((out / "diffusion_state.json").read_text())
    assert state["step"] == 4 and state["done"] and not state["stopped_early"]
    assert state["config"] == tiny_cfg().to_dict() and state["data"]["n"] == 16
    curve = D.read_loss_curve(out)
    assert [s for s, _ in curve] == [1, 2, 3, 4]
    assert all(math.isfinite(v) and v > 0 for _, v in curve)
    assert model.step == 4


def test_resume_continues_from_checkpoint(breast, tmp_path):
    out = tmp_path / "m"
    train_diffusion(*breast, tiny_cfg(), out, progress=False)
    first = D.read_loss_curve(out)
    seen = []
    model = train_diffusion(*breast, tiny_cfg(train_steps=6), out, progress=False,
                            callback=lambda s, loss: seen.append(s))
    assert seen == [5, 6]  # continued from 4, not from 0
    assert model.step == 6 and D.read_state(out)["step"] == 6
    curve = D.read_loss_curve(out)
    assert [s for s, _ in curve] == [1, 2, 3, 4, 5, 6] and curve[:4] == first
    # asking for fewer steps than done: nothing is trained
    seen.clear()
    m = train_diffusion(*breast, tiny_cfg(train_steps=6), out, progress=False,
                        callback=lambda s, loss: seen.append(s))
    assert seen == [] and m.step == 6


class Killed(Exception):
    pass


def test_kill_and_resume_matches_uninterrupted_run(breast, tmp_path):
    cfg = tiny_cfg()
    ref = train_diffusion(*breast, cfg, tmp_path / "ref", progress=False)

    def kill_at_3(step, loss):
        if step == 3:
            raise Killed

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        train_diffusion(*breast, cfg, out, progress=False, callback=kill_at_3)
    assert D.read_state(out)["step"] == 2  # the last checkpoint survives the kill
    seen = []
    res = train_diffusion(*breast, cfg, out, progress=False,
                          callback=lambda s, loss: seen.append(s))
    assert seen == [3, 4]
    assert D.read_loss_curve(out) == D.read_loss_curve(tmp_path / "ref")
    assert state_dict_equal(res.unet, ref.unet)  # optimizer, EMA and RNG state all restored


def test_interrupted_commit_is_recovered(breast, tmp_path):
    out = tmp_path / "m"
    train_diffusion(*breast, tiny_cfg(), out, progress=False)
    # a kill after the commit point, half way through moving items into place
    ready = out / D._READY
    ready.mkdir()
    for name in ("loss.csv", "diffusion_state.json"):
        shutil.copy(out / name, ready / name)
    state = json.loads((ready / "diffusion_state.json").read_text())
    (ready / "diffusion_state.json").write_text(json.dumps(dict(state, wall_s=123.0)))
    assert D.read_state(out)["wall_s"] == 123.0  # readers see the committed checkpoint
    (out / D._STAGING).mkdir()  # and a kill before a commit point: discarded
    (out / D._STAGING / "junk").write_text("x")
    train_diffusion(*breast, tiny_cfg(), out, progress=False)
    assert not ready.exists() and not (out / D._STAGING).exists()
    assert json.loads((out / "diffusion_state.json").read_text())["wall_s"] == 123.0


def test_huber_loss_selectable(breast, tmp_path):
    l2 = train_diffusion(*breast, tiny_cfg(train_steps=1), tmp_path / "l2", progress=False)
    hub = train_diffusion(*breast, tiny_cfg(train_steps=1, loss="huber", huber_delta=1.0),
                          tmp_path / "hub", progress=False)
    (_, v_l2), = D.read_loss_curve(tmp_path / "l2")
    (_, v_hub), = D.read_loss_curve(tmp_path / "hub")
    assert math.isfinite(v_hub) and 0 < v_hub <= 0.5 * v_l2 + 1e-6  # same batch, same init
    assert hub.cfg.loss == "huber" and l2.cfg.loss == "l2"


def _first_step_prediction(breast, cfg):
    """The first training step's noise prediction and noise, replayed from the documented
    draws (batch indices, timesteps, noise from one generator seeded with cfg.seed) and
    the seeded initialisation."""
    x = unit(breast[0])
    y = torch.as_tensor(breast[1])
    gen = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randint(len(x), (cfg.batch_size,), generator=gen)
    t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=gen)
    noise = torch.randn((cfg.batch_size, 1, 28, 28), generator=gen)
    ddpm = D.build_ddpm_scheduler(cfg)
    with torch.no_grad():
        pred = D.build_unet(cfg)(ddpm.add_noise(x[idx] * 2 - 1, noise, t), t,
                                 class_labels=y[idx]).sample
    return pred.double().numpy(), noise.double().numpy()


@pytest.mark.parametrize("loss, delta", [("huber", 0.05), ("huber", 1.0), ("l2", 1.0)])
def test_recorded_loss_is_the_configured_objective(breast, tmp_path, loss, delta):
    """Step 1's recorded loss is mean((pred - noise)^2) for L2 and the mean Huber loss with
    the configured delta (0.5 r^2 where |r| <= delta, else delta (|r| - delta / 2))."""
    cfg = tiny_cfg(train_steps=1, loss=loss, huber_delta=delta)
    train_diffusion(*breast, cfg, tmp_path / "m", progress=False)
    (_, recorded), = D.read_loss_curve(tmp_path / "m")
    pred, noise = _first_step_prediction(breast, cfg)
    r = np.abs(pred - noise)
    want = (r ** 2).mean() if loss == "l2" else \
        np.where(r <= delta, 0.5 * r ** 2, delta * (r - 0.5 * delta)).mean()
    assert recorded == pytest.approx(want, rel=1e-5)
    if loss == "huber" and delta < 1:  # a small delta is a different loss, not delta 1's
        other = np.where(r <= 1.0, 0.5 * r ** 2, r - 0.5).mean()
        assert abs(recorded - other) > 100 * abs(recorded - want)


def test_max_seconds_stops_early_and_resumes(breast, tmp_path):
    out = tmp_path / "m"
    cfg = tiny_cfg(train_steps=5, ema=False)
    m = train_diffusion(*breast, cfg, out, progress=False, max_seconds=1e-9)
    state = D.read_state(out)
    assert state["stopped_early"] and not state["done"] and state["step"] == m.step < 5
    assert not (out / "unet_ema").exists()
    m = train_diffusion(*breast, cfg, out, progress=False)
    assert m.step == 5 and D.read_state(out)["done"]
    with pytest.raises(ValueError, match="max_seconds"):
        train_diffusion(*breast, cfg, out, progress=False, max_seconds=0)


def test_other_configuration_or_data_raises(breast, trained, tmp_path):
    _, out = trained
    with pytest.raises(CheckpointError) as e:
        train_diffusion(*breast, tiny_cfg(lr=2e-4, block_out_channels=(16, 32)), out,
                        progress=False)
    msg = str(e.value)
    assert str(out) in msg and "lr" in msg and "block_out_channels" in msg
    with pytest.raises(CheckpointError, match="loss"):
        DiffusionModel.load(out, cfg=tiny_cfg(loss="huber"))
    x, y = breast
    with pytest.raises(CheckpointError, match="other data"):
        train_diffusion(x[::-1].copy(), y[::-1].copy(), tiny_cfg(), out, progress=False)
    # runtime fields may differ
    m = DiffusionModel.load(out, cfg=tiny_cfg(train_steps=4000, sample_steps=3, device="cpu"))
    assert m.cfg.sample_steps == 3


def test_missing_checkpoint_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DiffusionModel.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no diffusion checkpoint"):
        DiffusionModel.load(tmp_path / "empty")


def test_bad_training_inputs_raise(breast, tmp_path):
    x, y = breast
    with pytest.raises(ValueError, match="x_train"):
        train_diffusion(x[:, :20], y, tiny_cfg(), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="y_train"):
        train_diffusion(x, y[:-1], tiny_cfg(), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="class index 2"):
        train_diffusion(x, y + 1, tiny_cfg(), tmp_path / "a", progress=False)


def test_load_prefers_ema(trained):
    model, out = trained
    assert state_dict_equal(DiffusionModel.load(out).unet, model.unet)
    raw = DiffusionModel.load(out, ema=False)
    assert not state_dict_equal(raw.unet, model.unet)


# --------------------------------------------------------------------------- sampling
def test_sample_shapes_range_and_determinism(trained):
    model, _ = trained
    a, ya = model.sample(3, seed=7, batch_size=4, progress=False)
    assert a.shape == (6, 1, 28, 28) and a.dtype == torch.float32
    assert ya.tolist() == [0, 0, 0, 1, 1, 1]
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    b, _ = model.sample(3, seed=7, batch_size=4, progress=False)
    assert torch.equal(a, b)
    c, _ = model.sample(3, seed=8, batch_size=4, progress=False)
    assert not torch.equal(a, c)
    d, yd = model.sample(labels=[1, 0, 1], seed=7, steps=2, progress=False)
    assert d.shape == (3, 1, 28, 28) and yd.tolist() == [1, 0, 1]
    e, _ = model.sample(3, seed=7, batch_size=6, progress=False)  # chunking-independent
    assert torch.allclose(a, e, atol=1e-4)
    with pytest.raises(ValueError, match="class index 2"):
        model.sample(labels=[0, 2], progress=False)
    with pytest.raises(ValueError, match="exactly one"):
        model.sample(progress=False)


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 28), (1, 64), (3, 64)])
def test_grey_rgb_28_64(channels, size, tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand((6, channels, size, size), generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    cfg = DiffusionConfig(size, channels, 3, block_out_channels=(8, 8), batch_size=2,
                          train_steps=1, checkpoint_every=1, sample_steps=2,
                          pad_multiple=32 if size == 28 else None)
    model = train_diffusion(x, y, cfg, tmp_path / "m", progress=False)
    assert model.unet.config.sample_size == (32 if size == 28 else 64)
    s, ys = model.sample(1, seed=0, progress=False)
    assert s.shape == (3, channels, size, size) and ys.tolist() == [0, 1, 2]
    assert 0.0 <= float(s.min()) and float(s.max()) <= 1.0
    mask = torch.zeros((6, size, size))
    mask[:, size // 4: size // 2, size // 4: size // 2] = 1.0
    r = model.refine(x, mask, y, steps=2)
    assert r.shape == x.shape and torch.equal(r[:, :, : size // 4], x[:, :, : size // 4])
    v = model.vary(x, y, steps=2)
    assert v.shape == x.shape and 0.0 <= float(v.min()) and float(v.max()) <= 1.0
    loaded = DiffusionModel.load(tmp_path / "m")
    assert torch.equal(loaded.sample(1, seed=0, progress=False)[0], s)


def test_ddim_schedule_matches_diffusers(trained):
    model, _ = trained
    model.ddim.set_timesteps(50)
    assert model._partial_timesteps(1.0, 50, 10) == model.ddim.timesteps.tolist()
    assert model._partial_timesteps(0.3, 10, 10) == list(range(299, 0, -30))
    g = torch.Generator().manual_seed(0)
    xt, eps = torch.randn((2, 1, 28, 28), generator=g), torch.randn((2, 1, 28, 28), generator=g)
    ref = model.ddim.step(eps, 999, xt).prev_sample  # 999 -> 979
    assert torch.allclose(model._ddim_step(xt, eps, 999, 979), ref, atol=1e-5)


def _reference_ddim(unet, x, labels, timesteps, steps_of_full, eps_fn=None, mask=None,
                    known=None, noise=None):
    """The DDIM loop with diffusers' own DDIMScheduler (the documented configuration:
    linear betas, T = 1000, trailing spacing, clipped x0, eta 0), set to ``steps_of_full``
    steps, run over ``timesteps`` (a tail of its schedule). With ``mask``, RePaint: after
    every step the known part is ``known`` noised to the next timestep with ``noise``.
    Returns the model inputs of every step and the final sample."""
    from diffusers import DDIMScheduler
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                          timestep_spacing="trailing", clip_sample=True)
    sched.set_timesteps(steps_of_full)
    assert set(timesteps) <= set(sched.timesteps.tolist())
    inputs = []
    for i, t in enumerate(timesteps):
        inputs.append(x.clone())
        tt = torch.full((len(x),), t, dtype=torch.long)
        eps = eps_fn(x, tt) if eps_fn else unet(x, tt, class_labels=labels).sample
        x = sched.step(eps, t, x).prev_sample
        if mask is not None:
            nxt = timesteps[i + 1] if i + 1 < len(timesteps) else None
            k = known if nxt is None else sched.add_noise(known, noise, torch.tensor([nxt]))
            x = mask * x + (1 - mask) * k
    return inputs, x


class _Recorder:
    """Records the sample each UNet call of a DiffusionModel receives."""

    def __init__(self, model, monkeypatch):
        self.inputs, self.timesteps = [], []
        real = model.unet.forward

        def fwd(sample, timestep, *a, **k):
            self.inputs.append(sample.detach().clone())
            self.timesteps.append(int(timestep[0]))
            return real(sample, timestep, *a, **k)
        monkeypatch.setattr(model.unet, "forward", fwd)


def test_sampling_loop_matches_diffusers_step_by_step(trained, monkeypatch):
    model, _ = trained
    rec = _Recorder(model, monkeypatch)
    labels = torch.tensor([0, 1, 1])
    out, _ = model.sample(labels=labels, seed=11, steps=5, progress=False)
    noise = torch.randn((3, 1, 28, 28), generator=torch.Generator().manual_seed(11))
    ts = [999, 799, 599, 399, 199]
    inputs, final = _reference_ddim(model.unet, noise, labels, ts, 5)
    assert rec.timesteps[:len(ts)] == ts  # (the reference's own calls are recorded after)
    for a, b in zip(rec.inputs[:len(ts)], inputs):  # (float32 round-off of two formulas)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out, ((final + 1) / 2).clamp(0, 1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("strength, steps, steps_of_full", [(1.0, 4, 4), (0.5, 5, 10)])
def test_variation_loop_matches_diffusers_step_by_step(trained, refine_inputs, monkeypatch,
                                                       strength, steps, steps_of_full):
    """vary's own DDIM update over a partial schedule (SDEdit) against diffusers'
    scheduler: noised to the first timestep with add_noise, then its schedule's tail."""
    from diffusers import DDIMScheduler
    model, _ = trained
    x, _, y = refine_inputs
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    rec = _Recorder(model, monkeypatch)
    out = model.vary(x, y, strength=strength, steps=steps, seed=0, noise=noise)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                          timestep_spacing="trailing")
    sched.set_timesteps(steps_of_full)
    ts = sched.timesteps.tolist()[steps_of_full - steps:]
    x0 = x * 2 - 1
    start = sched.add_noise(x0, noise, torch.tensor([ts[0]]))
    inputs, final = _reference_ddim(model.unet, start, y, ts, steps_of_full)
    assert rec.timesteps[:len(ts)] == ts  # (the reference's own calls are recorded after)
    for a, b in zip(rec.inputs[:len(ts)], inputs):  # (float32 round-off of two formulas)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out, ((final + 1) / 2).clamp(0, 1), atol=1e-4, rtol=1e-4)


def test_classifier_free_guidance_combines_predictions_numerically(breast, tmp_path):
    """eps = eps(x, null) + w (eps(x, y) - eps(x, null)), checked on the noise prediction
    and through one sampling run against diffusers' scheduler with that combination."""
    model = train_diffusion(*breast, tiny_cfg(class_dropout=0.2, train_steps=2), tmp_path / "m",
                            progress=False)
    g = torch.Generator().manual_seed(0)
    xt = torch.randn((4, 1, 28, 28), generator=g)
    tt = torch.tensor([999, 500, 250, 10])
    y = torch.tensor([0, 1, 0, 1])
    null = torch.full_like(y, 2)
    with torch.no_grad():
        cond = model.unet(xt, tt, class_labels=y).sample
        unc = model.unet(xt, tt, class_labels=null).sample
        assert (cond - unc).abs().max() > 1e-4  # the label matters to this model
        for w in (0.0, 1.0, 2.5):
            model.guidance_scale = w
            # (one batched call of 2B rows vs two calls of B: float round-off only)
            torch.testing.assert_close(model._eps(xt, tt, y), unc + w * (cond - unc),
                                       atol=1e-4, rtol=1e-4)
    model.guidance_scale = 2.5
    out, _ = model.sample(labels=y[:2], seed=3, steps=4, progress=False)

    def guided(x, t):
        c = model.unet(x, t, class_labels=y[:2]).sample
        u = model.unet(x, t, class_labels=null[:2]).sample
        return u + 2.5 * (c - u)
    noise = torch.randn((2, 1, 28, 28), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, final = _reference_ddim(model.unet, noise, y[:2], [999, 749, 499, 249], 4, guided)
    torch.testing.assert_close(out, ((final + 1) / 2).clamp(0, 1), atol=5e-4, rtol=0)


# --------------------------------------------------------------------------- refine
@pytest.fixture(scope="module")
def refine_inputs(breast):
    x = unit(breast[0][:4])
    y = torch.as_tensor(breast[1][:4])
    mask = torch.zeros((4, 1, 28, 28))
    mask[:, :, 6:18, 8:20] = 1.0
    mask[:, :, 5, 8:20] = 0.4  # a soft edge
    mask[:, :, 18, 8:20] = 0.6
    return x, mask, y


def test_refine_exact_outside_mask_and_deterministic(trained, refine_inputs):
    model, _ = trained
    x, mask, y = refine_inputs
    out = model.refine(x, mask, y, strength=0.3, steps=5, seed=3)
    assert out.shape == x.shape and out.dtype == x.dtype
    keep = (mask == 0).expand_as(x)
    assert torch.equal(out[keep], x[keep])  # bit for bit
    inside = (mask == 1).expand_as(x)
    assert (out[inside] != x[inside]).float().mean() > 0.5  # it does regenerate
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert torch.equal(out, model.refine(x, mask, y, strength=0.3, steps=5, seed=3))
    other = model.refine(x, mask, y, strength=0.3, steps=5, seed=4)
    assert not torch.equal(out[inside], other[inside])
    # explicit noise: the seed's own draw reproduces it; another draw does not
    same = model.refine(x, mask, y, strength=0.3, steps=5, seed=3,
                        noise=model.make_noise(4, seed=3))
    assert torch.equal(out, same)
    # (B,H,W) masks and one label for all are accepted
    out2 = model.refine(x[:2], mask[:2, 0], 1, strength=0.3, steps=5, seed=3)
    assert torch.equal(out2[(mask[:2] == 0).expand_as(x[:2])], x[:2][(mask[:2] == 0).expand_as(x[:2])])
    # chunking gives the same result (up to float round-off)
    chunked = model.refine(x, mask, y, strength=0.3, steps=5, seed=3, batch_size=3)
    assert torch.allclose(chunked, out, atol=1e-4)
    assert torch.equal(chunked[keep], x[keep])


def test_refine_inside_the_mask_is_repaint(trained, refine_inputs, monkeypatch):
    """Inside the mask: RePaint with diffusers' scheduler (x noised to t0 = strength T - 1,
    DDIM over the tail of the schedule, the known part replaced after every step by x noised
    to the next timestep with the same noise), then out = m * denoised + (1 - m) * x; the
    model sees the same input at every step."""
    model, _ = trained
    x, mask, y = refine_inputs
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    rec = _Recorder(model, monkeypatch)
    out = model.refine(x, mask, y, strength=0.3, steps=3, seed=0, noise=noise)
    x0 = x * 2 - 1
    from diffusers import DDIMScheduler
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                          timestep_spacing="trailing")
    sched.set_timesteps(10)
    ts = sched.timesteps.tolist()[7:]                       # [299, 199, 99]
    start = sched.add_noise(x0, noise, torch.tensor([ts[0]]))
    inputs, den = _reference_ddim(model.unet, start, y, ts, 10, mask=mask, known=x0, noise=noise)
    assert rec.timesteps[:len(ts)] == ts  # (the reference's own calls are recorded after)
    for a, b in zip(rec.inputs[:len(ts)], inputs):  # (float32 round-off of two formulas)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    want = mask * ((den + 1) / 2).clamp(0, 1) + (1 - mask) * x
    inside = (mask > 0).expand_as(x)
    torch.testing.assert_close(out[inside], want[inside], atol=1e-4, rtol=1e-4)
    assert (out[mask.expand_as(x) == 1] - x[mask.expand_as(x) == 1]).abs().mean() > 0.05


def test_refine_zero_mask_is_a_no_op_without_model_calls(trained, refine_inputs, monkeypatch):
    model, _ = trained
    x, mask, y = refine_inputs
    calls = []
    real = model.unet.forward

    def counting(*a, **k):
        calls.append(len(a[0]))
        return real(*a, **k)
    monkeypatch.setattr(model.unet, "forward", counting)
    out = model.refine(x, torch.zeros_like(mask), y)
    assert torch.equal(out, x) and out is not x and calls == []
    # mixed batch: empty-mask images untouched, one UNet call per step for the others
    m = mask.clone()
    m[1] = 0
    out = model.refine(x, m, y, steps=4)
    assert torch.equal(out[1], x[1]) and calls == [3] * 4


@pytest.mark.parametrize("kw, match", [
    (dict(mask=torch.zeros((4, 1, 28, 27))), "mask"),
    (dict(mask=torch.zeros((3, 1, 28, 28))), "mask"),
    (dict(mask=torch.zeros((4, 2, 28, 28))), "mask"),
    (dict(mask=torch.full((4, 1, 28, 28), 1.5)), "mask"),
    (dict(mask=torch.full((4, 1, 28, 28), -0.5)), "mask"),
    (dict(labels=torch.tensor([0, 1, 2, 0])), "class index 2"),
    (dict(labels=torch.tensor([0, -1, 1, 0])), "class index -1"),
    (dict(labels=torch.tensor([0, 1])), "labels"),
    (dict(strength=0.0), "strength"),
    (dict(strength=1.5), "strength"),
    (dict(steps=0), "steps"),
    (dict(steps=400, strength=0.3), "steps"),
    (dict(x=torch.rand((4, 3, 28, 28))), "x"),
    (dict(x=torch.rand((4, 1, 32, 32))), "x"),
    (dict(x=torch.rand((4, 1, 28, 28)) * 2), r"x: values"),
    (dict(noise=torch.zeros((4, 1, 32, 32))), "noise"),
])
def test_refine_rejects_bad_arguments(trained, refine_inputs, kw, match):
    model, _ = trained
    x, mask, y = refine_inputs
    args = dict(x=x, mask=mask, labels=y, strength=0.3, steps=3)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        model.refine(**args)


def test_refine_strength_one_is_allowed(trained, refine_inputs):
    model, _ = trained
    x, mask, y = refine_inputs
    out = model.refine(x, mask, y, strength=1.0, steps=2)
    keep = (mask == 0).expand_as(x)
    assert torch.equal(out[keep], x[keep])


# --------------------------------------------------------------------------- vary
def test_vary_shape_range_determinism(trained, refine_inputs):
    model, _ = trained
    x, _, y = refine_inputs
    a = model.vary(x, y, strength=0.5, steps=3, seed=1)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert not torch.equal(a, x)
    assert torch.equal(a, model.vary(x, y, strength=0.5, steps=3, seed=1))
    assert not torch.equal(a, model.vary(x, y, strength=0.5, steps=3, seed=2))
    assert model._partial_timesteps(0.5, None, 2) == [499, 249]  # default: sample spacing
    with pytest.raises(ValueError, match="strength"):
        model.vary(x, y, strength=0.0)
    with pytest.raises(ValueError, match="class index"):
        model.vary(x, 5)


def test_classifier_free_guidance(breast, trained, tmp_path):
    """class_dropout adds a null class; guidance_scale 1 is plain conditional sampling, other
    scales combine conditional and unconditional predictions; a model trained without
    class dropout refuses guidance."""
    plain, _ = trained
    with pytest.raises(ValueError, match="class_dropout"):
        plain.guidance_scale = 2.0
    with pytest.raises(ValueError, match="class_dropout"):
        tiny_cfg(class_dropout=1.0)
    model = train_diffusion(*breast, tiny_cfg(class_dropout=0.2), tmp_path / "m", progress=False)
    assert model.unet.config.num_class_embeds == 3
    with pytest.raises(ValueError, match="guidance_scale"):
        model.guidance_scale = -1.0
    x1, y1 = model.sample(n_per_class=2, seed=3, steps=3, progress=False)
    model.guidance_scale = 0.0  # w = 0: the unconditional model alone
    x0, _ = model.sample(n_per_class=2, seed=3, steps=3, progress=False)
    model.guidance_scale = 2.5
    x2, y2 = model.sample(n_per_class=2, seed=3, steps=3, progress=False)
    assert torch.equal(y1, y2) and torch.isfinite(x2).all()
    assert x2.min() >= 0 and x2.max() <= 1
    assert not torch.equal(x1, x2) and not torch.equal(x0, x1)
    # w = 0 ignores the label: both classes from the same noise give the same image
    model.guidance_scale = 0.0
    a, _ = model.sample(labels=[0], seed=5, steps=3, progress=False)
    b, _ = model.sample(labels=[1], seed=5, steps=3, progress=False)
    torch.testing.assert_close(a, b)
    reloaded = DiffusionModel.load(tmp_path / "m")
    assert reloaded.cfg.class_dropout == 0.2 and reloaded.guidance_scale == 1.0


def test_denoising_error_deterministic_and_batch_independent(trained, breast):
    model, out = trained
    m = DiffusionModel.load(out)
    x, y = unit(breast[0]), breast[1]
    a = m.denoising_error(x, y, seed=3, draws=2, batch_size=64)
    b = m.denoising_error(x, y, seed=3, draws=2, batch_size=5)
    c = m.denoising_error(x, y, seed=4, draws=2)
    assert a["mse"] == pytest.approx(b["mse"], rel=1e-5)
    assert a["huber"] == pytest.approx(b["huber"], rel=1e-5)
    assert a["mse"] != c["mse"]
    # Huber (delta 1) of a residual is at most half its square, and both are positive
    assert 0 < a["huber"] <= 0.5 * a["mse"] + 1e-9
    with pytest.raises(ValueError, match="labels"):
        m.denoising_error(x, y[:-1])
    with pytest.raises(ValueError, match="classes"):
        m.denoising_error(x, np.full(len(y), 5))
    with pytest.raises(ValueError, match="draws"):
        m.denoising_error(x, y, draws=0)


def test_channel_normalisation_standardises_and_round_trips(tmp_path):
    """normalize="channel": the network sees the training images standardised per channel
    (statistics stored in the checkpoint's state); samples, refinements and variations come
    back in [0, 1]; the default "none" is left out of the configuration's dict, so the hashes
    of runs written before the option existed do not change."""
    g = torch.Generator().manual_seed(0)
    x = (0.7 + 0.1 * torch.rand((6, 3, 28, 28), generator=g)) * torch.tensor([1.0, 0.4, 0.9]).view(1, 3, 1, 1)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    cfg = tiny_cfg(channels=3, normalize="channel")
    assert "normalize" not in tiny_cfg().to_dict()
    assert cfg.to_dict()["normalize"] == "channel"
    assert DiffusionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="normalize"):
        tiny_cfg(normalize="pixel")
    model = train_diffusion(x, y, cfg, tmp_path / "m", progress=False)
    st = model.state["normalization"]
    w = x.double() * 2 - 1
    np.testing.assert_allclose(st["mean"], w.mean(dim=(0, 2, 3)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(st["std"], w.std(dim=(0, 2, 3)).numpy(), rtol=1e-6)
    from mdlib.diffusion.ddpm import _from_work, _to_work
    z = _to_work(x, st)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    assert torch.allclose(_from_work(z, st), x, atol=1e-5)
    # the x0 clip is each channel's image of [0, 1]
    assert torch.allclose(_from_work(model._lo, st), torch.zeros(1, 3, 1, 1), atol=1e-6)
    assert torch.allclose(_from_work(model._hi, st), torch.ones(1, 3, 1, 1), atol=1e-6)
    s, _ = model.sample(2, seed=0, progress=False)
    assert s.shape == (4, 3, 28, 28) and 0.0 <= float(s.min()) and float(s.max()) <= 1.0
    mask = torch.zeros((6, 28, 28))
    mask[:, 7:14, 7:14] = 1.0
    r = model.refine(x, mask, y, steps=2)
    assert torch.equal(r[:, :, :7], x[:, :, :7]) and not torch.equal(r, x)
    v = model.vary(x, y, steps=2)
    assert v.shape == x.shape and 0.0 <= float(v.min()) and float(v.max()) <= 1.0
    loaded = DiffusionModel.load(tmp_path / "m")
    assert loaded._norm == st and torch.equal(loaded.sample(2, seed=0, progress=False)[0], s)


def test_normalised_sampling_loop_is_diffusers_ddim_with_identity_statistics(trained):
    """The normalised path's own DDIM loop (per-channel x0 clip) with mean 0 and std 1 is
    DDIMScheduler.step with its [-1, 1] clip: the same samples up to float round-off."""
    model, out = trained
    ref, _ = model.sample(labels=[0, 1, 1], seed=3, steps=5, progress=False)
    ident = DiffusionModel.load(out)
    ident._norm = {"mean": [0.0], "std": [1.0]}
    ident._lo, ident._hi = torch.full((1, 1, 1, 1), -1.0), torch.ones(1, 1, 1, 1)
    got, _ = ident.sample(labels=[0, 1, 1], seed=3, steps=5, progress=False)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_v_prediction_on_a_zero_terminal_snr_schedule(breast, tmp_path):
    """prediction_type="v_prediction" + zero_terminal_snr: the last training timestep is
    pure noise, the loss is the velocity's, and the own DDIM loop (refine, vary, the
    normalised sampler) agrees with DDIMScheduler.step on the same model; the noise
    prediction on such a schedule is refused; the defaults stay out of the config dict."""
    with pytest.raises(ValueError, match="zero_terminal_snr"):
        tiny_cfg(zero_terminal_snr=True)
    with pytest.raises(ValueError, match="prediction_type"):
        tiny_cfg(prediction_type="sample")
    d = tiny_cfg().to_dict()
    assert "prediction_type" not in d and "zero_terminal_snr" not in d
    cfg = tiny_cfg(prediction_type="v_prediction", zero_terminal_snr=True)
    assert DiffusionConfig.from_dict(cfg.to_dict()) == cfg
    model = train_diffusion(*breast, cfg, tmp_path / "m", progress=False)
    assert float(model.ddpm.alphas_cumprod[-1]) == 0.0
    assert model.ddim.config.prediction_type == "v_prediction"
    # the recorded loss of step 1 is the velocity objective
    x, y = breast
    loaded = DiffusionModel.load(tmp_path / "m")
    assert loaded.cfg.prediction_type == "v_prediction" and loaded.cfg.zero_terminal_snr
    ref, _ = loaded.sample(labels=[0, 1, 1], seed=3, steps=5, progress=False)
    assert torch.isfinite(ref).all() and 0.0 <= float(ref.min()) and float(ref.max()) <= 1.0
    own = DiffusionModel.load(tmp_path / "m")  # the own loop: identity statistics
    own._norm = {"mean": [0.0], "std": [1.0]}
    own._lo, own._hi = torch.full((1, 1, 1, 1), -1.0), torch.ones(1, 1, 1, 1)
    got, _ = own.sample(labels=[0, 1, 1], seed=3, steps=5, progress=False)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    xt = unit(x[:4])
    mask = torch.zeros((4, 28, 28))
    mask[:, 5:20, 5:20] = 1.0
    r = loaded.refine(xt, mask, y[:4], steps=3)
    assert torch.equal(r[:, :, :5], xt[:, :, :5]) and torch.isfinite(r).all()
    v = loaded.vary(xt, y[:4], strength=1.0, steps=4)  # from the pure-noise timestep
    assert torch.isfinite(v).all()
    err = loaded.denoising_error(xt, y[:4], draws=2)
    assert np.isfinite(err["mse"]) and err["mse"] > 0
