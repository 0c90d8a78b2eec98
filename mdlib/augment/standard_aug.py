"""Standard Aug: small rotation, resized crop near 1.0, brightness / contrast jitter, flips only where anatomically harmless; batched (one affine grid per batch)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Augmentation, _check_p, register


@register
class StandardAug(Augmentation):
    """Small random rotation, random resized crop close to 1.0, brightness / contrast
    jitter, and (off by default) horizontal flip: flipping a chest X-ray swaps laterality
    (heart on the wrong side), so it is only on where ``hflip=True`` is set, e.g. for
    histopathology tiles. Batched: one affine grid for the whole batch."""
    name = "standard_aug"

    def __init__(self, degrees: float = 10.0, scale: tuple[float, float] = (0.9, 1.0),
                 brightness: float = 0.1, contrast: float = 0.1, hflip: bool = False,
                 vflip: bool = False, p: float = 1.0):
        if degrees < 0 or not (0 < scale[0] <= scale[1] <= 1.0) or brightness < 0 or contrast < 0:
            raise ValueError(f"standard_aug: invalid parameters degrees={degrees}, "
                             f"scale={scale}, brightness={brightness}, contrast={contrast}")
        params = dict(degrees=degrees, scale=list(scale), brightness=brightness,
                      contrast=contrast, hflip=hflip, vflip=vflip)
        if p != 1.0:
            params["p"] = _check_p(self.name, p)
        super().__init__(**params)

    def per_sample(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        p = self.params
        b = x.shape[0]
        u = lambda: torch.rand(b, generator=generator)  # noqa: E731
        ang = (u() * 2 - 1) * math.radians(p["degrees"])
        s = torch.sqrt(p["scale"][0] + u() * (p["scale"][1] - p["scale"][0]))  # area -> side
        tx, ty = (u() * 2 - 1) * (1 - s), (u() * 2 - 1) * (1 - s)
        sx = torch.where(u() < 0.5, -1.0, 1.0) if p["hflip"] else torch.ones(b)
        sy = torch.where(u() < 0.5, -1.0, 1.0) if p["vflip"] else torch.ones(b)
        cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
        # A = s * R(ang) @ diag(sx, sy), plus a translation that keeps the crop inside
        theta = torch.stack([torch.stack([cos * sx, -sin * sy, tx], 1),
                             torch.stack([sin * sx, cos * sy, ty], 1)], 1)
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        bright = 1 + (u() * 2 - 1) * p["brightness"]
        contr = 1 + (u() * 2 - 1) * p["contrast"]
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * contr.view(-1, 1, 1, 1).to(x) + mean
        return (out * bright.view(-1, 1, 1, 1).to(x)).clamp(0, 1)

