"""The DiffAug generator: latent inpainting with text and mask conditioning (Sec. 3.1).

Network: :func:`mdlib.models.build_inpaint_unet` (diffusers ``UNet2DConditionModel``):
input = noisy latent ``z_t``, the inpainting region at latent size ``M`` and the latent of
the masked frame ``z_n = E(I * (1 - R) + 0.5 R)`` (Stable Diffusion inpainting's layout);
cross-attention to the prompt's token embeddings (:class:`.prompts.TextEncoder`).

Training (:func:`train_generator`) on the training split only: each training frame with
its own polyp region ``R`` (the mask dilated by ``dilate_px`` at 96 px, scaled with the
size) masked out, and its horizontal mirror (prompt recomputed: the location word flips).
Loss, the paper's Eq. 7::

    L = mean_M |eps - eps_hat|^2 + lambda_preserve * mean_{1-M} |z_t - sqrt(a_t) z_n|^2

As printed, the second term has no gradient (``z_t`` is the network's input, not its
output). We read ``z_t`` there as the model's own estimate of the signal part of ``z_t``,
``z_t - sqrt(1 - a_t) eps_hat``, and ``z_n`` as the clean latent outside the region (equal
to the frame's latent there); the term then becomes
``lambda_preserve * mean_{1-M} (1 - a_t) |eps - eps_hat|^2``: the background's noise
prediction, weighted towards high noise levels where the background must be carried over
from ``z_n``. Classifier-free guidance through prompt dropout: the prompt is replaced by
the empty prompt with probability ``p_uncond`` and by the generic prompt
(:data:`.prompts.GENERIC_PROMPT`, the single-prompt ablation's) with ``p_generic``. An EMA
of the weights is kept and used for sampling. Resumable (:class:`mdlib.train.StepCheckpoint`).

Sampling (:func:`inpaint`): DDIM (trailing spacing, eta 0) for ``steps`` steps, guidance
``eps_u + s (eps_c - eps_u)`` (Eq. 8) with both branches in one batched call (``s = 1``:
the conditional branch alone), seeded per sample, then decoded and composited into the
frame with the region feathered by a Gaussian of ``feather_px``: pixels outside the
feathered region are the original frame's, bit for bit.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...models.segmentation import InpaintConfig, LatentCodec, build_inpaint_unet
from ...train.segmentation import StepCheckpoint, cosine_lambda


@dataclass
class GenTrainConfig:
    steps: int = 2000
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lambda_preserve: float = 0.1
    p_uncond: float = 0.1
    p_generic: float = 0.1
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    dilate_px: float = 2.0          # at 96 px
    checkpoint_every: int = 250
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def region_of(masks: torch.Tensor, size: int, dilate_px: float) -> torch.Tensor:
    """The inpainting region: masks ``(N, 1, H, W)`` dilated by ``dilate_px`` (at 96 px,
    scaled with ``size``), by max-pooling."""
    r = int(round(dilate_px * size / 96))
    if r <= 0:
        return masks.float()
    return F.max_pool2d(masks.float(), 2 * r + 1, stride=1, padding=r)


def latent_mask(region: torch.Tensor, factor: int) -> torch.Tensor:
    """The region at latent size: a latent pixel is in it when any of its pixels is."""
    return F.max_pool2d(region.float(), factor, stride=factor)


def masked_frames(x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Frames with the region replaced by mid-grey (0 in the autoencoder's [-1, 1])."""
    return x * (1 - region) + 0.5 * region


class _EMA:
    def __init__(self, model, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.k = 0

    @torch.no_grad()
    def update(self, model):
        self.k += 1
        d = min(self.decay, (1 + self.k) / (10 + self.k))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)


