"""Fréchet distance between two sets of features (the FID formula), with two kinds of
feature extractor (notebooks 04 and 13):

* the **guidance classifier's stages** (:func:`stage_features`): global-average-pooled
  activations of each convolutional stage of the small CNN (16, 32 and 64 dimensions at
  width 16), or of any model's penultimate layer. Works offline.
* **InceptionV3** as in FID (:func:`inception_extractor`, :func:`torchmetrics_fd`):
  torchmetrics' ``FrechetInceptionDistance`` with torch-fidelity's FID network at the
  pool dimensions 64, 192, 768 or 2048. Its weights are downloaded on first use; offline
  and without a cached copy :class:`InceptionUnavailable` says where to put them, and the
  notebooks skip that extractor with that message. Any ``nn.Module`` that maps images to
  ``(N, D)`` features can take its place (the tests use a tiny random network).

``FD = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import linalg

#: InceptionV3 pool dimensions accepted by torchmetrics / torch-fidelity (paper 004)
INCEPTION_DIMS = (64, 192, 768, 2048)


class InceptionUnavailable(RuntimeError):
    """The InceptionV3 FID weights (or torch-fidelity) are not available here."""


def frechet_distance(f1: np.ndarray, f2: np.ndarray, eps: float = 1e-6) -> float:
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature arrays of shapes {f1.shape} and {f2.shape}: expected "
                         "(N1, D) and (N2, D)")
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError("need at least 2 samples per set")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    s1, s2 = np.atleast_2d(s1), np.atleast_2d(s2)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # singular product: regularise, as pytorch-fid does
        off = np.eye(len(s1)) * eps
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def stage_features(model, x, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Global-average-pooled activations of each stage of a small CNN
    (``{"stage1": (N, w), "stage2": (N, 2w), "stage3": (N, 4w)}``), batched, in eval
    mode, on the model's device. Other models give ``{"penultimate": (N, D)}``
    (:func:`mdlib.models.embed`). ``x``: float images ``(N, C, H, W)`` in [0, 1]."""
    import torch

    from ..models import SmallCNN, embed
    x = torch.as_tensor(x, dtype=torch.float32)
    if not isinstance(model, SmallCNN):
        return {"penultimate": embed(model, x, batch_size).numpy()}
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    out: dict[str, list] = {"stage1": [], "stage2": [], "stage3": []}
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            h = model.stage1(x[i:i + batch_size].to(dev))
            out["stage1"].append(h.mean((2, 3)).cpu())
            h = model.stage2(model.pool(h))
            out["stage2"].append(h.mean((2, 3)).cpu())
            h = model.stage3(model.pool(h))
            out["stage3"].append(h.mean((2, 3)).cpu())
    model.train(was)
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def inception_weights_path() -> Path:
    """Where torch-fidelity caches the FID InceptionV3 weights (torch hub checkpoints)."""
    import torch
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InceptionUnavailable(f"torch-fidelity is not installed ({e}); "
                                   "pip install torch-fidelity") from e
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(URL_INCEPTION_V3)


def inception_extractor(dim: int, weights_path: str | os.PathLike | None = None,
                        download: bool = False):
    """torchmetrics' FID InceptionV3 (``NoTrainInceptionV3``) giving ``dim``-dimensional
    features. Weights: ``weights_path`` if given, else torch hub's cache; when neither
    exists, it downloads them only with ``download=True`` and otherwise raises
    :class:`InceptionUnavailable` naming the expected file."""
    if dim not in INCEPTION_DIMS:
        raise ValueError(f"InceptionV3 feature dim {dim}: expected one of {INCEPTION_DIMS}")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as e:  # pragma: no cover
        raise InceptionUnavailable(f"torchmetrics is not installed ({e})") from e
    if weights_path is not None:
        weights_path = Path(weights_path)
        if not weights_path.is_file():
            raise InceptionUnavailable(f"{weights_path}: InceptionV3 FID weights file not found")
    else:
        cached = inception_weights_path()
        if not cached.is_file() and not download:
            raise InceptionUnavailable(
                f"InceptionV3 FID weights not found at {cached} and download=False: "
                "this extractor is skipped. With internet, pass download=True (notebook "
                "parameter INCEPTION_DOWNLOAD); offline, copy the file "
                f"'{cached.name}' there or pass its path (INCEPTION_WEIGHTS)")
    try:
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(dim)],
                                  feature_extractor_weights_path=(
                                      str(weights_path) if weights_path else None))
    except Exception as e:  # a failed download: no network, proxy, ...
        raise InceptionUnavailable(f"InceptionV3 FID weights could not be loaded: "
                                   f"{type(e).__name__}: {e}") from e


def to_rgb(x):
    """Grey ``(N, 1, H, W)`` -> ``(N, 3, H, W)`` (FID networks take RGB); RGB unchanged."""
    import torch
    x = torch.as_tensor(x, dtype=torch.float32)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def torchmetrics_fd(real, fake, feature, batch_size: int = 128,
                    weights_path: str | os.PathLike | None = None, download: bool = False
                    ) -> float:
    """Fréchet distance between two image sets (float ``(N, C, H, W)`` in [0, 1]) with
    torchmetrics' ``FrechetInceptionDistance``. ``feature``: an InceptionV3 pool dim
    (64, 192, 768, 2048; see :func:`inception_extractor`) or an ``nn.Module`` mapping
    images to ``(N, D)`` features (it gets float images in [0, 1]). ``weights_path`` and
    ``download``: see :func:`inception_extractor`."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance
    if isinstance(feature, int):
        feature = inception_extractor(feature, weights_path, download)
    metric = FrechetInceptionDistance(feature=feature, normalize=True)
    with torch.no_grad():
        for imgs, is_real in ((real, True), (fake, False)):
            imgs = to_rgb(imgs)
            for i in range(0, len(imgs), batch_size):
                metric.update(imgs[i:i + batch_size], real=is_real)
    return float(metric.compute())
