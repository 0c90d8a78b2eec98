"""The two training stages of DiffMIC-v2, in the project's habits
(:mod:`mdlib.train.classification`): seeded (:func:`~mdlib.train.classification.seed_everything`),
a budget in optimizer steps (``epochs * ceil(n_train / batch_size)``), the model selected
on the **validation** split (``select_metric``, ties: the earlier epoch; a copy of the best
weights is kept), the test split evaluated **once**, with the selected weights.

* :func:`train_dcg`: the DCG model pre-trained with cross-entropy on both heads (global
  and local prior) on the training split (Sec. IV-B), selected on the validation metric
  of its fused prior; returns its priors on every split (the diffusion stage reads them:
  the DCG is frozen there) and its own test result ("DCG alone" of Table II).
* :func:`train_diffmic`: the image feature prior and the denoiser trained together with
  the noise-prediction loss, the DCG frozen (``dcg_mode="frozen"``, the paper) or trained
  on alongside with its cross-entropy (``"joint"``, as DiffMIC v1 did); validation by DDIM
  sampling from noise drawn once per split with a fixed seed, so the selection is
  deterministic; on the test split the reverse trajectory is kept (Fig. 5).

Nothing here reads the test split before the selected weights are fixed: swapping it
changes neither the selected model nor its priors (``tests/test_diffmic.py``).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...data import to_tensor
from ...metrics import classification_metrics
from ...train import TrainResult, resolve_device, seed_everything
from .model import DCG, DiffMICConfig, DiffMICv2, crop_rois, to_probs

SELECT_METRICS = ("auc", "acc", "f1")
DCG_MODES = ("frozen", "joint")
#: offsets of the seeds of the validation / test starting noise (fixed per run seed)
VAL_NOISE, TEST_NOISE = 100_003, 200_003


@dataclass
class StageConfig:
    """One training stage's recipe (DCG pre-training or diffusion training)."""
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    lr_min: float = 1e-5
    weight_decay: float = 0.0
    eval_every: int = 1
    select_metric: str = "auc"
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        for k in ("epochs", "batch_size", "eval_every", "eval_batch_size"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k}={getattr(self, k)}: must be >= 1")
        if not self.lr > 0 or self.lr_min < 0:
            raise ValueError(f"lr={self.lr}, lr_min={self.lr_min}: need lr > 0, lr_min >= 0")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"select_metric={self.select_metric!r}: expected one of {SELECT_METRICS}")

    def to_dict(self) -> dict:
        return asdict(self)

    def steps(self, n_train: int) -> int:
        return self.epochs * math.ceil(n_train / self.batch_size)


@dataclass
class StageResult(TrainResult):
    """:class:`mdlib.train.classification.TrainResult` plus the stage's ``extras``."""
    extras: dict = field(default_factory=dict)


def _optimizer(params, tr: StageConfig, total: int):
    opt = torch.optim.Adam(params, lr=tr.lr, weight_decay=tr.weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=tr.lr_min)


