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


def test_mdm_adaptive_alpha_by_hand():
    """Eq. 5-6 on 2x3 maps computed by hand (tau_b = 0.3, omega = 0.7)."""
    s1 = torch.tensor([[[0.1, 0.2, 0.9], [0.3, 0.8, 0.05]]])
    s2 = torch.tensor([[[0.25, 0.5, 0.1], [0.7, 0.2, 0.6]]])
    _, rb1, rb2, m = A.regions(s1, s2, 0.6, 0.3)
    assert rb1[0].tolist() == [[True, True, False], [True, False, True]]     # <= tau_b
    assert rb2[0].tolist() == [[True, False, True], [False, True, False]]
    assert m[0].tolist() == [[True, False, False], [False, False, False]]
    alpha, rho, eta = A.adaptive_alpha(s1, s2, rb1, rb2, 1.0, 0.7, 0.05, 0.8)
    s1b, s2b = (0.1 + 0.2 + 0.3 + 0.05) / 4, (0.25 + 0.1 + 0.2) / 3          # own backgrounds
    rho_hand = 1 - abs(s1b - s2b) / (s1b + s2b)                              # 0.93976
    eta_hand = 1 / 6                                                         # |&| / |union|
    assert float(rho[0]) == pytest.approx(rho_hand, rel=1e-6)
    assert float(eta[0]) == pytest.approx(eta_hand, rel=1e-6)
    assert float(alpha[0]) == pytest.approx(1.0 * rho_hand * eta_hand * 0.7, rel=1e-6)  # 0.1096
    # clipping: alpha_base 10 hits alpha_max; alpha_base 0.1 falls to alpha_min
    assert float(A.adaptive_alpha(s1, s2, rb1, rb2, 10.0, 0.7, 0.05, 0.8)[0][0]) == \
        pytest.approx(0.8)
    assert float(A.adaptive_alpha(s1, s2, rb1, rb2, 0.1, 0.7, 0.05, 0.8)[0][0]) == \
        pytest.approx(0.05)
    # an empty background of x2: S2b = 0, rho = 0 (|S1b - 0| / S1b), eta = 0 -> alpha_min
    s2e = torch.ones_like(s2)
    _, rb1, rb2e, _ = A.regions(s1, s2e, 0.6, 0.3)
    a, r, e = A.adaptive_alpha(s1, s2e, rb1, rb2e, 1.0, 1.0, 0.05, 0.8)
    assert float(r[0]) == pytest.approx(0.0, abs=1e-6) and float(e[0]) == 0.0
    assert float(a[0]) == pytest.approx(0.05)


def _alpha_loop(s1, s2, tau_b, alpha_base, omega, amin, amax):
    """Eq. 5-6 image by image with numpy (independent of the batched code)."""
    out = []
    for a, b in zip(s1.numpy().astype(np.float64), s2.numpy().astype(np.float64)):
        ra, rb = a <= tau_b, b <= tau_b
        ma = a[ra].mean() if ra.any() else 0.0
        mb = b[rb].mean() if rb.any() else 0.0
        rho = 1 - abs(ma - mb) / (ma + mb + 1e-8)
        eta = (ra & rb).sum() / (ra | rb).sum() if (ra | rb).any() else 0.0
        out.append((np.clip(alpha_base * rho * eta * omega, amin, amax), rho, eta))
    return np.array(out)


def test_mdm_records_and_blend_follow_eq_4_to_6_for_each_pair(data, saliency):
    """Through augment(): rho, eta, alpha of every record are Eq. 5-6 of the image and its
    recorded partner (their own maps), and the output is Eq. 4 with that alpha and M_s."""
    x, y = data
    m = mdm(refine=False, check=False, omega=0.7, alpha_base=1.5, sigma=1.5)
    idx = torch.arange(len(y))
    out, _, rec = m.augment(x, y, saliency, idx, torch.Generator().manual_seed(6), n_classes=2)
    j = torch.from_numpy(rec["partner"].to_numpy())
    want = _alpha_loop(saliency[idx], saliency[j], 0.3, 1.5, 0.7, 0.05, 0.8)
    np.testing.assert_allclose(rec[["alpha_initial", "rho", "eta"]].to_numpy(), want,
                               rtol=1e-5, atol=1e-6)
    assert rec["alpha_initial"].nunique() > 10  # not a constant: the pairs differ
    ms = A.smooth_mask((saliency[idx] <= 0.3) & (saliency[j] <= 0.3), 1.5)
    a = torch.from_numpy(rec["alpha"].to_numpy()).float().view(-1, 1, 1, 1)
    ref = (1 - a * ms[:, None]) * x + a * ms[:, None] * x[j]
    torch.testing.assert_close(out, ref.clamp(0, 1), atol=1e-6, rtol=0)


