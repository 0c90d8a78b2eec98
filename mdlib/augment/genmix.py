"""GenMix (Lee, Lee, Hong 2024): Mixup between real training images and samples of the class-conditional diffusion model (offline bank)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .base import OfflineAugmentation, _check, _num, _onehot, register, sample_beta


@register
class GenMix(OfflineAugmentation):
    """GenMix (Lee, Lee, Hong 2024): Mixup between a real training image ``x1`` and a
    synthetic image from the class-conditional diffusion model (its class drawn from the
    training label distribution), ``lam ~ Beta(alpha, alpha)`` per image,
    ``x = lam * x1 + (1 - lam) * x_syn``, labels mixed with the same ``lam``."""
    name = "genmix"

    def __init__(self, alpha: float = 0.2, sample_steps: int | None = None,
                 n_per_image: float = 1.0, batch_size: int = 256):
        _check(_num(alpha) and alpha > 0, self.name, f"alpha={alpha!r} must be > 0")
        _check(sample_steps is None or (isinstance(sample_steps, (int, np.integer))
                                        and sample_steps >= 1),
               self.name, f"sample_steps={sample_steps!r} must be None or an integer >= 1")
        super().__init__(n_per_image, batch_size, alpha=float(alpha), sample_steps=sample_steps)

    def requires(self):
        return ("diffusion",)

    def generate(self, ctx, idx, gen, part):
        dm = ctx.extras["diffusion"]
        b, k = len(idx), ctx.n_classes
        cls = ctx.y_train[torch.randint(len(ctx.y_train), (b,), generator=gen)]
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        syn, _ = dm.sample(labels=cls, seed=seed, batch_size=b, steps=self.params["sample_steps"],
                           progress=False)
        lam = sample_beta(self.params["alpha"], b, gen)
        x1, y1 = ctx.x_train[idx], ctx.y_train[idx]
        x = lam.view(-1, 1, 1, 1) * x1 + (1 - lam.view(-1, 1, 1, 1)) * syn.to(x1)
        y = lam[:, None] * _onehot(y1, k) + (1 - lam[:, None]) * _onehot(cls, k)
        rec = pd.DataFrame({"index": idx.numpy(), "label": y1.numpy(), "synthetic_class": cls.numpy(),
                            "lam": lam.numpy()})
        return x.clamp(0, 1), y, rec

