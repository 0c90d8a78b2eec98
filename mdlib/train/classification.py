"""Train / validate / test.

* The training budget is a number of optimisation **steps**
  (``epochs * ceil(n_train_real / batch_size)``), identical for every augmentation
  method, whether or not it adds an offline bank of images.
* The model is selected on validation AUC (ties: the earlier epoch); a copy of the best
  weights is kept (not a reference to the live model).
* The test split is evaluated exactly once, with the selected weights.
* Seeded and deterministic on CPU: the same configuration and seed give the same numbers
  bit for bit (same machine, same thread count).
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import augment as aug_mod
from ..data import ImageDataset, to_tensor
from ..metrics import auc, classification_metrics
from ..models import build_model

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "multistep", "none")


@dataclass
class TrainConfig:
    model: str = "small_cnn"
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)  # multistep: fractions of the budget
    pretrained: bool = False
    eval_batch_size: int = 512
    seed: int = 0
    device: str = "auto"
    model_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer='{self.optimizer}': expected one of {OPTIMIZERS}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler='{self.scheduler}': expected one of {SCHEDULERS}")
        for k in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k}={getattr(self, k)}: must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr}: must be > 0")
        self.milestones = tuple(self.milestones)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


@dataclass
class TrainResult:
    history: pd.DataFrame
    best_epoch: int
    val: dict
    test: dict
    test_probs: np.ndarray
    test_labels: np.ndarray
    state_dict: dict
    wall_s: float
    model: nn.Module | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def soft_cross_entropy(logits: torch.Tensor, y_soft: torch.Tensor) -> torch.Tensor:
    return -(y_soft * F.log_softmax(logits, dim=1)).sum(1).mean()


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 512,
                  device: torch.device | None = None) -> np.ndarray:
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    out = [F.softmax(model(x[i:i + batch_size].to(device)), 1).cpu()
           for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(out).double().numpy()


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def _scheduler(cfg: TrainConfig, opt, total_steps: int):
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    if cfg.scheduler == "multistep":
        ms = [int(f * total_steps) for f in cfg.milestones]
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=ms, gamma=0.1)
    return None


def train_classifier(data: ImageDataset, cfg: TrainConfig,
                     augmentation: aug_mod.Augmentation | None = None,
                     bank_extras: dict | None = None, run_dir: str | Path | None = None,
                     progress: bool = True, keep_model: bool = False,
                     evaluate_test: bool = True) -> TrainResult:
    """Train ``cfg.model`` on ``data``'s train split, select on val AUC, test once."""
    t0 = time.time()
    augmentation = augmentation or aug_mod.NoAug()
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)

    x_tr, y_tr = to_tensor(data.x("train")), torch.from_numpy(data.y("train"))
    x_va, y_va = to_tensor(data.x("val")), data.y("val")
    k = data.n_classes
    y_tr_soft = F.one_hot(y_tr, k).float()

    bank = augmentation.build_bank(aug_mod.BankContext(
        x_tr, y_tr, k, cfg.seed, run_dir, bank_extras or {}))
    if bank is not None:
        xb, yb = bank
        if xb.shape[1:] != x_tr.shape[1:] or yb.shape[1] != k or len(xb) != len(yb):
            raise ValueError(f"{augmentation.name}: bank shapes {tuple(xb.shape)}, "
                             f"{tuple(yb.shape)} do not fit the data {tuple(x_tr.shape)}, K={k}")
        pool_x, pool_y = torch.cat([x_tr, xb.float()]), torch.cat([y_tr_soft, yb.float()])
    else:
        pool_x, pool_y = x_tr, y_tr_soft

    model = build_model(cfg.model, data.channels, k, data.size, cfg.pretrained,
                        **cfg.model_kwargs).to(device)
    opt = _optimizer(cfg, model)
    steps_per_epoch = math.ceil(len(x_tr) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = _scheduler(cfg, opt, total)

    history, best_auc, best_epoch, best_state = [], -math.inf, -1, None
    order = torch.empty(0, dtype=torch.long)
    bar = tqdm(range(cfg.epochs), desc=f"{data.name}/{cfg.model}/{augmentation.name}/s{cfg.seed}",
               disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        loss_sum, seen = 0.0, 0
        for _ in range(steps_per_epoch):
            if len(order) < cfg.batch_size:  # reshuffle the pool when it runs out
                order = torch.cat([order, torch.randperm(len(pool_x), generator=gen)])
            idx, order = order[:cfg.batch_size], order[cfg.batch_size:]
            xb, yb = pool_x[idx], pool_y[idx]
            xb, yb = augmentation.apply(xb, yb, gen)
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = soft_cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
        p_va = predict_proba(model, x_va, cfg.eval_batch_size, device)
        va_auc = auc(y_va, p_va)
        va_acc = float((p_va.argmax(1) == y_va).mean())
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "val_auc": va_auc,
                        "val_acc": va_acc, "lr": opt.param_groups[0]["lr"]})
        if va_auc > best_auc:
            best_auc, best_epoch = va_auc, epoch + 1
            best_state = {n: t.detach().cpu().clone() for n, t in model.state_dict().items()}
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", val_auc=f"{va_auc:.3f}",
                        best=f"{best_auc:.3f}@{best_epoch}")
    bar.close()

    model.load_state_dict(best_state)
    val = classification_metrics(y_va, predict_proba(model, x_va, cfg.eval_batch_size, device),
                                 data.positive())
    test, p_te, y_te = {}, np.empty((0, k)), np.empty(0, dtype=np.int64)
    if evaluate_test:  # the one and only look at the test split for this model
        y_te = data.y("test")
        p_te = predict_proba(model, to_tensor(data.x("test")), cfg.eval_batch_size, device)
        test = classification_metrics(y_te, p_te, data.positive())
    return TrainResult(pd.DataFrame(history), best_epoch, val, test, p_te, y_te, best_state,
                       time.time() - t0, model if keep_model else None)


def train_guidance_classifier(data, cfg, progress: bool = False, return_result: bool = False,
                              **kwargs: Any):
    """Train the guidance classifier ``g`` on ``data``'s training split, selected on
    validation AUC; the test split is removed first and ``evaluate_test=False``, so ``g``
    never sees it. ``cfg``: a :class:`TrainConfig` or a dict of its fields.
    Returns the model in eval mode (and the ``TrainResult`` if ``return_result``)."""
    for k in ("evaluate_test", "keep_model"):
        if k in kwargs:
            raise ValueError(f"{k} is fixed by train_guidance_classifier")
    if isinstance(cfg, dict):
        cfg = TrainConfig(**cfg)
    for s in ("train", "val"):
        if s not in data.splits:
            raise ValueError(f"dataset '{data.name}' has no '{s}' split")
    no_test = dataclasses.replace(data, splits={s: v for s, v in data.splits.items()
                                                if s != "test"})
    res = train_classifier(no_test, cfg, progress=progress, keep_model=True,
                           evaluate_test=False, **kwargs)
    model = res.model.eval()
    return (model, res) if return_result else model