def test_mdm_back_off_sequence(monkeypatch):
    """Eq. 8's back-off: alpha_k = max(0.8^k alpha_0, alpha_min) until the check passes,
    re-blending only the rows that failed; at alpha_min a failing sample is kept (or
    dropped). The check is stubbed: class c accepts once alpha <= thr[c]."""
    import mdlib.augment.meddiffusemix as M
    thr = torch.tensor([0.7, 0.4, 0.1, -1.0])                    # class 3 never passes
    n = 8
    y = torch.arange(4).repeat_interleave(2)
    x1 = torch.zeros(n, 1, 8, 8)                                 # x1 = 0, x2 = 1: x_mix = alpha M
    s = torch.zeros(n, 8, 8)
    s[:, 2:5, 2:5] = 1.0                                         # R_h: the block; M: the rest
    rounds, real_blend = [], M.blend

    def blend_spy(x1_, x2_, ms, alpha):
        rounds.append(alpha.clone())
        return real_blend(x1_, x2_, ms, alpha)

    def cam_stub(guidance, xm, targets):                         # kept = 1 or 0 inside R_h
        a = xm.flatten(1).amax(1)
        ok = a <= thr[targets] + 1e-6
        return ok.float().view(-1, 1, 1).expand(-1, *xm.shape[-2:]).clone()

    monkeypatch.setattr(M, "gradcam", cam_stub)
    monkeypatch.setattr(M, "blend", blend_spy)
    x_all = torch.cat([x1, torch.ones(n, 1, 8, 8)])
    y_all = torch.cat([y, y])
    s_all = torch.cat([s, s])
    partners = torch.arange(n) + n                               # each x1's partner is a 1-image
    for on_fail in ("keep", "drop"):
        rounds.clear()
        m = A.get("meddiffusemix", refine=False, smooth=False, alpha_base=0.75, omega=1.0,
                  delta=0.5, on_fail=on_fail)
        out, _, rec = m.augment(x_all, y_all, s_all, torch.arange(n), None, guidance=object(),
                                partners=partners, n_classes=4)
        # by hand: 0.75, 0.6, 0.48, ..., each 0.8 x the last, floored at 0.05
        seq = [0.75]
        while seq[-1] > 0.05 + 1e-9:
            seq.append(max(0.8 * seq[-1], 0.05))
        want_k = [next((k for k, a in enumerate(seq) if a <= t + 1e-6), len(seq) - 1)
                  for t in thr[y].tolist()]
        np.testing.assert_allclose(rec["alpha"], [seq[k] for k in want_k], rtol=1e-5)
        assert rec["retries"].tolist() == want_k                  # [1, 1, 3, 3, 10, 10, 13, 13]
        assert want_k[:6] == [1, 1, 3, 3, 10, 10] and seq[want_k[-1]] == 0.05
        stuck = "kept_at_min" if on_fail == "keep" else "dropped"
        assert rec["status"].tolist() == ["accepted"] * 6 + [stuck] * 2
        assert rec["kept"].tolist() == [True] * 6 + [on_fail == "keep"] * 2
        np.testing.assert_allclose(rec["alpha_initial"], 0.75, rtol=1e-6)
        # every round re-blends exactly the rows still failing, at that round's alpha
        assert len(rounds) == len(seq)
        for r, alphas in enumerate(rounds):
            active = [i for i in range(n) if want_k[i] >= r]
            np.testing.assert_allclose(alphas.numpy(), [seq[r]] * len(active), rtol=1e-5)
        # the image kept is the one blended at the final alpha (x_mix = alpha outside R_h)
        np.testing.assert_allclose(out[:, 0, 0, 0].numpy(), rec["alpha"], rtol=1e-5)


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


class _StubDiffusion:
    """Stands in for the diffusion model: known images, and a record of every call."""

    def __init__(self, value=0.9):
        self.value, self.calls = value, []

    def sample(self, labels, seed, batch_size, steps, progress):
        labels = torch.as_tensor(labels)
        self.calls.append(("sample", labels.clone(), steps))
        ramp = torch.linspace(0, 1, 28).view(1, 1, 1, 28)
        syn = 0.2 + 0.2 * labels.float().view(-1, 1, 1, 1) + 0.1 * ramp
        return syn.expand(-1, 1, 28, 28).clone(), labels

    def vary(self, x, labels, strength, steps, seed):
        self.calls.append(("vary", torch.as_tensor(labels).clone(), strength, steps, x.clone()))
        return torch.full_like(x, self.value)


