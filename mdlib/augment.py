"""The augmentation interface used by the trainer.

An augmentation method plugs into training at up to three points, in this order:

1. ``build_bank(ctx)`` (offline, once before training): returns extra training samples
   ``(x_bank float32 (M,C,H,W) in [0,1], y_bank soft labels (M,K))`` generated from the
   training split, or ``None``. Diffusion-based methods (GenMix's synthetic images,
   DBA, MedDiffuseMix) build their banks here. The trainer draws batches from the real
   training images plus the bank, for the **same number of optimisation steps** as every
   other method (the budget is set in steps, not in passes over a larger pool).
2. ``per_sample(x, generator)`` (online): label-preserving transforms applied to each
   image of a batch independently (Standard Aug).
3. ``mix_batch(x, y_soft, generator)`` (online): batch-level mixing that returns new
   images and mixed soft labels (Mixup, SaliencyMix).

Subclass :class:`Augmentation`, override what you need, and register it with
:func:`register`. Every random choice uses the ``torch.Generator`` passed in, so runs
are reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F


@dataclass
class BankContext:
    """What an offline method may use: the training split only (never val / test)."""
    x_train: torch.Tensor  # float32 (N, C, H, W) in [0, 1]
    y_train: torch.Tensor  # int64 (N,)
    n_classes: int
    seed: int
    run_dir: Any = None
    extras: dict = field(default_factory=dict)  # guidance model, diffusion model, saliency cache


class Augmentation:
    name = "base"

    def __init__(self, **params: Any):
        self.params = params

    def build_bank(self, ctx: BankContext) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None

    def per_sample(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x

    def mix_batch(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def config(self) -> dict:
        return {"method": self.name, **self.params}


_REGISTRY: dict[str, Callable[..., Augmentation]] = {}


def register(cls):
    _REGISTRY[cls.name] = cls
    return cls


def methods() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str, **params: Any) -> Augmentation:
    if name not in _REGISTRY:
        raise ValueError(f"unknown augmentation method '{name}'; known: {methods()}")
    return _REGISTRY[name](**params)


@register
class NoAug(Augmentation):
    """Intensity scaling to [0, 1] only (done by the trainer for every method)."""
    name = "no_aug"


@register
class StandardAug(Augmentation):
    """Small random rotation, random resized crop close to 1.0, brightness / contrast
    jitter, and (off by default) horizontal flip: flipping a chest X-ray swaps laterality
    (heart on the wrong side), so it is only on where ``hflip=True`` is set, e.g. for
    histopathology tiles. Batched: one affine grid for the whole batch."""
    name = "standard_aug"

    def __init__(self, degrees: float = 10.0, scale: tuple[float, float] = (0.9, 1.0),
                 brightness: float = 0.1, contrast: float = 0.1, hflip: bool = False,
                 vflip: bool = False):
        if degrees < 0 or not (0 < scale[0] <= scale[1] <= 1.0) or brightness < 0 or contrast < 0:
            raise ValueError(f"standard_aug: invalid parameters degrees={degrees}, "
                             f"scale={scale}, brightness={brightness}, contrast={contrast}")
        super().__init__(degrees=degrees, scale=list(scale), brightness=brightness,
                         contrast=contrast, hflip=hflip, vflip=vflip)

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


@register
class Mixup(Augmentation):
    """Mixup (Zhang et al. 2017): ``lam ~ Beta(a, a)`` per batch, images and one-hot labels
    mixed with a random permutation of the batch."""
    name = "mixup"

    def __init__(self, alpha: float = 0.2):
        if alpha <= 0:
            raise ValueError(f"mixup: alpha={alpha} must be > 0")
        super().__init__(alpha=alpha)

    def mix_batch(self, x, y, generator):
        a = self.params["alpha"]
        g = torch.distributions.Gamma(torch.tensor([a, a]), torch.tensor([1.0, 1.0]))
        # sample Beta(a, a) from the seeded generator via two Gammas
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            ga = g.sample()
        lam = float(ga[0] / ga.sum())
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]
