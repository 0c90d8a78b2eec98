"""Tests for mdlib.diffusion.fid: our Fréchet distance against torchmetrics' with a tiny random
feature network (the InceptionV3 code path without its downloaded weights), the
offline behaviour of the InceptionV3 extractor, and the guidance-classifier stages."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mdlib.diffusion import fid

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyFeatures(torch.nn.Module):
    """A randomly initialised stand-in for InceptionV3: RGB images -> (N, 8) features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.num_features = 8

    def forward(self, x):
        return torch.relu(self.conv(x.float())).mean((2, 3))


def test_torchmetrics_fd_matches_ours_with_a_tiny_network():
    net = TinyFeatures().eval()
    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 1, 28, 28, generator=g)
    fake = torch.rand(48, 1, 28, 28, generator=g) * 0.7
    ours_feats = [net(fid.to_rgb(v)).detach().numpy() for v in (real, fake)]
    ours = fid.frechet_distance(*ours_feats)
    theirs = fid.torchmetrics_fd(real, fake, net, batch_size=20)
    assert ours > 0
    assert theirs == pytest.approx(ours, rel=1e-4)
    # same set: distance ~ 0
    assert fid.torchmetrics_fd(real, real, net) == pytest.approx(0.0, abs=1e-5)


def test_inception_skipped_offline_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(fid.InceptionUnavailable, match="weights not found at .*hub"):
        fid.inception_extractor(64)
    with pytest.raises(fid.InceptionUnavailable, match="missing.pth"):
        fid.inception_extractor(2048, weights_path=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="expected one of"):
        fid.inception_extractor(100)
    real = torch.rand(4, 1, 28, 28)
    with pytest.raises(fid.InceptionUnavailable):
        fid.torchmetrics_fd(real, real, 64)


def test_stage_features_of_the_small_cnn():
    from mdlib.models import build_model, embed
    m = build_model("small_cnn", 1, 2, 28, width=16).eval()
    x = torch.rand(10, 1, 28, 28)
    f = fid.stage_features(m, x, batch_size=3)
    assert {k: v.shape for k, v in f.items()} == {"stage1": (10, 16), "stage2": (10, 32),
                                                  "stage3": (10, 64)}
    # the last stage pooled is the penultimate (pre-logits) feature
    np.testing.assert_allclose(f["stage3"], embed(m, x).numpy(), rtol=1e-5, atol=1e-6)
    # other models: penultimate features
    r = build_model("resnet18_slim", 1, 2, 28).eval()
    assert fid.stage_features(r, x)["penultimate"].shape == (10, 128)