def test_genmix_image_and_label_formula():
    """x = lam x1 + (1 - lam) x_syn, y = lam onehot(y1) + (1 - lam) onehot(c_syn), lam ~
    Beta(alpha, alpha) per image, c_syn drawn from the training labels."""
    from scipy import stats
    g = torch.Generator().manual_seed(0)
    y_train = torch.tensor([0] * 30 + [1] * 10)
    x_train = torch.rand(40, 1, 28, 28, generator=g)
    dm = _StubDiffusion()
    ctx = BankContext(x_train, y_train, 2, seed=0, run_dir=None, extras={"diffusion": dm})
    gm = A.get("genmix", alpha=0.4, sample_steps=3)
    idx = torch.randint(40, (2000,), generator=g)
    x, yb, rec = gm.generate(ctx, idx, torch.Generator().manual_seed(1), 0)
    lam = torch.from_numpy(rec["lam"].to_numpy()).float()
    cls = torch.from_numpy(rec["synthetic_class"].to_numpy())
    (_, called, steps), = dm.calls
    assert torch.equal(called, cls) and steps == 3
    syn, _ = dm.sample(cls, 0, 0, None, False)
    l4 = lam.view(-1, 1, 1, 1)
    torch.testing.assert_close(x, (l4 * x_train[idx] + (1 - l4) * syn).clamp(0, 1), atol=1e-6, rtol=0)
    oh = torch.nn.functional.one_hot
    torch.testing.assert_close(yb, lam[:, None] * oh(y_train[idx], 2) + (1 - lam[:, None]) * oh(cls, 2))
    assert rec["label"].tolist() == y_train[idx].tolist()
    assert stats.kstest(lam.numpy(), stats.beta(0.4, 0.4).cdf).pvalue > 1e-3
    assert stats.kstest(lam.numpy(), stats.beta(2.0, 2.0).cdf).pvalue < 1e-6
    assert (cls == 1).float().mean() == pytest.approx(0.25, abs=0.04)  # the label mix


def _hybrid_ramp(n, ramp=0.1):
    """The documented seam: weight of the generated half across the middle, by hand."""
    width = max(1.0, ramp * n)
    return np.clip((np.arange(n) + 0.5 - n / 2) / width + 0.5, 0, 1)


def test_dba_hybrid_and_fractal_blend():
    """x = (1 - lam) * ((1 - m) x1 + m * variation) + lam * fractal: with constant x1 and
    variation the weight m is recovered per pixel and must be one of the four documented
    hybrids (horizontal / vertical seam, either half generated, linear ramp of 0.1 * size);
    with x1 = variation the fractal term is what remains."""
    n = 64
    y_train = torch.tensor([0, 1] * (n // 2))
    x_train = torch.full((n, 1, 28, 28), 0.2)
    dm = _StubDiffusion(0.9)
    ctx = BankContext(x_train, y_train, 2, seed=3, run_dir=None, extras={"diffusion": dm})
    dba = A.get("dba", strength=0.5, steps=2, fractal_lambda=0.2, ramp=0.1, n_fractals=16)
    idx = torch.arange(n)
    x, yb, rec = dba.generate(ctx, idx, torch.Generator().manual_seed(0), 0)
    (_, labels, strength, steps, x_in), = dm.calls
    assert torch.equal(labels, y_train) and strength == 0.5 and steps == 2
    assert torch.equal(x_in, x_train)
    assert torch.equal(yb.argmax(1), y_train) and torch.equal(yb.sum(1), torch.ones(n))
    fr = dba.fractals(ctx)[torch.from_numpy(rec["fractal"].to_numpy())]
    m = ((x - 0.2 * fr) / 0.8 - 0.2) / 0.7
    r = torch.from_numpy(_hybrid_ramp(28)).float()
    cands = {"left->right": r.view(1, 28).expand(28, 28), "right->left": (1 - r).view(1, 28).expand(28, 28),
             "top->bottom": r.view(28, 1).expand(28, 28), "bottom->top": (1 - r).view(28, 1).expand(28, 28)}
    seen = set()
    for i in range(n):
        match = [k for k, c in cands.items() if torch.allclose(m[i, 0], c, atol=1e-5)]
        assert len(match) == 1, i
        seen.add(match[0])
    assert seen == set(cands)                                  # all four hybrids occur
    np.testing.assert_allclose(m.mean((1, 2, 3)).numpy(), 0.5, atol=1e-6)
    # x1 equal to the variation: only the fractal blend is left
    ctx2 = BankContext(torch.full((n, 1, 28, 28), 0.9), y_train, 2, seed=3, run_dir=None,
                       extras={"diffusion": _StubDiffusion(0.9)})
    dba2 = A.get("dba", strength=0.5, steps=2, fractal_lambda=0.2, n_fractals=16)
    x2, _, rec2 = dba2.generate(ctx2, idx, torch.Generator().manual_seed(0), 0)
    fr2 = dba2.fractals(ctx2)[torch.from_numpy(rec2["fractal"].to_numpy())]
    torch.testing.assert_close(x2, (0.8 * 0.9 + 0.2 * fr2).clamp(0, 1), atol=1e-6, rtol=0)
    assert rec2["fractal"].nunique() > 8 and (fr2.flatten(1).std(1) > 0.05).all()


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
