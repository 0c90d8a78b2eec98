"""DBA / DiffuseMix (Islam et al., CVPR 2024) with the study's own class-conditional model and procedural fractals (offline bank)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .base import BankContext, OfflineAugmentation, _check, _num, _onehot, register


def fractal_images(n: int, size: int, channels: int, generator: torch.Generator,
                   n_maps: int = 4, points: int = 4096, iters: int = 40) -> torch.Tensor:
    """``n`` procedural fractals (random iterated function systems drawn with the chaos
    game, all fractals and points advanced together), log-density images normalised to
    [0, 1]; RGB fractals get a random colour per channel. Returns (n, C, size, size)."""
    A = (torch.rand(n, n_maps, 2, 2, generator=generator) * 2 - 1) * 0.8
    # keep each map contractive: scale by its spectral norm when above 0.9
    norms = torch.linalg.matrix_norm(A, ord=2).clamp(min=0.9) / 0.9
    A = A / norms[..., None, None]
    bvec = torch.rand(n, n_maps, 2, generator=generator) * 2 - 1
    p = torch.rand(n, points, 2, generator=generator) * 2 - 1
    ar = torch.arange(n).view(n, 1)
    hist = torch.zeros(n, size * size)
    for it in range(iters):
        k = torch.randint(n_maps, (n, points), generator=generator)
        p = torch.einsum("npij,npj->npi", A[ar, k], p) + bvec[ar, k]
        if it >= 10:  # after burn-in, accumulate the attractor's density
            lo = p.amin(1, keepdim=True)
            hi = p.amax(1, keepdim=True)
            q = ((p - lo) / (hi - lo + 1e-8) * (size - 1)).round().long()
            hist.scatter_add_(1, q[..., 0] * size + q[..., 1], torch.ones(n, points))
    img = torch.log1p(hist).view(n, 1, size, size)
    img = img / img.flatten(1).amax(1).clamp(min=1e-8).view(n, 1, 1, 1)
    if channels == 1:
        return img
    tint = 0.3 + 0.7 * torch.rand(n, channels, 1, 1, generator=generator)
    return (img * tint).clamp(0, 1)


def hybrid_masks(b: int, h: int, w: int, generator: torch.Generator,
                 ramp: float = 0.1) -> torch.Tensor:
    """DiffuseMix's hybrid: per image a horizontal or vertical split at the middle, which
    half is generated chosen at random, with a linear ramp of ``ramp * size`` pixels
    across the seam. Returns (B, 1, H, W) weights of the generated image in [0, 1]."""
    vertical = torch.rand(b, generator=generator) < 0.5
    flip = torch.rand(b, generator=generator) < 0.5
    def ramp1d(n):
        width = max(1.0, ramp * n)
        pos = torch.arange(n, dtype=torch.float32) + 0.5
        return ((pos - n / 2) / width + 0.5).clamp(0, 1)  # 0 .. 1 across the middle
    ry = ramp1d(h).view(1, h, 1).expand(b, h, w)
    rx = ramp1d(w).view(1, 1, w).expand(b, h, w)
    m = torch.where(vertical.view(-1, 1, 1), rx, ry)
    m = torch.where(flip.view(-1, 1, 1), 1 - m, m)
    return m[:, None]


@register
class DBA(OfflineAugmentation):
    """DBA / DiffuseMix (Islam et al. 2024) with the study's own class-conditional model:
    an image-to-image variation of ``x1`` (noised to ``strength * T``, denoised with DDIM
    conditioned on its class), a hybrid of ``x1`` and the variation (half and half,
    random horizontal or vertical seam with a linear ramp), then blended with a
    procedural fractal: ``(1 - fractal_lambda) * hybrid + fractal_lambda * fractal``.
    The label is ``x1``'s."""
    name = "dba"

    def __init__(self, strength: float = 0.5, steps: int | None = None,
                 fractal_lambda: float = 0.2, ramp: float = 0.1, n_fractals: int = 64,
                 n_per_image: float = 1.0, batch_size: int = 256):
        _check(_num(strength) and 0 < float(strength) <= 1, self.name,
               f"strength={strength!r} must be in (0, 1]")
        _check(_num(fractal_lambda) and 0 <= float(fractal_lambda) <= 1, self.name,
               f"fractal_lambda={fractal_lambda!r} must be in [0, 1]")
        _check(_num(ramp) and 0 <= float(ramp) <= 1, self.name, f"ramp={ramp!r} must be in [0, 1]")
        _check(isinstance(n_fractals, (int, np.integer)) and n_fractals >= 1, self.name,
               f"n_fractals={n_fractals!r} must be an integer >= 1")
        super().__init__(n_per_image, batch_size, strength=float(strength), steps=steps,
                         fractal_lambda=float(fractal_lambda), ramp=float(ramp),
                         n_fractals=int(n_fractals))
        self._fractals: torch.Tensor | None = None

    def requires(self):
        return ("diffusion",)

    def fractals(self, ctx: BankContext) -> torch.Tensor:
        if self._fractals is None:
            _, c, h, w = ctx.x_train.shape
            g = torch.Generator().manual_seed(int(ctx.seed) + 424242)
            f = fractal_images(self.params["n_fractals"], max(h, w), c, g)
            self._fractals = F.interpolate(f, size=(h, w), mode="bilinear",
                                           align_corners=False) if h != w else f
        return self._fractals

    def generate(self, ctx, idx, gen, part):
        p, dm = self.params, ctx.extras["diffusion"]
        x1, y1 = ctx.x_train[idx], ctx.y_train[idx]
        b, _, h, w = x1.shape
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        var = dm.vary(x1, y1, strength=p["strength"], steps=p["steps"], seed=seed)
        m = hybrid_masks(b, h, w, gen, p["ramp"])
        hyb = (1 - m) * x1 + m * var
        fi = torch.randint(p["n_fractals"], (b,), generator=gen)
        lam = p["fractal_lambda"]
        x = (1 - lam) * hyb + lam * self.fractals(ctx)[fi]
        rec = pd.DataFrame({"index": idx.numpy(), "label": y1.numpy(), "fractal": fi.numpy(),
                            "changed": (x - x1).abs().flatten(1).mean(1).numpy()})
        return x.clamp(0, 1), _onehot(y1, ctx.n_classes), rec