def _step(opt, sched, loss: torch.Tensor) -> None:
    """One optimiser and scheduler step on ``loss``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()


def _batches(n: int, batch_size: int, steps: int, gen: torch.Generator):
    """``steps`` batches of indices, reshuffling the training split when it runs out (as
    :func:`mdlib.train.classification.train_classifier`)."""
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        idx, order = order[:batch_size], order[batch_size:]
        yield idx


def _state(*models) -> dict:
    out = {}
    for prefix, m in models:
        out.update({f"{prefix}{k}": v.detach().cpu().clone() for k, v in m.state_dict().items()})
    return out


def _split_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _better(value: float, best: float) -> bool:
    return bool(np.isfinite(value) and value > best)


# --------------------------------------------------------------------------- DCG
@torch.no_grad()
def dcg_priors(dcg: DCG, x: torch.Tensor, batch_size: int = 256) -> dict:
    """The DCG's outputs on images ``x`` (eval mode, batched): ``p_g``, ``p_l``,
    ``p_fused`` (N, C), ``upper_left`` (N, K, 2) ROI pixels, ``attn`` (N, K)."""
    was = dcg.training
    dcg.eval()
    dev = next(dcg.parameters()).device
    parts = []
    for i in range(0, len(x), batch_size):
        o = dcg(x[i:i + batch_size].to(dev))
        parts.append({"p_g": o.p_g.cpu(), "p_l": o.p_l.cpu(), "p_fused": o.p_fused.cpu(),
                      "upper_left": o.upper_left.cpu(), "attn": o.attn.cpu()})
    dcg.train(was)
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def train_dcg(data, cfg: DiffMICConfig, tr: StageConfig, progress: bool = True,
              evaluate_test: bool = True) -> StageResult:
    """Pre-train the DCG on ``data``'s training split (cross-entropy on the global and the
    local prior), select on the validation metric of its fused prior, then (once) its test
    result. ``extras["priors"]``: its outputs on every split, with the selected weights."""
    t0 = time.time()
    seed_everything(tr.seed)
    dev = resolve_device(tr.device)
    gen = torch.Generator().manual_seed(tr.seed)
    x_tr, y_tr = to_tensor(data.x("train")), torch.from_numpy(data.y("train")).long()
    x_va, y_va = to_tensor(data.x("val")), data.y("val")
    dcg = DCG(cfg).to(dev)
    per_epoch = math.ceil(len(x_tr) / tr.batch_size)
    opt, sched = _optimizer(dcg.parameters(), tr, tr.epochs * per_epoch)
    history, best, best_epoch, best_state = [], -math.inf, -1, None
    bar = tqdm(range(tr.epochs), desc=f"{data.name}/DCG/s{tr.seed}", disable=not progress, leave=False)
    batches = _batches(len(x_tr), tr.batch_size, tr.epochs * per_epoch, gen)
    for epoch in bar:
        dcg.train()
        loss_sum = 0.0
        for _ in range(per_epoch):
            idx = next(batches)
            xb, yb = x_tr[idx].to(dev), y_tr[idx].to(dev)
            o = dcg(xb)
            loss = F.cross_entropy(o.logit_g, yb) + F.cross_entropy(o.logit_l, yb)
            _step(opt, sched, loss)
            loss_sum += float(loss.detach())
        if (epoch + 1) % tr.eval_every and epoch + 1 != tr.epochs:
            continue
        pv = dcg_priors(dcg, x_va, tr.eval_batch_size)
        m = classification_metrics(y_va, pv["p_fused"].double().numpy())
        mg = classification_metrics(y_va, pv["p_g"].double().numpy())
        ml = classification_metrics(y_va, pv["p_l"].double().numpy())
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / per_epoch,
                        **{f"val_{k}": v for k, v in m.items() if k != "n"},
                        "val_auc_global": mg["auc"], "val_auc_local": ml["auc"],
                        "lr": opt.param_groups[0]["lr"]})
        if _better(m[tr.select_metric], best) or best_state is None:
            best, best_epoch, best_state = m[tr.select_metric], epoch + 1, _state(("", dcg))
        bar.set_postfix(loss=f"{loss_sum / per_epoch:.3f}", val=f"{m[tr.select_metric]:.3f}",
                        best=f"{best:.3f}@{best_epoch}")
    bar.close()
    dcg.load_state_dict(best_state)
    dcg.eval()
    priors = {"train": dcg_priors(dcg, x_tr, tr.eval_batch_size),
              "val": dcg_priors(dcg, x_va, tr.eval_batch_size)}
    val = classification_metrics(y_va, priors["val"]["p_fused"].double().numpy())
    test, p_te, y_te = {}, np.empty((0, data.n_classes)), np.empty(0, dtype=np.int64)
    if evaluate_test:  # the one look at the test split for this model
        priors["test"] = dcg_priors(dcg, to_tensor(data.x("test")), tr.eval_batch_size)
        y_te = data.y("test")
        p_te = priors["test"]["p_fused"].double().numpy()
        test = classification_metrics(y_te, p_te)
    return StageResult(pd.DataFrame(history), best_epoch, val, test, p_te, y_te, best_state,
                       time.time() - t0, dcg, {"priors": priors})


# --------------------------------------------------------------------------- diffusion
@torch.no_grad()
def predict(model: DiffMICv2, x: torch.Tensor, upper_left: torch.Tensor, p_g: torch.Tensor,
            p_l: torch.Tensor, noise: dict, batch_size: int = 256, steps: int | None = None,
            trajectory: bool = False):
    """Class probabilities ``(N, C)`` of DDIM sampling on images ``x`` with their DCG
    priors, batched (eval mode); with ``trajectory`` also the maps along the reverse
    steps ``(steps + 1, N, C, Np, Np)`` as float16."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    size = model.cfg.roi_size
    scores, traj = [], []
    for i in range(0, len(x), batch_size):
        sl = slice(i, i + batch_size)
        xb = x[sl].to(dev)
        rois = crop_rois(xb, upper_left[sl].to(dev), size)
        out = model.sample(xb, rois, p_g[sl].to(dev), p_l[sl].to(dev),
                           {k: v[sl] for k, v in noise.items()}, steps, trajectory)
        if trajectory:
            scores.append(out[0].cpu())
            traj.append(out[1].cpu().half())
        else:
            scores.append(out.cpu())
    model.train(was)
    s = torch.cat(scores)
    probs = to_probs(s).double().numpy()
    return (probs, torch.cat(traj, 1).numpy()) if trajectory else probs


def _noise(model: DiffMICv2, n: int, seed: int) -> dict:
    return model.draw_noise(n, torch.Generator().manual_seed(seed))


