"""mdlib.studies.meddiffusemix.preserve: the batched SSIM map, the region scores (PSNR and
SSIM inside / outside the high-saliency region) against scikit-image, and every column of
the preservation table against an independent computation."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mdlib.studies.meddiffusemix.preserve import region_scores, ssim_map


def test_ssim_map_matches_scikit_image():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 1, 28, 28, generator=g)
    b = (a + 0.1 * torch.randn(3, 1, 28, 28, generator=g)).clamp(0, 1)
    ours = ssim_map(a, b).numpy()
    for i in range(3):
        _, ref = structural_similarity(a[i, 0].numpy().astype(np.float64),
                                       b[i, 0].numpy().astype(np.float64), win_size=7,
                                       data_range=1.0, full=True)
        np.testing.assert_allclose(ours[i], ref, atol=1e-5)
    rgb_a, rgb_b = torch.rand(2, 3, 20, 24, generator=g), torch.rand(2, 3, 20, 24, generator=g)
    ours = ssim_map(rgb_a, rgb_b).numpy()
    for i in range(2):
        _, ref = structural_similarity(rgb_a[i].permute(1, 2, 0).double().numpy(),
                                       rgb_b[i].permute(1, 2, 0).double().numpy(), win_size=7,
                                       data_range=1.0, channel_axis=2, full=True)
        np.testing.assert_allclose(ours[i], ref.mean(2), atol=1e-5)


def _skimage_region_reference(x1, xa, region):
    """PSNR of the pooled region pixels (scikit-image) and the mean over images of
    scikit-image's SSIM map averaged over the region (images without region pixels left
    out), inside and outside."""
    out = {}
    a, b = x1.double().numpy(), xa.double().numpy()
    for tag, r in (("in", region.numpy()), ("out", ~region.numpy())):
        rr = np.broadcast_to(r[:, None], a.shape)
        out[f"psnr_{tag}"] = peak_signal_noise_ratio(a[rr], b[rr], data_range=1.0)
        per = []
        for i in range(len(a)):
            if not r[i].any():
                continue
            kw = dict(channel_axis=0) if a.shape[1] > 1 else {}
            _, m = structural_similarity(a[i] if a.shape[1] > 1 else a[i, 0],
                                         b[i] if a.shape[1] > 1 else b[i, 0], win_size=7,
                                         data_range=1.0, full=True, **kw)
            per.append((m.mean(0) if m.ndim == 3 else m)[r[i]].mean())
        out[f"ssim_{tag}"] = float(np.mean(per))
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_region_scores_match_scikit_image_inside_and_outside(channels):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, channels, 20, 20, generator=g)
    region = torch.zeros(3, 20, 20, dtype=torch.bool)
    region[0, :9] = True
    region[1, 5:15, 3:12] = True                                  # image 2: empty region
    noise = torch.randn(x.shape, generator=g)
    inside = region[:, None].expand_as(x)
    y = (x + torch.where(inside, 0.02, 0.15) * noise).clamp(0, 1)  # small change inside
    s = region_scores(x, y, region)
    ref = _skimage_region_reference(x, y, region)
    for k in ref:
        assert s[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-6), k
    assert math.isfinite(s["psnr_in"]) and 25 < s["psnr_in"] and s["psnr_out"] < 20
    assert s["ssim_in"] > s["ssim_out"]
    # identical images: infinite PSNR and SSIM 1 in both regions
    same = region_scores(x, x.clone(), region)
    assert same["psnr_in"] == same["psnr_out"] == float("inf")
    assert same["ssim_in"] == pytest.approx(1.0) and same["ssim_out"] == pytest.approx(1.0)


def test_preservation_table_against_an_independent_computation(breast_npz):
    """Each column of the table from its definition: Grad-CAM of x_aug (pytorch-grad-cam)
    for x1's label averaged inside R_h(x1), the guidance prediction against the soft
    label's argmax, the weight of x1's label, the change, the region scores (scikit-image)
    and the MedDiffuseMix record rates."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from mdlib.models import build_model, cam_layer
    from mdlib.saliency import gradcam
    from mdlib.studies.meddiffusemix.preserve import preservation_table
    from mdlib.train import predict_proba
    with np.load(breast_npz, allow_pickle=False) as z:
        xs, ys = z["train_images"][:40], z["train_labels"].reshape(-1)[:40]
    x_all = torch.from_numpy(xs).float()[:, None] / 255
    y_all = torch.from_numpy(ys).long()
    torch.manual_seed(0)
    guidance = build_model("small_cnn", 1, 2, 28, width=8).eval()
    sal = gradcam(guidance, x_all, y_all).cpu()
    idx = torch.arange(4, 28)
    x1, y1 = x_all[idx], y_all[idx]
    g = torch.Generator().manual_seed(2)
    oh = torch.nn.functional.one_hot(y1, 2).float()
    noisy = (x1 + 0.2 * torch.randn(x1.shape, generator=g)).clamp(0, 1)
    zeros = torch.nonzero(y_all == 0).flatten()
    partner = zeros[torch.arange(24) % len(zeros)]  # class 0: the soft label's argmax is 0
    mixed = 0.3 * x1 + 0.7 * x_all[partner]
    soft = 0.3 * oh + 0.7 * torch.nn.functional.one_hot(y_all[partner], 2).float()
    assert (y_all[partner] != y1).any()
    rec = pd.DataFrame({"status": ["accepted"] * 20 + ["kept_at_min"] * 2 + ["noop_empty_mask"] * 2,
                        "retries": [0] * 20 + [13, 13, 0, 0], "alpha": np.linspace(0.05, 0.8, 24)})
    results = {"no_aug": (x1.clone(), oh, None), "noisy": (noisy, oh, None),
               "mixed": (mixed, soft, rec)}
    table = preservation_table(results, x_all, y_all, idx, sal, guidance, tau_h=0.6)
    rh = sal[idx] > 0.6
    assert rh.flatten(1).any(1).sum() >= 20
    for method, (xa, ya, r) in results.items():
        row = table.set_index("method").loc[method]
        with GradCAM(guidance, [cam_layer(guidance)]) as cam:
            ref_cam = torch.from_numpy(cam(xa, [ClassifierOutputTarget(int(t)) for t in y1]))
        guidance.zero_grad(set_to_none=True)
        n = rh.flatten(1).sum(1)
        kept = ((ref_cam * rh).flatten(1).sum(1) / n.clamp(min=1))[n > 0]
        assert row["saliency_kept"] == pytest.approx(float(kept.mean()), abs=2e-3)
        assert row["saliency_kept_ge_0.7"] == pytest.approx(float((kept >= 0.7).float().mean()),
                                                            abs=1 / len(kept) + 1e-9)
        pred = predict_proba(guidance, xa).argmax(1)
        assert row["label_agreement"] == pytest.approx((pred == ya.argmax(1).numpy()).mean())
        assert row["label_weight_x1"] == pytest.approx(float(ya[torch.arange(24), y1].mean()))
        assert row["changed"] == pytest.approx(float((xa - x1).abs().mean()), rel=1e-6)
        ref = _skimage_region_reference(x1, xa, rh)
        for k in ("psnr_out", "ssim_in", "ssim_out") + (("psnr_in",) if method != "no_aug" else ()):
            assert row[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-6), (method, k)
        assert row["n"] == 24
    t = table.set_index("method")
    assert t.loc["no_aug", "label_weight_x1"] == 1.0 and t.loc["mixed", "label_weight_x1"] < 1
    assert t.loc["no_aug", "psnr_in"] == float("inf")
    assert t.loc["mixed", "accept_rate"] == pytest.approx(20 / 24)
    assert t.loc["mixed", "noop_rate"] == pytest.approx(2 / 24)
    assert t.loc["mixed", "mean_retries"] == pytest.approx(26 / 24)
    assert t.loc["mixed", "mean_alpha"] == pytest.approx(rec["alpha"].mean())
    assert np.isnan(t.loc["noisy", "accept_rate"])
    # the augmentation matters to the scores: the noisy copy keeps less than the original
    assert t.loc["noisy", "psnr_in"] < 25 and t.loc["noisy", "ssim_in"] < t.loc["no_aug", "ssim_in"]
