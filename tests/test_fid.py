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


def _with_moments(n, mean, cov, seed):
    """``n`` samples whose sample mean and sample covariance (ddof 1) are exactly
    ``mean`` and ``cov``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whitened: cov = I
    return mean + z @ np.linalg.cholesky(cov).T


def test_frechet_distance_closed_form():
    """Diagonal covariances: FD = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2, so the
    trace term is checked on its own (equal means) and with a mean shift."""
    a, b = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 1.0, 9.0])
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, -1.0, 0.0, 0.5])
    f1 = _with_moments(60, mu1, np.diag(a), 0)
    f2 = _with_moments(45, mu2, np.diag(b), 1)
    trace = float(((np.sqrt(a) - np.sqrt(b)) ** 2).sum())           # 1 + 1 + 0.25 + 0 = 2.25
    assert fid.frechet_distance(f1, f2) == pytest.approx(((mu1 - mu2) ** 2).sum() + trace, rel=1e-8)
    f2_same_mean = _with_moments(45, mu1, np.diag(b), 2)
    assert fid.frechet_distance(f1, f2_same_mean) == pytest.approx(trace, rel=1e-8)
    # full (non-commuting) covariances: Tr(S1 + S2 - 2 (S1 S2)^(1/2)) from the eigenvalues
    # of S1^(1/2) S2 S1^(1/2), a route independent of scipy's sqrtm of the product
    r = np.random.default_rng(3).normal(size=(4, 4))
    s1, s2 = np.diag(a) + 0.3 * (r + r.T) @ (r + r.T).T / 8, np.eye(4) + 0.5 * np.outer(r[0], r[0])
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    tr_sqrt = np.sqrt(np.linalg.eigvalsh(root1 @ s2 @ root1)).sum()
    want = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    got = fid.frechet_distance(_with_moments(80, mu1, s1, 4), _with_moments(70, mu2, s2, 5))
    assert got == pytest.approx(want, rel=1e-8)
    assert fid.frechet_distance(f1, f1) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError):
        fid.frechet_distance(f1, f1[:, :3])


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
