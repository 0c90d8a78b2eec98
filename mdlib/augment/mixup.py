"""Mixup (Zhang et al. 2017): convex combinations of image pairs and of their one-hot labels."""
from __future__ import annotations

import torch

from .base import Augmentation, _check, _check_p, _num, register, sample_beta


@register
class Mixup(Augmentation):
    """Mixup (Zhang et al. 2017): ``lam ~ Beta(a, a)`` per batch, images and one-hot labels
    mixed with a random permutation of the batch: ``lam * x + (1 - lam) * x[perm]``."""
    name = "mixup"

    def __init__(self, alpha: float = 0.2, p: float = 1.0):
        _check(_num(alpha) and alpha > 0, self.name, f"alpha={alpha!r} must be > 0")
        params = dict(alpha=float(alpha))
        if p != 1.0:
            params["p"] = _check_p(self.name, p)
        super().__init__(**params)

    def mix_batch(self, x, y, generator):
        lam = float(sample_beta(self.params["alpha"], 1, generator)[0])
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]

