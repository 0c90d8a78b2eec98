"""Train / validate / test a segmenter (any model of the protocol in
:mod:`mdlib.models.segmentation`: ``prepare``, ``training_loss``, ``predict``,
``pixel_input``).

* The budget is a number of optimizer **steps** (``SegTrainConfig.steps``), the same for
  every arm of a comparison whatever the size of its training pool (real frames plus any
  synthetic ones): batches are drawn without replacement from the pool, reshuffled when
  it runs out.
* Paired image / mask augmentation (:class:`PairedAugment`: flips, rotation, scaling,
  elastic deformation; torchvision v2 transforms on ``tv_tensors.Image`` /
  ``tv_tensors.Mask``, so one random draw moves both) for models with pixel input.
* The model is selected on the **validation** split's mean per-image Dice, evaluated
  every ``eval_every`` steps (ties: the earlier step); the **test** split is predicted
  exactly once, with the selected weights.
* Seeded: weights from ``seed``, batches, augmentation and noise from one generator
  seeded with ``seed``; the same configuration gives the same numbers on one machine and
  thread count.
* Resumable: with ``run_dir``, a checkpoint (weights, optimizer, scheduler, generator,
  best weights, history) is committed every ``checkpoint_every`` steps and a killed run
  continues from it with the same result (:class:`StepCheckpoint`).
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..io import write_json
from ..metrics import segmentation as segm
from .checkpoints import load_checkpoint, save_checkpoint
from .classification import resolve_device, seed_everything


@dataclass
class SegTrainConfig:
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01      # cosine schedule down to lr * min_lr_ratio
    eval_every: int = 100
    eval_batch_size: int = 32
    grad_clip: float | None = 1.0
    threshold: float = 0.5
    augment: dict | None = None     # PairedAugment settings ({}: its defaults); None: none
    checkpoint_every: int = 0       # 0: only at evaluations when run_dir is given
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        for k in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            v = getattr(self, k)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"SegTrainConfig.{k}={v!r}: must be an integer >= 1")
        if not self.lr > 0:
            raise ValueError(f"SegTrainConfig.lr={self.lr}: must be > 0")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"SegTrainConfig.threshold={self.threshold}: must lie in (0, 1)")
        if self.augment is not None:
            PairedAugment(**self.augment)   # validates the keys

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- augmentation
class PairedAugment:
    """The same random geometric transform applied to an image and its mask (torchvision
    v2): horizontal / vertical flips with probability ``flip``, rotation by up to
    ``degrees``, isotropic scaling in ``scale``, and with probability ``elastic_p`` an
    elastic deformation (``elastic_alpha``, ``elastic_sigma`` in pixels at the working
    size). Each image of a batch gets its own draw, from the caller's generator. Masks are
    resampled with nearest neighbour and stay binary."""

    KEYS = ("flip", "degrees", "scale", "elastic_p", "elastic_alpha", "elastic_sigma")

    def __init__(self, flip: float = 0.5, degrees: float = 15.0, scale=(0.85, 1.15),
                 elastic_p: float = 0.3, elastic_alpha: float = 20.0, elastic_sigma: float = 4.0):
        from torchvision.transforms import v2
        self.settings = dict(flip=flip, degrees=degrees, scale=tuple(scale), elastic_p=elastic_p,
                             elastic_alpha=elastic_alpha, elastic_sigma=elastic_sigma)
        geo = [v2.RandomHorizontalFlip(flip), v2.RandomVerticalFlip(flip),
               v2.RandomAffine(degrees=degrees, scale=tuple(scale))]
        self.geo = v2.Compose(geo)
        self.elastic = v2.RandomApply([v2.ElasticTransform(alpha=elastic_alpha, sigma=elastic_sigma)],
                                      p=elastic_p)

    def __call__(self, x: torch.Tensor, m: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors
        xs, ms = [], []
        seeds = torch.randint(0, 2**31 - 1, (len(x),), generator=generator).tolist()
        for i, s in enumerate(seeds):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)   # torchvision draws from the global RNG
                xi, mi = tv_tensors.Image(x[i]), tv_tensors.Mask(m[i])
                xi, mi = self.geo(xi, mi)
                xi, mi = self.elastic(xi, mi)
            xs.append(xi.as_subclass(torch.Tensor))
            ms.append(mi.as_subclass(torch.Tensor))
        return torch.stack(xs), torch.stack(ms)


# --------------------------------------------------------------------------- checkpoints
class StepCheckpoint:
    """A checkpoint of a step-budget training loop in ``<dir>/ckpt/``: a folder
    ``step_<k>/`` written completely, then ``latest.json`` pointing at it (the commit
    point, written atomically), then older folders removed. Weights as safetensors,
    optimizer / scheduler / generator state with ``torch.save`` (read back with
    ``weights_only=True``)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir) / "ckpt"

    def latest(self) -> dict | None:
        f = self.dir / "latest.json"
        if not f.is_file():
            return None
        info = json.loads(f.read_text())
        return info if (self.dir / info["folder"]).is_dir() else None

    def save(self, step: int, modules: dict, states: dict, extra: dict) -> None:
        folder = self.dir / f"step_{step}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name, sd in modules.items():
            save_checkpoint(folder / f"{name}.safetensors", sd)
        torch.save(states, folder / "states.pt")
        write_json(folder / "extra.json", extra)
        write_json(self.dir / "latest.json", {"step": step, "folder": folder.name})
        for old in self.dir.glob("step_*"):
            if old.name != folder.name:
                shutil.rmtree(old, ignore_errors=True)

    def load(self) -> tuple[int, dict, dict, dict] | None:
        info = self.latest()
        if info is None:
            return None
        folder = self.dir / info["folder"]
        modules = {p.stem: load_checkpoint(p)[0] for p in folder.glob("*.safetensors")}
        states = torch.load(folder / "states.pt", weights_only=True)
        extra = json.loads((folder / "extra.json").read_text())
        return int(info["step"]), modules, states, extra

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def cosine_lambda(total: int, warmup: int = 0, min_ratio: float = 0.01):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    return f