def train_generator(codec: LatentCodec, frames: torch.Tensor, masks: torch.Tensor,
                    emb_table: np.ndarray, emb_mask: np.ndarray, prompt_idx: np.ndarray,
                    null_idx: int, generic_idx: int, net_cfg: InpaintConfig,
                    cfg: GenTrainConfig, run_dir=None, device: str = "cpu",
                    progress: bool = True) -> tuple[dict, dict, pd.DataFrame, float]:
    """Train the inpainting UNet (module docstring). ``frames`` float ``(N, 3, H, W)``,
    ``masks`` ``(N, 1, H, W)``; ``emb_table``/``emb_mask``: unique prompts' token
    embeddings; ``prompt_idx[i]``: row of frame ``i``'s prompt; ``null_idx`` /
    ``generic_idx``: rows of the empty and the generic prompt. Returns ``(EMA weights, raw
    weights, loss history, wall seconds)``."""
    import pandas as pd
    from diffusers import DDPMScheduler
    t0 = time.time()
    dev = torch.device(device)
    size = frames.shape[-1]
    region = region_of(masks, size, cfg.dilate_px)
    z0 = codec.encode(frames, 64).cpu()
    zn = codec.encode(masked_frames(frames, region), 64).cpu()
    mlat = latent_mask(region, codec.factor).cpu()
    emb = torch.from_numpy(emb_table)
    emsk = torch.from_numpy(emb_mask)
    pidx = torch.from_numpy(np.asarray(prompt_idx, dtype=np.int64))
    n = len(z0)

    unet = build_inpaint_unet(net_cfg, codec.latent_channels, seed=cfg.seed).to(dev)
    sched = DDPMScheduler(num_train_timesteps=net_cfg.num_train_timesteps,
                          beta_schedule=net_cfg.beta_schedule)
    abar = sched.alphas_cumprod.float().to(dev)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_s = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(cfg.steps, cfg.warmup_steps))
    ema = _EMA(unet, cfg.ema_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.empty(0, dtype=torch.long)
    step, hist = 0, []
    ckpt = StepCheckpoint(run_dir) if run_dir is not None else None
    if ckpt is not None and (got := ckpt.load()) is not None:
        step, mods, states, extra = got
        unet.load_state_dict(mods["unet"])
        ema.shadow = {k: v.to(dev) for k, v in mods["ema"].items()}
        ema.k = int(extra["ema_k"])
        opt.load_state_dict(states["opt"])
        lr_s.load_state_dict(states["sched"])
        gen.set_state(states["gen"])
        order = states["order"]
        hist = extra["history"]
    bar = tqdm(total=cfg.steps, initial=step, desc="generator", disable=not progress, leave=False)
    unet.train()
    while step < cfg.steps:
        if len(order) < cfg.batch_size:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        idx, order = order[:cfg.batch_size], order[cfg.batch_size:]
        b = len(idx)
        u = torch.rand(b, generator=gen)
        rows = torch.where(u < cfg.p_uncond, torch.full_like(pidx[idx], null_idx),
                           torch.where(u < cfg.p_uncond + cfg.p_generic,
                                       torch.full_like(pidx[idx], generic_idx), pidx[idx]))
        t = torch.randint(0, net_cfg.num_train_timesteps, (b,), generator=gen)
        eps = torch.randn(z0[idx].shape, generator=gen)
        zb, znb, mb = z0[idx].to(dev), zn[idx].to(dev), mlat[idx].to(dev)
        t, eps = t.to(dev), eps.to(dev)
        a = abar[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * zb + (1 - a).sqrt() * eps
        out = unet(torch.cat([z_t, mb, znb], 1), t, encoder_hidden_states=emb[rows].to(dev),
                   encoder_attention_mask=emsk[rows].to(dev)).sample
        se = (eps - out).pow(2).mean(1, keepdim=True)                    # (b, 1, h, w)
        inside = (mb * se).sum() / mb.sum().clamp_min(1.0)
        outside = ((1 - mb) * (1 - a) * se).sum() / (1 - mb).sum().clamp_min(1.0)
        loss = inside + cfg.lambda_preserve * outside                    # Eq. 7 (docstring)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
        opt.step()
        lr_s.step()
        ema.update(unet)
        step += 1
        hist.append({"step": step, "loss": float(loss.detach()), "inside": float(inside.detach()),
                     "outside": float(outside.detach())})
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{np.mean([h['loss'] for h in hist[-25:]]):.4f}")
        if ckpt is not None and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            ckpt.save(step, {"unet": {k: v.detach().cpu() for k, v in unet.state_dict().items()},
                             "ema": {k: v.cpu() for k, v in ema.shadow.items()}},
                      {"opt": opt.state_dict(), "sched": lr_s.state_dict(), "gen": gen.get_state(),
                       "order": order}, {"history": hist, "ema_k": ema.k})
    bar.close()
    if ckpt is not None:
        ckpt.clear()
    raw = {k: v.detach().cpu().clone() for k, v in unet.state_dict().items()}
    return ({k: v.cpu().clone() for k, v in ema.shadow.items()}, raw, pd.DataFrame(hist),
            time.time() - t0)


def _feather(region: torch.Tensor, px: float) -> torch.Tensor:
    if px <= 0:
        return region
    from torchvision.transforms.functional import gaussian_blur
    k = int(2 * math.ceil(3 * px) + 1)
    soft = gaussian_blur(region, [k, k], [px, px])
    return torch.maximum(soft, region)      # the region itself stays fully generated


@torch.no_grad()
def inpaint(unet, codec: LatentCodec, frames: torch.Tensor, region: torch.Tensor,
            cond: tuple, uncond: tuple, seeds, steps: int = 50, guidance: float = 7.5,
            num_train_timesteps: int = 1000, beta_schedule: str = "scaled_linear",
            feather_px: float = 1.0, return_raw: bool = False, clip_x0: float | None = None):
    """Inpaint ``region`` (``(B, 1, H, W)`` in {0, 1}) of ``frames`` (float ``(B, 3, H, W)``)
    conditioned on ``cond = (token embeddings (B, L, D), mask (B, L))``; ``uncond``: the
    empty prompt's ``(1, L, D), (1, L)``; one seed per sample (the initial noise). Returns
    the composited frames (and the raw decoded ones with ``return_raw``).

    ``clip_x0``: at every DDIM step the predicted clean latent is clipped to
    ``[-clip_x0, clip_x0]`` (the scaled latents of real frames have unit standard deviation).
    Without it, a small generator's clean-latent estimates at the first, noisiest steps
    (``x0 = (z_t - sqrt(1 - a) eps) / sqrt(a)`` amplifies the noise estimate's error by
    about 15 at ``t = T - 1``) leave the trajectory with latents of several standard
    deviations, which decode to pale, bluish patches instead of tissue."""
    from diffusers import DDIMScheduler, DDPMScheduler
    dev = next(unet.parameters()).device
    b = len(frames)
    ddim = DDIMScheduler.from_config(
        DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule).config,
        timestep_spacing="trailing", set_alpha_to_one=False,
        clip_sample=clip_x0 is not None, clip_sample_range=float(clip_x0 or 1.0))
    ddim.set_timesteps(int(steps))
    zn = codec.encode(masked_frames(frames, region)).to(dev)
    ml = latent_mask(region, codec.factor).to(dev)
    shape = (codec.latent_channels,) + tuple(zn.shape[-2:])
    z = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                     for s in seeds]).to(dev)
    e_c, m_c = (torch.as_tensor(v).to(dev) for v in cond)
    m_c = m_c.bool()
    use_cfg = guidance != 1.0
    if use_cfg:
        e_u, m_u = (torch.as_tensor(v).to(dev) for v in uncond)
        e_all = torch.cat([e_c, e_u.expand(b, -1, -1)])
        m_all = torch.cat([m_c, m_u.bool().expand(b, -1)])
    for t in ddim.timesteps:
        tt = torch.full((b,), int(t), dtype=torch.long, device=dev)
        x_in = torch.cat([z, ml, zn], 1)
        if use_cfg:
            out = unet(torch.cat([x_in, x_in]), torch.cat([tt, tt]), encoder_hidden_states=e_all,
                       encoder_attention_mask=m_all).sample
            eps_c, eps_u = out[:b], out[b:]
            eps = eps_u + guidance * (eps_c - eps_u)                      # Eq. 8
        else:
            eps = unet(x_in, tt, encoder_hidden_states=e_c, encoder_attention_mask=m_c).sample
        z = ddim.step(eps, int(t), z).prev_sample
    raw = codec.decode(z).cpu()
    w = _feather(region.float(), feather_px * frames.shape[-1] / 96)
    out = frames * (1 - w) + raw * w
    return (out, raw) if return_raw else out
