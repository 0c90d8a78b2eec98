"""mdlib.studies.meddiffusemix.preserve: the batched SSIM map against scikit-image, region scores."""
import numpy as np
import torch
from skimage.metrics import structural_similarity

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


def test_region_scores_identity_and_change():
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    region = torch.zeros(2, 16, 16, dtype=torch.bool)
    region[:, :8] = True
    s = region_scores(x, x.clone(), region)
    assert s["psnr_in"] == float("inf") and abs(s["ssim_in"] - 1) < 1e-6
    y = x.clone()
    y[:, :, 8:] = 1 - y[:, :, 8:]  # change only outside the region
    s = region_scores(x, y, region)
    assert s["psnr_in"] > s["psnr_out"] and s["psnr_out"] < 20
