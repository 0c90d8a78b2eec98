"""Fréchet distance between two sets of features (the FID formula), with any feature
extractor: here the guidance classifier's penultimate features (works offline);
InceptionV3 features can be plugged in where its weights are available.

``FD = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``
"""
from __future__ import annotations

import numpy as np
from scipy import linalg


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
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():  # singular product: regularise, as pytorch-fid does
        off = np.eye(len(s1)) * eps
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