def train_diffmic(data, cfg: DiffMICConfig, tr: StageConfig, dcg: DCG | None = None,
                  priors: dict | None = None, dcg_mode: str = "frozen",
                  dcg_lr: float = 2e-4, progress: bool = True, evaluate_test: bool = True,
                  trajectory: bool = True) -> StageResult:
    """Train the diffusion stage on ``data``'s training split with the DCG's ``priors``
    (``dcg_mode="frozen"``: the dict of :func:`dcg_priors` per split, from the selected
    DCG) or with ``dcg`` trained on alongside (``"joint"``: its cross-entropy added, at
    ``dcg_lr``; the denoiser sees its priors detached). Selected on validation, tested
    once; ``extras["trajectory"]``: the test split's reverse trajectory."""
    if dcg_mode not in DCG_MODES:
        raise ValueError(f"dcg_mode={dcg_mode!r}: expected one of {DCG_MODES}")
    if dcg_mode == "frozen" and priors is None:
        raise ValueError("dcg_mode='frozen' needs the DCG's priors of the train and val splits")
    if dcg_mode == "joint" and dcg is None:
        raise ValueError("dcg_mode='joint' needs the pre-trained DCG model")
    t0 = time.time()
    seed_everything(tr.seed)
    dev = resolve_device(tr.device)
    gen = torch.Generator().manual_seed(tr.seed)
    noise_gen = torch.Generator().manual_seed(tr.seed + 1)
    x_tr, y_tr = to_tensor(data.x("train")), torch.from_numpy(data.y("train")).long()
    x_va, y_va = to_tensor(data.x("val")), data.y("val")
    model = DiffMICv2(cfg).to(dev)
    per_epoch = math.ceil(len(x_tr) / tr.batch_size)
    total = tr.epochs * per_epoch
    params = [{"params": list(model.parameters()), "lr": tr.lr}]
    if dcg_mode == "joint":
        dcg = copy.deepcopy(dcg).to(dev)
        params.append({"params": list(dcg.parameters()), "lr": dcg_lr})
    opt = torch.optim.Adam(params, weight_decay=tr.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=tr.lr_min)
    val_noise = _noise(model, len(x_va), tr.seed + VAL_NOISE)
    size = cfg.roi_size

    def split_priors(x, name):
        if dcg_mode == "frozen":
            return priors[name]
        return dcg_priors(dcg, x, tr.eval_batch_size)

    history, best, best_epoch, best_state = [], -math.inf, -1, None
    bar = tqdm(range(tr.epochs), desc=f"{data.name}/DiffMIC/s{tr.seed}", disable=not progress,
               leave=False)
    batches = _batches(len(x_tr), tr.batch_size, total, gen)
    for epoch in bar:
        model.train()
        loss_sum = 0.0
        for _ in range(per_epoch):
            idx = next(batches)
            xb, yb = x_tr[idx].to(dev), y_tr[idx].to(dev)
            if dcg_mode == "frozen":
                p = priors["train"]
                p_g, p_l = p["p_g"][idx].to(dev), p["p_l"][idx].to(dev)
                rois = crop_rois(xb, p["upper_left"][idx].to(dev), size)
                loss = model.loss(xb, rois, yb, p_g, p_l, noise_gen)
            else:
                dcg.train()
                o = dcg(xb)
                ce = F.cross_entropy(o.logit_g, yb) + F.cross_entropy(o.logit_l, yb)
                loss = model.loss(xb, o.rois.detach(), yb, o.p_g.detach(), o.p_l.detach(),
                                  noise_gen) + ce
            _step(opt, sched, loss)
            loss_sum += float(loss.detach())
        if (epoch + 1) % tr.eval_every and epoch + 1 != tr.epochs:
            continue
        pv = split_priors(x_va, "val")
        probs = predict(model, x_va, pv["upper_left"], pv["p_g"], pv["p_l"], val_noise,
                        tr.eval_batch_size)
        m = classification_metrics(y_va, probs)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / per_epoch,
                        **{f"val_{k}": v for k, v in m.items() if k != "n"},
                        "lr": opt.param_groups[0]["lr"]})
        if _better(m[tr.select_metric], best) or best_state is None:
            best, best_epoch = m[tr.select_metric], epoch + 1
            best_state = _state(("model.", model), *((("dcg.", dcg),) if dcg_mode == "joint" else ()))
        bar.set_postfix(loss=f"{loss_sum / per_epoch:.3f}", val=f"{m[tr.select_metric]:.3f}",
                        best=f"{best:.3f}@{best_epoch}")
    bar.close()
    model.load_state_dict(_split_state(best_state, "model."))
    if dcg_mode == "joint":
        dcg.load_state_dict(_split_state(best_state, "dcg."))
    model.eval()
    pv = split_priors(x_va, "val")
    val = classification_metrics(y_va, predict(model, x_va, pv["upper_left"], pv["p_g"],
                                               pv["p_l"], val_noise, tr.eval_batch_size))
    test, p_te, y_te, extras = {}, np.empty((0, data.n_classes)), np.empty(0, dtype=np.int64), {}
    if evaluate_test:  # the one look at the test split for this model
        x_te, y_te = to_tensor(data.x("test")), data.y("test")
        pt = split_priors(x_te, "test")
        noise = _noise(model, len(x_te), tr.seed + TEST_NOISE)
        out = predict(model, x_te, pt["upper_left"], pt["p_g"], pt["p_l"], noise,
                      tr.eval_batch_size, trajectory=trajectory)
        p_te, traj = out if trajectory else (out, None)
        test = classification_metrics(y_te, p_te)
        if traj is not None:
            extras["trajectory"] = traj
    return StageResult(pd.DataFrame(history), best_epoch, val, test, p_te, y_te, best_state,
                       time.time() - t0, model, extras)