# --------------------------------------------------------------------------- prediction
def _as_float_images(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dtype == torch.uint8:          # (N, H, W, 3) uint8 -> (N, 3, H, W) float
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
    return x.float()


def _as_float_masks(m) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(m))
    if m.ndim == 3:
        m = m[:, None]
    return m.float()


@torch.no_grad()
def predict_masks(model: nn.Module, x, batch_size: int = 32, device=None, **kw) -> np.ndarray:
    """Foreground probabilities ``float32 (N, H, W)`` of images ``x`` (uint8 NHWC or float
    NCHW in [0, 1]), batched, in eval mode."""
    x = _as_float_images(x)
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    out = [model.predict(x[i:i + batch_size].to(device), **kw)[:, 0].float().cpu()
           for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0,) + tuple(x.shape[-2:]), np.float32)


# --------------------------------------------------------------------------- training
@dataclass
class SegTrainResult:
    history: pd.DataFrame
    best_step: int
    val: dict
    test: dict
    test_probs: np.ndarray | None
    state_dict: dict
    wall_s: float
    n_pool: int
    extra: dict = field(default_factory=dict)


def _trainable_state(model: nn.Module) -> dict:
    sd = model.trainable_state_dict() if hasattr(model, "trainable_state_dict") else model.state_dict()
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


