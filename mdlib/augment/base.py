"""The augmentation interface the trainer uses, the registry, the equal-budget rule and
the offline-bank machinery (one file per method beside this one).

An augmentation method plugs into training at up to three points, in this order:

1. ``build_bank(ctx)`` (offline, once before training): returns extra training samples
   ``(x_bank float32 (M,C,H,W) in [0,1], y_bank soft labels (M,K))`` generated from the
   training split, or ``None``. Diffusion-based methods (GenMix, DBA, MedDiffuseMix)
   build their banks here, batch by batch, each batch saved atomically so that a killed
   run resumes with the batches still missing (:class:`OfflineAugmentation`).
2. ``per_sample(x, generator)`` (online): label-preserving transforms applied to each
   image of a batch independently (Standard Aug).
3. ``mix_batch(x, y_soft, generator)`` (online): batch-level mixing that returns new
   images and mixed soft labels (Mixup, SaliencyMix).

The trainer calls :meth:`Augmentation.apply` (steps 2 and 3) on every batch.

Equal budgets
-------------
Every method trains for the same number of optimisation steps (set by the trainer) and
sees the same expected share of augmented images in a batch: an online method augments
each image of a batch with probability ``p``; an offline method adds
``n_per_image * N`` images to the ``N`` real ones, and batches are drawn uniformly from
the pool, so ``p = n_per_image / (1 + n_per_image)`` (``p = 0.5`` <-> ``n_per_image = 1``,
the study's default, see ``mdlib.studies.meddiffusemix.study.method_params``).

Subclass :class:`Augmentation` (or :class:`OfflineAugmentation`), override what you need,
and register it with :func:`register`. Every random choice uses a ``torch.Generator``
(online: the trainer's; offline: one per bank batch, seeded from the run's seed and the
batch index), so runs are reproducible and a resumed bank equals an uninterrupted one.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import locks
from ..io import atomic_path, write_csv, write_json

log = logging.getLogger(__name__)


@dataclass
class BankContext:
    """What an offline method may use: the training split only (never val / test).

    ``extras``: ``"guidance"`` (the guidance classifier ``g``), ``"saliency"`` (its
    Grad-CAM maps of the training split, ``(N, H, W)`` in [0, 1], each for its own label),
    ``"diffusion"`` (a :class:`mdlib.diffusion.DiffusionModel`), ``"bank_dir"`` (where
    the bank's batches and records go; default ``run_dir / "bank"``), ``"progress"``.
    """
    x_train: torch.Tensor  # float32 (N, C, H, W) in [0, 1]
    y_train: torch.Tensor  # int64 (N,)
    n_classes: int
    seed: int
    run_dir: Any = None
    extras: dict = field(default_factory=dict)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and math.isfinite(float(v))


def _check(cond: bool, method: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{method}: {msg}")


class Augmentation:
    name = "base"
    offline = False

    def __init__(self, **params: Any):
        self.params = params

    def build_bank(self, ctx: BankContext) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None

    def per_sample(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x

    def mix_batch(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def apply(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Online augmentation of one training batch: ``per_sample`` then ``mix_batch``;
        with parameter ``p < 1`` each image keeps its original (and label) with
        probability ``1 - p``."""
        p = float(self.params.get("p", 1.0))
        if p <= 0:
            return x, y
        xa = self.per_sample(x, generator)
        xa, ya = self.mix_batch(xa, y, generator)
        if p >= 1:
            return xa, ya
        keep = (torch.rand(len(x), generator=generator) < p).to(x.device)
        return (torch.where(keep.view(-1, 1, 1, 1), xa, x),
                torch.where(keep.view(-1, 1), ya, y))

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


def _check_p(method: str, p: Any) -> float:
    _check(_num(p) and 0.0 <= float(p) <= 1.0, method, f"p={p!r} must be in [0, 1]")
    return float(p)


def sample_beta(a: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws of Beta(a, a) from a seeded torch generator (via a numpy generator
    seeded from it, since ``torch.distributions`` takes no generator)."""
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    return torch.from_numpy(rng.beta(a, a, size=n).astype(np.float32))


class OfflineAugmentation(Augmentation):
    """An offline method: ``n_per_image * N`` augmented images made before training.

    The bank is planned as ``ceil(n_per_image)`` seeded permutations of the training
    indices (each real image is ``x1`` once per round), cut to ``round(n_per_image * N)``
    and generated in batches of ``batch_size`` by :meth:`generate`. Each finished batch is
    written atomically to ``bank_dir/part_#####.npz`` with its records; a rerun loads the
    finished batches and generates only the missing ones, with the same per-batch seeds,
    so the result equals an uninterrupted run. The per-image records of all batches are
    written to ``bank_dir/records.csv`` (and ``run_dir/bank_records.csv``).
    """
    offline = True

    def __init__(self, n_per_image: float = 1.0, batch_size: int = 256, **params: Any):
        _check(_num(n_per_image) and float(n_per_image) > 0, self.name,
               f"n_per_image={n_per_image!r} must be > 0")
        _check(isinstance(batch_size, (int, np.integer)) and batch_size >= 1, self.name,
               f"batch_size={batch_size!r} must be an integer >= 1")
        super().__init__(n_per_image=float(n_per_image), **params)
        self.batch_size = int(batch_size)  # runtime only: not part of the config
        self.records: pd.DataFrame | None = None

    # subclasses -----------------------------------------------------------------------
    def requires(self) -> tuple[str, ...]:
        return ()

    def generate(self, ctx: BankContext, idx: torch.Tensor, gen: torch.Generator, part: int
                 ) -> tuple[torch.Tensor, torch.Tensor, pd.DataFrame]:
        """Augmented images (B,C,H,W), soft labels (B,K) and a per-image record table for
        the training images ``idx`` (the ``x1`` of each augmented image)."""
        raise NotImplementedError

    # machinery ------------------------------------------------------------------------
    def plan(self, n: int, seed: int) -> torch.Tensor:
        m = max(1, int(round(self.params["n_per_image"] * n)))
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + 17)
        rounds = [torch.randperm(n, generator=g) for _ in range(math.ceil(m / n))]
        return torch.cat(rounds)[:m]

    def check_context(self, ctx: BankContext) -> None:
        missing = [k for k in self.requires() if ctx.extras.get(k) is None]
        if missing:
            raise ValueError(f"{self.name}: needs {missing} in the bank context extras "
                             "(mdlib.runs.tasks.bank_resources builds them)")
        if len(ctx.y_train) < 2:
            raise ValueError(f"{self.name}: needs at least 2 training images")

    def build_bank(self, ctx: BankContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The bank (see the class docstring), built under the bank directory's lock
        (``bank_dir/.lock``, :mod:`mdlib.locks`): processes sharing a bank generate each
        batch once; a process that waited loads the finished batches."""
        self.check_context(ctx)
        bank_dir = ctx.extras.get("bank_dir")
        if bank_dir is None and ctx.run_dir is not None:
            bank_dir = Path(ctx.run_dir) / "bank"
        if bank_dir is None:
            return self._build_bank(ctx, None)
        with locks.lock(Path(bank_dir) / ".lock", what=f"{self.name} bank {bank_dir}"):
            return self._build_bank(ctx, Path(bank_dir))

    def _build_bank(self, ctx: BankContext, bank_dir: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
        if bank_dir is not None:
            bank_dir.mkdir(parents=True, exist_ok=True)
            write_json(bank_dir / "bank_config.json",
                       {"method": self.config(), "seed": ctx.seed, "n_train": len(ctx.y_train)})
        order = self.plan(len(ctx.y_train), ctx.seed)
        parts = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        xs, ys, recs = [], [], []
        bar = tqdm(total=len(order), desc=f"{self.name} bank", unit="img",
                   disable=not ctx.extras.get("progress", True), leave=False)
        try:
            for k, idx in enumerate(parts):
                f = bank_dir / f"part_{k:05d}.npz" if bank_dir is not None else None
                got = self._load_part(f, idx) if f is not None else None
                if got is None:
                    gen = torch.Generator().manual_seed(int(ctx.seed) * 1_000_003 + 7919 * (k + 1))
                    x, y, rec = self.generate(ctx, idx, gen, k)
                    locks.note("create", f"bank part {f if f is not None else k}")
                    rec = rec.copy()
                    rec.insert(0, "bank_index", np.arange(len(idx)) + k * self.batch_size)
                    if f is not None:
                        self._save_part(f, idx, x, y, rec)
                else:
                    x, y, rec = got
                xs.append(x.float().cpu())
                ys.append(y.float().cpu())
                recs.append(rec)
                bar.update(len(idx))
        finally:
            bar.close()
        self.records = pd.concat(recs, ignore_index=True)
        keep = torch.from_numpy(self.records["kept"].to_numpy(bool)) \
            if "kept" in self.records else torch.ones(len(order), dtype=torch.bool)
        if bank_dir is not None:
            write_csv(bank_dir / "records.csv", self.records)
        if ctx.run_dir is not None and Path(ctx.run_dir) != bank_dir:
            Path(ctx.run_dir).mkdir(parents=True, exist_ok=True)
            write_csv(Path(ctx.run_dir) / "bank_records.csv", self.records)
        x, y = torch.cat(xs), torch.cat(ys)
        return x[keep], y[keep]

    @staticmethod
    def _save_part(f: Path, idx, x, y, rec: pd.DataFrame) -> None:
        arrays = {"idx": idx.numpy(), "x": x.float().cpu().numpy(), "y": y.float().cpu().numpy()}
        for c in rec.columns:
            v = rec[c].to_numpy()
            arrays[f"rec__{c}"] = v.astype(str) if v.dtype == object else v
        with atomic_path(f) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    @staticmethod
    def _load_part(f: Path, idx: torch.Tensor):
        if not f.is_file():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                if not np.array_equal(z["idx"], idx.numpy()):
                    log.warning("%s: planned for other images; regenerating it", f)
                    return None
                rec = pd.DataFrame({k[5:]: z[k] for k in z.files if k.startswith("rec__")})
                return torch.from_numpy(z["x"]), torch.from_numpy(z["y"]), rec
        except (OSError, ValueError, KeyError) as e:  # a damaged part is regenerated
            log.warning("%s: unreadable (%s); regenerating it", f, e)
            return None


def _onehot(y: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(y.long(), k).float()

