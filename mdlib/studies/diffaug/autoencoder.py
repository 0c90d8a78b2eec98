"""The autoencoder of the latent models.

The paper uses the Stable Diffusion VAE. With its weights present (the profile's
``autoencoder.pretrained``: a local diffusers directory or a cached repo id, e.g. a Stable
Diffusion checkout with ``subfolder: vae``) it is loaded by
:func:`mdlib.models.load_pretrained_autoencoder` and used frozen with its own
``scaling_factor``. Offline, a small ``AutoencoderKL`` (:class:`mdlib.models.AEConfig`) is
trained here on the **training split only**: the training frames and their masks (as grey
images, so that the latent segmenter can encode and decode masks), random
``crop``-pixel crops (the network is fully convolutional; crops cut the cost 4x at half
the size), random flips, loss ``L1 + kl_weight * KL`` (Stable Diffusion's first-stage
recipe without its perceptual and adversarial terms, whose networks need downloads).

Its latent scale is ``1 / std`` of the training frames' latents (the rule that gives SD's
0.18215). Reported: reconstruction MAE / PSNR of frames and Dice of encoded-decoded
masks on the validation and test frames (:func:`reconstruction_metrics`).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ...models.segmentation import AEConfig, LatentCodec, build_autoencoder
from ...train.segmentation import StepCheckpoint, cosine_lambda


@dataclass
class AETrainConfig:
    steps: int = 2000
    batch_size: int = 16
    crop: int = 48
    lr: float = 1e-3
    kl_weight: float = 1e-6
    checkpoint_every: int = 250
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def train_autoencoder(frames: torch.Tensor, masks: torch.Tensor, net: AEConfig,
                      cfg: AETrainConfig, run_dir=None, device: str = "cpu",
                      progress: bool = True):
    """Train the small AutoencoderKL on frames ``(N, 3, H, W)`` and masks ``(N, 1, H, W)``
    (module docstring). Returns ``(state_dict, scaling_factor, history, wall seconds)``."""
    t0 = time.time()
    dev = torch.device(device)
    pool = torch.cat([frames.float(), masks.float().expand(-1, 3, -1, -1)])
    n, _, H, W = pool.shape
    c = min(cfg.crop, H, W)
    ae = build_autoencoder(net, cfg.seed).to(dev)
    opt = torch.optim.AdamW(ae.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(cfg.steps, min(100, cfg.steps // 10)))
    gen = torch.Generator().manual_seed(cfg.seed)
    step, hist = 0, []
    ckpt = StepCheckpoint(run_dir) if run_dir is not None else None
    if ckpt is not None and (got := ckpt.load()) is not None:
        step, mods, states, extra = got
        ae.load_state_dict(mods["ae"])
        opt.load_state_dict(states["opt"])
        sched.load_state_dict(states["sched"])
        gen.set_state(states["gen"])
        hist = extra["history"]
    bar = tqdm(total=cfg.steps, initial=step, desc="autoencoder", disable=not progress, leave=False)
    ae.train()
    while step < cfg.steps:
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        r0 = torch.randint(0, H - c + 1, (cfg.batch_size,), generator=gen)
        c0 = torch.randint(0, W - c + 1, (cfg.batch_size,), generator=gen)
        fl = torch.rand(cfg.batch_size, 2, generator=gen) < 0.5
        xb = torch.stack([pool[i, :, a:a + c, b:b + c] for i, a, b in zip(idx, r0, c0)])
        xb = torch.where(fl[:, 0].view(-1, 1, 1, 1), xb.flip(-1), xb)
        xb = torch.where(fl[:, 1].view(-1, 1, 1, 1), xb.flip(-2), xb)
        xb = xb.to(dev) * 2 - 1
        post = ae.encode(xb).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(dev)
        rec = ae.decode(z).sample
        l1 = (rec - xb).abs().mean()
        kl = post.kl().mean() / z[0].numel()
        loss = l1 + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        hist.append({"step": step, "l1": float(l1.detach()), "kl": float(kl.detach())})
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(l1=f"{np.mean([h['l1'] for h in hist[-25:]]):.4f}")
        if ckpt is not None and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            ckpt.save(step, {"ae": {k: v.detach().cpu() for k, v in ae.state_dict().items()}},
                      {"opt": opt.state_dict(), "sched": sched.state_dict(), "gen": gen.get_state()},
                      {"history": hist})
    bar.close()
    ae.eval()
    codec = LatentCodec(ae, 1.0)
    z = codec.encode(frames, 64)
    scale = float(1.0 / z.std())
    if ckpt is not None:
        ckpt.clear()
    return ({k: v.detach().cpu() for k, v in ae.state_dict().items()}, scale,
            pd.DataFrame(hist), time.time() - t0)


@torch.no_grad()
def reconstruction_metrics(codec: LatentCodec, frames: torch.Tensor, masks: torch.Tensor,
                           batch_size: int = 32) -> dict:
    """Frames: MAE and PSNR (intensities in [0, 1]) of decode(encode(x)); masks: mean
    per-image Dice of the decoded mask thresholded at 0.5."""
    from ...metrics import segmentation as segm
    mae, mse, dice = [], [], []
    for i in range(0, len(frames), batch_size):
        x = frames[i:i + batch_size].to(codec.device)
        r = codec.decode(codec.encode(x))
        mae.append((r - x).abs().flatten(1).mean(1).cpu())
        mse.append((r - x).pow(2).flatten(1).mean(1).cpu())
        m = masks[i:i + batch_size].to(codec.device)
        p = codec.decode_mask(codec.encode_mask(m))
        dice.append(torch.from_numpy(segm.per_image((p[:, 0] >= 0.5).cpu().numpy(),
                                                    m[:, 0].cpu().numpy().astype(np.uint8))["dice"]))
    mae, mse, dice = torch.cat(mae), torch.cat(mse), torch.cat(dice)
    psnr = 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
    return {"frame_mae": float(mae.mean()), "frame_psnr": float(psnr.mean()),
            "mask_dice": float(dice.mean()), "n": int(len(frames))}
