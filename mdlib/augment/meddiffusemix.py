"""MedDiffuseMix (the paper's Algorithm 1): saliency regions, mask, boundary smoothing, adaptive ratio, blend, masked diffusion refinement, preservation check with back-off (offline bank)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..saliency import gradcam
from .base import OfflineAugmentation, _check, _num, _onehot, register


def same_class_partners(y: torch.Tensor, idx: torch.Tensor, generator: torch.Generator
                        ) -> torch.Tensor:
    """For each training index in ``idx``, a random other index of the same class
    (never the image itself). ``y``: labels of the whole training split."""
    y = y.long()
    order = torch.argsort(y, stable=True)              # indices grouped by class
    counts = torch.bincount(y)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))             # position of each index in `order`
    c = y[idx]
    n_c = counts[c]
    if (n_c < 2).any():
        bad = sorted(set(c[n_c < 2].tolist()))
        raise ValueError(f"meddiffusemix: class(es) {bad} have fewer than 2 training images; "
                         "no partner of the same class exists")
    pos = rank[idx] - starts[c]                        # position within its class
    r = (torch.rand(len(idx), generator=generator) * (n_c - 1).float()).long().clamp(max=n_c - 2)
    return order[starts[c] + (pos + 1 + r) % n_c]


def regions(s1: torch.Tensor, s2: torch.Tensor, tau_h: float, tau_b: float):
    """Eq. 1-2: ``R_h(x1) = S1 > tau_h``, ``R_b(x) = S <= tau_b``, ``M = R_b1 & R_b2``."""
    return s1 > tau_h, s1 <= tau_b, s2 <= tau_b, (s1 <= tau_b) & (s2 <= tau_b)


def smooth_mask(m: torch.Tensor, sigma: float) -> torch.Tensor:
    """Eq. 3: ``M_s = GaussianBlur(M, sigma)`` (torchvision, kernel ``2 ceil(3 sigma) + 1``,
    reflect padding), for masks (B, H, W); ``sigma = 0`` returns the binary mask as float.
    ``M_s`` is exactly 0 farther than ``ceil(3 sigma)`` pixels from the mask."""
    mf = m.float()
    if sigma <= 0:
        return mf
    from torchvision.transforms.functional import gaussian_blur
    k = 2 * math.ceil(3 * sigma) + 1
    h, w = mf.shape[-2:]
    if k // 2 >= min(h, w):  # reflect padding needs a kernel radius below the image size
        k = 2 * (min(h, w) - 1) - 1 if min(h, w) > 1 else 1
    out = gaussian_blur(mf[:, None], [k, k], [float(sigma), float(sigma)])[:, 0]
    return torch.where(out < 1e-7, torch.zeros_like(out), out.clamp(0, 1))


def adaptive_alpha(s1, s2, rb1, rb2, alpha_base, omega, alpha_min, alpha_max, eps=1e-8):
    """Eq. 5-6: ``rho = 1 - |S1b - S2b| / (S1b + S2b + eps)`` from the mean saliency of each
    image inside its own background region (0 where that region is empty), ``eta`` = IoU
    of the two background regions (0 where both are empty), and
    ``alpha = clip(alpha_base * rho * eta * omega, alpha_min, alpha_max)``.
    Returns ``(alpha, rho, eta)``, each (B,)."""
    def mean_in(s, r):
        n = r.flatten(1).sum(1)
        return torch.where(n > 0, (s * r).flatten(1).sum(1) / n.clamp(min=1), torch.zeros_like(n, dtype=s.dtype))
    s1b, s2b = mean_in(s1, rb1), mean_in(s2, rb2)
    rho = 1 - (s1b - s2b).abs() / (s1b + s2b + eps)
    inter = (rb1 & rb2).flatten(1).sum(1).float()
    union = (rb1 | rb2).flatten(1).sum(1).float()
    eta = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))
    alpha = (alpha_base * rho * eta * omega).clamp(alpha_min, alpha_max)
    return alpha, rho, eta


def blend(x1, x2, ms, alpha):
    """Eq. 4: ``x_mix = (1 - alpha * M_s) * x1 + alpha * M_s * x2`` (exactly ``x1`` where
    ``M_s = 0``)."""
    w = alpha.view(-1, 1, 1, 1) * ms[:, None]
    return torch.where(w == 0, x1, (1 - w) * x1 + w * x2)


def random_mask_like(m: torch.Tensor, generator: torch.Generator, sigma: float = 2.0
                     ) -> torch.Tensor:
    """Ablation "no saliency guidance": per image a random blob mask with exactly as many
    pixels as ``m`` (B, H, W) (a blurred noise field cut at the matching rank)."""
    b, h, w = m.shape
    field_ = torch.rand(b, h, w, generator=generator)
    field_ = smooth_mask(field_, sigma) if sigma > 0 else field_
    field_ = field_ + 1e-6 * torch.rand(b, h, w, generator=generator)  # break ties
    area = m.flatten(1).sum(1)
    ranks = field_.flatten(1).argsort(1, descending=True).argsort(1)
    return (ranks < area[:, None]).view(b, h, w)


#: the per-image outcome of MedDiffuseMix (column ``status`` of its records)
MDM_STATUS = ("accepted", "accepted_unchecked", "kept_at_min", "dropped",
              "noop_empty_high", "noop_empty_mask")


@register
class MedDiffuseMix(OfflineAugmentation):
    """MedDiffuseMix, Algorithm 1 of the paper (``../shared/docs/METHODS.md`` section 1).

    Per augmented image ``x1`` (label ``y1``): a partner ``x2`` of the same class (never
    ``x1``); cached Grad-CAM maps ``S1, S2`` of the guidance classifier; regions (Eq. 1),
    mask ``M = R_b1 & R_b2`` (Eq. 2), ``M_s`` = Gaussian blur of ``M`` with ``sigma`` px
    (Eq. 3); adaptive ``alpha`` (Eq. 5-6); blend (Eq. 4); masked diffusion refinement
    (RePaint, ``strength``, ``refine_steps``); preservation check (Eq. 8): accept if the
    mean of ``S(x_aug)`` over ``R_h(x1)`` is ``>= delta``, else ``alpha <- max(0.8 alpha,
    alpha_min)`` and blend and refine again with the same noise, while ``alpha >
    alpha_min``. A sample still failing at ``alpha_min`` is kept (``on_fail="keep"``,
    status ``kept_at_min``) or dropped from the bank (``"drop"``).

    Documented edge cases (counted in the records): an empty ``R_h(x1)`` (a flat CAM:
    nothing salient to protect and nothing to check) or an empty mask ``M`` (no shared
    background) give a no-op: the bank holds ``x1`` unchanged, with its label.

    Ablation switches: ``use_saliency=False`` (random blob mask of the same area as
    ``M``), ``adaptive=False`` (``alpha = clip(alpha_base)``), ``smooth=False``
    (``sigma = 0``: binary mask), ``refine=False`` (blend only), ``check=False`` (no
    preservation check: nothing is rejected; the kept saliency is still recorded).

    Batched: one Grad-CAM pass (forward + backward) per batch and retry round, one UNet
    call (two images per row with classifier-free guidance) per refinement step for the
    whole batch; retries only re-run the rows that failed.
    """
    name = "meddiffusemix"

    def __init__(self, tau_h: float = 0.6, tau_b: float = 0.3, delta: float = 0.7,
                 alpha_base: float = 1.0, alpha_min: float = 0.05, alpha_max: float = 0.8,
                 omega: float = 1.0, sigma: float = 1.5, strength: float = 0.3,
                 refine_steps: int = 10, backoff: float = 0.8, on_fail: str = "keep",
                 use_saliency: bool = True, adaptive: bool = True, smooth: bool = True,
                 refine: bool = True, check: bool = True,
                 n_per_image: float = 1.0, batch_size: int = 256):
        m = self.name
        for k, v in dict(tau_h=tau_h, tau_b=tau_b, delta=delta).items():
            _check(_num(v) and 0 <= float(v) <= 1, m, f"{k}={v!r} must be in [0, 1]")
        _check(tau_b <= tau_h, m, f"tau_b={tau_b} must be <= tau_h={tau_h}")
        for k, v in dict(alpha_base=alpha_base, alpha_min=alpha_min, alpha_max=alpha_max,
                         omega=omega).items():
            _check(_num(v) and float(v) >= 0, m, f"{k}={v!r} must be a number >= 0")
        _check(alpha_min <= alpha_max, m, f"alpha_min={alpha_min} must be <= alpha_max={alpha_max}")
        _check(alpha_max <= 1, m, f"alpha_max={alpha_max} must be <= 1")
        _check(alpha_min > 0 or not check, m, "alpha_min must be > 0 when the check is on "
               "(the back-off alpha <- 0.8 alpha stops at alpha_min)")
        _check(_num(sigma) and float(sigma) >= 0, m, f"sigma={sigma!r} must be >= 0")
        _check(_num(strength) and 0 < float(strength) <= 1, m,
               f"strength={strength!r} must be in (0, 1]")
        _check(isinstance(refine_steps, (int, np.integer)) and refine_steps >= 1, m,
               f"refine_steps={refine_steps!r} must be an integer >= 1")
        _check(_num(backoff) and 0 < float(backoff) < 1, m, f"backoff={backoff!r} must be in (0, 1)")
        _check(on_fail in ("keep", "drop"), m, f"on_fail={on_fail!r} must be 'keep' or 'drop'")
        for k, v in dict(use_saliency=use_saliency, adaptive=adaptive, smooth=smooth,
                         refine=refine, check=check).items():
            _check(isinstance(v, (bool, np.bool_)), m, f"{k}={v!r} must be True or False")
        super().__init__(n_per_image, batch_size, tau_h=float(tau_h), tau_b=float(tau_b),
                         delta=float(delta), alpha_base=float(alpha_base),
                         alpha_min=float(alpha_min), alpha_max=float(alpha_max),
                         omega=float(omega), sigma=float(sigma), strength=float(strength),
                         refine_steps=int(refine_steps), backoff=float(backoff), on_fail=on_fail,
                         use_saliency=bool(use_saliency), adaptive=bool(adaptive),
                         smooth=bool(smooth), refine=bool(refine), check=bool(check))

    def requires(self):
        p = self.params
        need = ["saliency"]
        if p["refine"]:
            need.append("diffusion")
        need.append("guidance")  # the check, and the recorded saliency kept
        return tuple(need)

    def check_context(self, ctx):
        super().check_context(ctx)
        s = ctx.extras["saliency"]
        want = (len(ctx.y_train),) + tuple(ctx.x_train.shape[-2:])
        if tuple(s.shape) != want:
            raise ValueError(f"meddiffusemix: saliency maps of shape {tuple(s.shape)}, expected "
                             f"{want} (one map per training image)")
        counts = torch.bincount(ctx.y_train, minlength=ctx.n_classes)
        if (counts[counts > 0] < 2).any():
            raise ValueError(f"meddiffusemix: every class needs >= 2 training images, counts "
                             f"{counts.tolist()}")

    def generate(self, ctx, idx, gen, part):
        return self.augment(ctx.x_train, ctx.y_train, torch.as_tensor(ctx.extras["saliency"]),
                            idx, gen, guidance=ctx.extras.get("guidance"),
                            diffusion=ctx.extras.get("diffusion"), n_classes=ctx.n_classes)

    def augment(self, x_all, y_all, s_all, idx, gen, guidance=None, diffusion=None,
                partners: torch.Tensor | None = None, n_classes: int | None = None):
        """MedDiffuseMix for the training images ``idx`` (x1), with partners drawn from
        ``gen`` (or given). Returns ``(x_aug (B,C,H,W), soft labels (B,K), records)``."""
        p = self.params
        idx = torch.as_tensor(idx).long()
        k = int(n_classes) if n_classes is not None else int(y_all.max()) + 1
        if p["refine"] and diffusion is None:
            raise ValueError("meddiffusemix: refine=True needs a diffusion model")
        if p["check"] and guidance is None:
            raise ValueError("meddiffusemix: check=True needs the guidance classifier")
        j = same_class_partners(y_all, idx, gen) if partners is None else torch.as_tensor(partners)
        x1, x2, y1 = x_all[idx].float(), x_all[j].float(), y_all[idx].long()
        s1, s2 = s_all[idx].float(), s_all[j].float()
        rh, rb1, rb2, m = regions(s1, s2, p["tau_h"], p["tau_b"])
        if not p["use_saliency"]:
            m = random_mask_like(m, gen)
        ms = smooth_mask(m, p["sigma"] if p["smooth"] else 0.0)
        if p["adaptive"]:
            alpha, rho, eta = adaptive_alpha(s1, s2, rb1, rb2, p["alpha_base"], p["omega"],
                                             p["alpha_min"], p["alpha_max"])
        else:
            alpha = torch.full((len(idx),), p["alpha_base"]).clamp(p["alpha_min"], p["alpha_max"])
            rho = eta = torch.full((len(idx),), float("nan"))
        alpha0 = alpha.clone()
        b = len(idx)
        empty_high = rh.flatten(1).sum(1) == 0
        empty_mask = m.flatten(1).sum(1) == 0
        noop = empty_high | empty_mask
        status = np.array(["accepted"] * b, dtype=object)
        status[(empty_mask & ~empty_high).numpy()] = "noop_empty_mask"
        status[empty_high.numpy()] = "noop_empty_high"
        retries = torch.zeros(b, dtype=torch.long)
        kept = torch.full((b,), float("nan"))
        out = x1.clone()
        noise = None
        if p["refine"]:
            noise = diffusion.make_noise(b, int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        act = (~noop).nonzero().flatten()
        while len(act):
            xm = blend(x1[act], x2[act], ms[act], alpha[act])
            if p["refine"]:
                xm = diffusion.refine(xm, ms[act][:, None], y1[act], strength=p["strength"],
                                      steps=p["refine_steps"], noise=noise[act])
            out[act] = xm
            if guidance is None:
                break
            cam = gradcam(guidance, xm, y1[act]).cpu()
            r = rh[act].float()
            kept[act] = (cam * r).flatten(1).sum(1) / r.flatten(1).sum(1)
            if not p["check"]:
                status[act.numpy()] = "accepted_unchecked"
                break
            fail = kept[act] < p["delta"]
            can = fail & (alpha[act] > p["alpha_min"] * (1 + 1e-6))
            stuck = act[fail & ~can]
            status[stuck.numpy()] = "kept_at_min" if p["on_fail"] == "keep" else "dropped"
            act = act[can]
            alpha[act] = (alpha[act] * p["backoff"]).clamp(min=p["alpha_min"])
            retries[act] += 1
        keep = torch.from_numpy(status != "dropped")
        rec = pd.DataFrame({
            "index": idx.numpy(), "partner": j.numpy(), "label": y1.numpy(),
            "alpha_initial": alpha0.numpy(), "alpha": alpha.numpy(), "rho": rho.numpy(),
            "eta": eta.numpy(), "retries": retries.numpy(),
            "accepted": np.isin(status, ("accepted", "accepted_unchecked")),
            "kept": keep.numpy(), "status": status.astype(str),
            "mask_area": m.flatten(1).float().mean(1).numpy(),
            "high_area": rh.flatten(1).float().mean(1).numpy(),
            "saliency_kept": kept.numpy(),
            "changed": (out - x1).abs().flatten(1).mean(1).numpy()})
        return out.clamp(0, 1), _onehot(y1, k), rec