def train_segmenter(model: nn.Module, train: tuple, val: tuple, cfg: SegTrainConfig,
                    test_x=None, test_m=None, run_dir: str | Path | None = None,
                    progress: bool = True, desc: str = "segmenter") -> SegTrainResult:
    """Train ``model`` on the pool ``train = (images, masks)`` for ``cfg.steps`` steps,
    select on ``val = (images, masks)`` Dice, and predict ``test_x`` once (module
    docstring). Images: uint8 NHWC or float NCHW; masks: (N, H, W) or (N, 1, H, W) in {0, 1}.
    Returns the selected (trainable) weights and, when ``test_x`` is given, the test
    probabilities ``(N, H, W)`` and metrics against ``test_m``."""
    t0 = time.time()
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model = model.to(device)
    x_tr, m_tr = _as_float_images(train[0]), _as_float_masks(train[1])
    if len(x_tr) != len(m_tr) or len(x_tr) == 0:
        raise ValueError(f"training pool: {len(x_tr)} images and {len(m_tr)} masks")
    x_va, m_va = _as_float_images(val[0]), np.asarray(val[1]).reshape(len(val[1]), *x_tr.shape[-2:])
    aug = PairedAugment(**cfg.augment) if (cfg.augment is not None and model.pixel_input) else None
    pool = model.prepare(x_tr.to(device), m_tr.to(device)) if not model.pixel_input else \
        {"x": x_tr, "m": m_tr}
    pool = {k: v.cpu() for k, v in pool.items()}
    n = len(x_tr)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(cfg.steps, cfg.warmup_steps,
                                                                 cfg.min_lr_ratio))
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.empty(0, dtype=torch.long)
    step, history, best = 0, [], {"dice": -math.inf, "step": 0, "state": None}
    ckpt = StepCheckpoint(run_dir) if run_dir is not None else None
    if ckpt is not None and (got := ckpt.load()) is not None:
        step, modules, states, extra = got
        model.load_state_dict(modules["model"], strict=False)
        opt.load_state_dict(states["opt"])
        sched.load_state_dict(states["sched"])
        gen.set_state(states["gen"])
        order = states["order"]
        history = extra["history"]
        best = {"dice": extra["best_dice"], "step": extra["best_step"],
                "state": modules.get("best")}
    every_ckpt = cfg.checkpoint_every or cfg.eval_every
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not progress, leave=False)
    loss_sum, loss_n = 0.0, 0
    model.train()
    while step < cfg.steps:
        if len(order) < cfg.batch_size:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        idx, order = order[:cfg.batch_size], order[cfg.batch_size:]
        batch = {k: v[idx] for k, v in pool.items()}
        if aug is not None:
            batch["x"], batch["m"] = aug(batch["x"], batch["m"], gen)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        loss = model.training_loss(batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        loss_sum += float(loss.detach())
        loss_n += 1
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            p_va = predict_masks(model, x_va, cfg.eval_batch_size, device)
            dice = float(segm.per_image(p_va >= cfg.threshold, m_va)["dice"].mean())
            history.append({"step": step, "train_loss": loss_sum / max(1, loss_n),
                            "val_dice": dice, "lr": opt.param_groups[0]["lr"]})
            loss_sum, loss_n = 0.0, 0
            if dice > best["dice"]:
                best = {"dice": dice, "step": step, "state": _trainable_state(model)}
            bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", val_dice=f"{dice:.3f}",
                            best=f"{best['dice']:.3f}@{best['step']}")
            model.train()
        if ckpt is not None and (step % every_ckpt == 0) and step < cfg.steps:
            ckpt.save(step, {"model": _trainable_state(model), "best": best["state"]},
                      {"opt": opt.state_dict(), "sched": sched.state_dict(),
                       "gen": gen.get_state(), "order": order},
                      {"history": history, "best_dice": best["dice"], "best_step": best["step"]})
    bar.close()
    model.load_state_dict(best["state"], strict=False)
    model.eval()
    p_va = predict_masks(model, x_va, cfg.eval_batch_size, device)
    val_metrics = segm.summary(p_va >= cfg.threshold, m_va)
    test_metrics, p_te = {}, None
    if test_x is not None:   # the one and only look at the test split for this model
        p_te = predict_masks(model, test_x, cfg.eval_batch_size, device)
        if test_m is not None:
            test_metrics = segm.summary(p_te >= cfg.threshold, np.asarray(test_m).reshape(p_te.shape))
    if ckpt is not None:
        ckpt.clear()
    return SegTrainResult(pd.DataFrame(history), best["step"], val_metrics, test_metrics, p_te,
                          best["state"], time.time() - t0, n)
