"""Property tests of the seven augmentation methods (mdlib.augment), on real BreastMNIST
images (conftest's data rule) and tiny models."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mdlib import augment as A
from mdlib.augment import BankContext
from mdlib.diffusion import DiffusionConfig, train_diffusion
from mdlib.models import build_model
from mdlib.saliency import gradcam

# tiny models gain nothing from threads (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(breast_npz):
    """48 real training images (float (N,1,28,28) in [0,1]) and labels, both classes."""
    with np.load(breast_npz, allow_pickle=False) as z:
        x, y = z["train_images"], z["train_labels"].reshape(-1)
    idx = np.concatenate([np.flatnonzero(y == c)[:24] for c in range(2)])
    x, y = x[idx], y[idx]
    return torch.from_numpy(x).float()[:, None] / 255.0, torch.from_numpy(y).long()


@pytest.fixture(scope="module")
def guidance():
    torch.manual_seed(0)
    return build_model("small_cnn", 1, 2, 28, width=8).eval()


@pytest.fixture(scope="module")
def saliency(data, guidance):
    x, y = data
    return gradcam(guidance, x, y).cpu()


@pytest.fixture(scope="module")
def diffusion(data, tmp_path_factory):
    x, y = data
    cfg = DiffusionConfig(image_size=28, channels=1, n_classes=2, block_out_channels=(8, 16),
                          batch_size=4, train_steps=3, checkpoint_every=3, sample_steps=4,
                          class_dropout=0.1)
    return train_diffusion(x, y, cfg, tmp_path_factory.mktemp("dm") / "m", progress=False)


def ctx_for(data, saliency=None, guidance=None, diffusion=None, run_dir=None, **extras):
    x, y = data
    ex = dict(saliency=saliency, guidance=guidance, diffusion=diffusion, progress=False, **extras)
    return BankContext(x, y, 2, seed=0, run_dir=run_dir, extras=ex)


def mdm(**kw):
    d = dict(refine_steps=2, batch_size=16)
    d.update(kw)
    return A.get("meddiffusemix", **d)


# ------------------------------------------------------------------ MedDiffuseMix
def test_mdm_outside_mask_equals_x1_and_alpha_in_range(data, saliency, guidance, diffusion):
    x, y = data
    m = mdm(check=True)
    idx = torch.arange(len(y))
    gen = torch.Generator().manual_seed(1)
    out, ys, rec = m.augment(x, y, saliency, idx, gen, guidance=guidance, diffusion=diffusion,
                             n_classes=2)
    p = m.params
    partners = torch.from_numpy(rec["partner"].to_numpy().copy())
    _, _, _, mask = A.regions(saliency[idx], saliency[partners], p["tau_h"], p["tau_b"])
    ms = A.smooth_mask(mask, p["sigma"])
    zero = (ms == 0)[:, None].expand_as(out)
    assert torch.equal(out[zero], x[zero])                       # exact outside M_s
    a = torch.from_numpy(rec["alpha"].to_numpy())
    assert ((a >= p["alpha_min"] - 1e-7) & (a <= p["alpha_max"] + 1e-7)).all()
    a0 = torch.from_numpy(rec["alpha_initial"].to_numpy())
    assert ((a0 >= p["alpha_min"] - 1e-7) & (a0 <= p["alpha_max"] + 1e-7)).all()
    # labels: x1's
    assert torch.equal(ys.argmax(1), y) and torch.equal(ys.sum(1), torch.ones(len(y)))
    assert set(rec["status"]) <= set(A.MDM_STATUS)
    assert out.min() >= 0 and out.max() <= 1


def test_mdm_mask_is_intersection_of_background_regions(data, saliency):
    x, y = data
    m = mdm(refine=False, check=False, smooth=False, adaptive=False, alpha_base=0.5)
    idx = torch.arange(len(y))
    out, _, rec = m.augment(x, y, saliency, idx, torch.Generator().manual_seed(2), n_classes=2)
    j = torch.from_numpy(rec["partner"].to_numpy())
    rb1, rb2 = saliency[idx] <= 0.3, saliency[j] <= 0.3
    expected = rb1 & rb2
    np.testing.assert_allclose(rec["mask_area"], expected.flatten(1).float().mean(1).numpy())
    # sigma = 0 and alpha = 0.5: inside M exactly 0.5/0.5, outside exactly x1
    w = expected[:, None].float()
    ref = torch.where(w == 0, x, 0.5 * x + 0.5 * x[j])
    assert torch.equal(out, ref.clamp(0, 1))
    # sigma = 0 gives a binary mask; sigma > 0 a soft one that is 1 deep inside
    assert set(A.smooth_mask(expected, 0).unique().tolist()) <= {0.0, 1.0}
    soft = A.smooth_mask(expected, 1.5)
    assert ((soft > 0) & (soft < 1)).any() and soft.max() <= 1 and soft.min() >= 0


def test_mdm_check_on_accepted_satisfy_eq8_and_off_rejects_nothing(data, saliency, guidance,
                                                                   diffusion):
    x, y = data
    idx = torch.arange(len(y))
    for delta in (0.7, 0.95):  # 0.95 forces retries and failures
        m = mdm(delta=delta, on_fail="drop")
        out, _, rec = m.augment(x, y, saliency, idx, torch.Generator().manual_seed(3),
                                guidance=guidance, diffusion=diffusion, n_classes=2)
        acc = rec["status"].eq("accepted").to_numpy()
        rh = saliency[idx] > 0.6
        cam = gradcam(guidance, out, y).cpu()
        kept = ((cam * rh).flatten(1).sum(1) / rh.flatten(1).sum(1).clamp(min=1)).numpy()
        assert (kept[acc] >= delta - 1e-5).all()
        np.testing.assert_allclose(rec["saliency_kept"][acc], kept[acc], atol=1e-5)
        failed = rec["status"].eq("dropped").to_numpy()
        assert (~rec["kept"].to_numpy() == failed).all()
        assert (rec.loc[failed, "alpha"] <= 0.05 * (1 + 1e-5)).all()  # backed off to alpha_min
        assert (rec.loc[rec.retries > 0, "alpha"] < rec.loc[rec.retries > 0, "alpha_initial"]).all()
    assert (rec["retries"] > 0).any() and failed.any()
    off = mdm(check=False, delta=0.99)
    _, _, rec = off.augment(x, y, saliency, idx, torch.Generator().manual_seed(3),
                            guidance=guidance, diffusion=diffusion, n_classes=2)
    assert rec["kept"].all() and (rec["retries"] == 0).all()
    assert not rec["status"].isin(["dropped", "kept_at_min"]).any()


def test_mdm_partner_same_class_never_itself():
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 1])
    idx = torch.arange(len(y)).repeat(200)
    j = A.same_class_partners(y, idx, torch.Generator().manual_seed(0))
    assert torch.equal(y[j], y[idx]) and not (j == idx).any()
    # every other same-class image is reachable
    assert set(j[idx == 2].tolist()) == {3, 4, 8}
    with pytest.raises(ValueError, match="fewer than 2"):
        A.same_class_partners(torch.tensor([0, 0, 1]), torch.tensor([2]),
                              torch.Generator().manual_seed(0))


def test_mdm_empty_high_region_or_mask_is_a_noop(data, guidance, diffusion):
    x, y = data
    n = len(y)
    s = torch.zeros(n, 28, 28)  # flat CAM: R_h empty (and everything background)
    m = mdm()
    out, _, rec = m.augment(x, y, s, torch.arange(n), torch.Generator().manual_seed(0),
                            guidance=guidance, diffusion=diffusion, n_classes=2)
    assert torch.equal(out, x) and (rec["status"] == "noop_empty_high").all()
    s = torch.ones(n, 28, 28)  # everything high: no background, empty mask
    out, _, rec = m.augment(x, y, s, torch.arange(n), torch.Generator().manual_seed(0),
                            guidance=guidance, diffusion=diffusion, n_classes=2)
    assert torch.equal(out, x) and (rec["status"] == "noop_empty_mask").all()
    assert rec["kept"].all()


def test_mdm_ablation_switches(data, saliency, guidance, diffusion):
    x, y = data
    idx = torch.arange(len(y))
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    base = dict(check=False, refine=False)
    _, _, full = mdm(**base).augment(x, y, saliency, idx, g(), guidance=guidance, n_classes=2)
    _, _, fixed = mdm(adaptive=False, **base).augment(x, y, saliency, idx, g(),
                                                      guidance=guidance, n_classes=2)
    assert np.allclose(fixed["alpha"], 0.8)  # clip(alpha_base = 1.0) = alpha_max
    assert full["alpha"].std() > 0
    out_r, _, rnd = mdm(use_saliency=False, smooth=False, **base).augment(
        x, y, saliency, idx, g(), guidance=guidance, n_classes=2)
    np.testing.assert_allclose(rnd["mask_area"], full["mask_area"])  # same area
    out_s, _, _ = mdm(smooth=False, **base).augment(x, y, saliency, idx, g(), guidance=guidance,
                                                    n_classes=2)
    assert not torch.equal(out_r, out_s)  # random mask differs from the saliency mask


def test_mdm_invalid_parameters():
    for kw, msg in [(dict(tau_h=0.2, tau_b=0.5), "tau_b"),
                    (dict(alpha_min=0.9, alpha_max=0.5), "alpha_min"),
                    (dict(sigma=-1.0), "sigma"), (dict(strength=0.0), "strength"),
                    (dict(strength=1.5), "strength"), (dict(delta=1.2), "delta"),
                    (dict(delta=-0.1), "delta"), (dict(on_fail="maybe"), "on_fail")]:
        with pytest.raises(ValueError, match=msg):
            A.get("meddiffusemix", **kw)
    with pytest.raises(ValueError, match="unknown augmentation method 'mixdiff'"):
        A.get("mixdiff")
    with pytest.raises(ValueError, match="strength"):
        A.get("dba", strength=0)
    with pytest.raises(ValueError, match="alpha"):
        A.get("mixup", alpha=-1)


def test_mdm_bank_records_and_resume(data, saliency, guidance, diffusion, tmp_path, monkeypatch):
    ctx = ctx_for(data, saliency, guidance, diffusion, run_dir=tmp_path / "run",
                  bank_dir=tmp_path / "bank")
    m = mdm(batch_size=16)
    xb, yb = m.build_bank(ctx)
    rec = pd.read_csv(tmp_path / "bank" / "records.csv")
    assert len(rec) == 48 and (tmp_path / "run" / "bank_records.csv").exists()
    for col in ("alpha", "retries", "accepted", "mask_area", "saliency_kept", "status"):
        assert col in rec
    assert len(xb) == rec["kept"].sum() and torch.equal(yb.sum(1), torch.ones(len(yb)))
    # kill after the first batch: delete the later parts and count regenerated batches
    parts = sorted((tmp_path / "bank").glob("part_*.npz"))
    assert len(parts) == 3
    for f in parts[1:]:
        f.unlink()
    calls = []
    orig = A.MedDiffuseMix.generate
    monkeypatch.setattr(A.MedDiffuseMix, "generate",
                        lambda self, *a: calls.append(a[-1]) or orig(self, *a))
    xb2, yb2 = mdm(batch_size=16).build_bank(ctx)
    assert calls == [1, 2]
    assert torch.equal(xb, xb2) and torch.equal(yb, yb2)


# ------------------------------------------------------------------ other methods
def test_mixup_labels_match_weight(data):
    x, y = data
    ys = torch.nn.functional.one_hot(y, 2).float()
    m = A.get("mixup", alpha=0.4)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    xm, ym = m.mix_batch(x, ys, g1)
    lam = float(A.sample_beta(0.4, 1, g2)[0])
    perm = torch.randperm(len(x), generator=g2)
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(ym, lam * ys + (1 - lam) * ys[perm])
    torch.testing.assert_close(ym.sum(1), torch.ones(len(y)))


def test_online_fraction_p(data):
    x, y = data
    ys = torch.nn.functional.one_hot(y, 2).float()
    m = A.get("standard_aug", p=0.5)
    xa, ya = m.apply(x, ys, torch.Generator().manual_seed(0))
    same = (xa == x).flatten(1).all(1)
    assert 0 < same.sum() < len(x) and torch.equal(ya, ys)
    with pytest.raises(ValueError, match="p="):
        A.get("mixup", p=1.5)


def test_saliency_boxes_centred_on_peak_and_clipped():
    h, w = 20, 32  # non-square
    sal = torch.zeros(3, h, w)
    sal[0, 10, 16] = 1  # centre
    sal[1, 0, 0] = 1    # corner: clipped
    sal[2, 15, 30] = 1  # near the right border
    lam = torch.full((3,), 0.75)  # side = 0.5 * size
    boxes = A.saliency_boxes(sal, lam)
    assert boxes[0].tolist() == [10 - 5, 10 + 5, 16 - 8, 16 + 8]
    assert boxes[1].tolist() == [0, 5, 0, 8]
    assert boxes[2].tolist() == [10, 20, 22, 32]
    m = A.box_masks(boxes, h, w)
    assert m.shape == (3, h, w) and m[0].sum() == 10 * 16
    # one box per image: each mask is a single rectangle containing the peak
    for i, (yy, xx) in enumerate([(10, 16), (0, 0), (15, 30)]):
        assert m[i, yy, xx]
        rows, cols = m[i].any(1).nonzero().flatten(), m[i].any(0).nonzero().flatten()
        assert m[i].sum() == len(rows) * len(cols)


def test_saliencymix_labels_match_pasted_area(data):
    import cv2
    assert hasattr(cv2, "saliency")
    x, y = data
    ys = torch.nn.functional.one_hot(y, 2).float()
    m = A.get("saliencymix")
    g = torch.Generator().manual_seed(7)
    xm, ym = m.mix_batch(x, ys, g)
    g = torch.Generator().manual_seed(7)
    lam = A.sample_beta(1.0, 1, g).expand(len(x))
    perm = torch.randperm(len(x), generator=g)
    sal = A.opencv_saliency(x[perm])
    mask = A.box_masks(A.saliency_boxes(sal, lam), 28, 28)
    area = mask.flatten(1).float().mean(1)
    torch.testing.assert_close(ym, (1 - area)[:, None] * ys + area[:, None] * ys[perm])
    torch.testing.assert_close(ym.sum(1), torch.ones(len(y)))
    assert torch.equal(xm[mask[:, None]], x[perm][mask[:, None]])
    assert torch.equal(xm[~mask[:, None]], x[~mask[:, None]])


def test_genmix_and_dba_banks(data, diffusion, tmp_path):
    x, y = data
    ctx = ctx_for(data, diffusion=diffusion, bank_dir=tmp_path / "g")
    gm = A.get("genmix", batch_size=32, sample_steps=2)
    xb, yb = gm.build_bank(ctx)
    rec = gm.records
    assert xb.shape == x.shape and len(rec) == len(y)
    lam = torch.from_numpy(rec["lam"].to_numpy()).float()
    torch.testing.assert_close(yb.sum(1), torch.ones(len(y)))
    torch.testing.assert_close(yb[torch.arange(len(y)), torch.from_numpy(rec["label"].to_numpy())]
                               >= lam - 1e-6, torch.ones(len(y), dtype=torch.bool))
    ctx = ctx_for(data, diffusion=diffusion, bank_dir=tmp_path / "d")
    dba = A.get("dba", batch_size=32, steps=2, n_per_image=1.5)
    xb, yb = dba.build_bank(ctx)
    assert len(xb) == 72 and xb.min() >= 0 and xb.max() <= 1
    lbl = torch.from_numpy(dba.records["label"].to_numpy())
    idx = torch.from_numpy(dba.records["index"].to_numpy())
    assert torch.equal(yb.argmax(1), lbl) and torch.equal(lbl, y[idx])
    assert torch.equal(yb.sum(1), torch.ones(len(yb)))


def test_fractals_and_hybrid_masks():
    g = torch.Generator().manual_seed(0)
    f = A.fractal_images(4, 28, 3, g)
    assert f.shape == (4, 3, 28, 28) and f.min() >= 0 and f.max() <= 1
    assert (f.flatten(1).std(1) > 0.05).all()
    m = A.hybrid_masks(6, 28, 28, g, ramp=0.1)
    assert m.shape == (6, 1, 28, 28)
    np.testing.assert_allclose(m.mean((1, 2, 3)).numpy(), 0.5, atol=1e-6)  # half and half


def test_offline_method_without_resources_fails_early(data):
    with pytest.raises(ValueError, match="diffusion"):
        A.get("dba").build_bank(ctx_for(data))
    with pytest.raises(ValueError, match="saliency"):
        mdm().build_bank(ctx_for(data))
