"""The seven augmentation methods of the study, behind the interface the trainer uses.

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
the study's default, see ``mdlib.study.method_params``).

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

from .runs import atomic_path, write_csv, write_json

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
                 vflip: bool = False, p: float = 1.0):
        if degrees < 0 or not (0 < scale[0] <= scale[1] <= 1.0) or brightness < 0 or contrast < 0:
            raise ValueError(f"standard_aug: invalid parameters degrees={degrees}, "
                             f"scale={scale}, brightness={brightness}, contrast={contrast}")
        params = dict(degrees=degrees, scale=list(scale), brightness=brightness,
                      contrast=contrast, hflip=hflip, vflip=vflip)
        if p != 1.0:
            params["p"] = _check_p(self.name, p)
        super().__init__(**params)

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
    mixed with a random permutation of the batch: ``lam * x + (1 - lam) * x[perm]``."""
    name = "mixup"

    def __init__(self, alpha: float = 0.2, p: float = 1.0):
        _check(_num(alpha) and alpha > 0, self.name, f"alpha={alpha!r} must be > 0")
        params = dict(alpha=float(alpha))
        if p != 1.0:
            params["p"] = _check_p(self.name, p)
        super().__init__(**params)

    def mix_batch(self, x, y, generator):
        lam = float(sample_beta(self.params["alpha"], 1, generator)[0])
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


# --------------------------------------------------------------------------- SaliencyMix
def opencv_saliency(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's static fine-grained saliency (``cv2.saliency``, opencv-contrib), the
    detector of the official SaliencyMix code, for every image of ``x`` (B,C,H,W) in
    [0, 1] (RGB is converted to grey first). Returns float32 (B, H, W) in [0, 1].
    OpenCV has no batched form of this detector; it is one C++ call per image (~20 us at
    28 px), far below the cost of a training step."""
    import cv2
    det = cv2.saliency.StaticSaliencyFineGrained_create()
    xs = x.detach().float().cpu()
    if xs.shape[1] == 3:
        xs = (0.299 * xs[:, 0] + 0.587 * xs[:, 1] + 0.114 * xs[:, 2])[:, None]
    imgs = (xs[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    out = np.empty(imgs.shape, np.float32)
    for i, im in enumerate(imgs):
        ok, m = det.computeSaliency(im)
        out[i] = m if ok else 0.0
    mx = out.reshape(len(out), -1).max(1)
    out /= np.where(mx > 0, mx, 1.0)[:, None, None]
    return torch.from_numpy(out)


def saliency_boxes(sal: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """One box per image, centred on that image's saliency peak: ``sal`` (B, H, W),
    ``lam`` (B,) in [0, 1]. Box side ``int(W * sqrt(1 - lam))`` by ``int(H * sqrt(1 -
    lam))`` (non-square images keep their aspect), clipped at the border as in the
    official code. Returns int64 (B, 4) = (y0, y1, x0, x1), rows then columns (the
    official code swaps the axes; here the peak's row is a row)."""
    b, h, w = sal.shape
    flat = sal.reshape(b, -1).argmax(1)
    cy, cx = flat // w, flat % w
    r = torch.sqrt(1.0 - lam.clamp(0, 1)).cpu()
    ch, cw = (h * r).long(), (w * r).long()
    y0, y1 = (cy - ch // 2).clamp(0, h), (cy + ch // 2).clamp(0, h)
    x0, x1 = (cx - cw // 2).clamp(0, w), (cx + cw // 2).clamp(0, w)
    return torch.stack([y0, y1, x0, x1], 1)


def box_masks(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Boolean (B, H, W) masks of boxes (y0, y1, x0, x1), vectorised."""
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    y0, y1, x0, x1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    return (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)


@register
class SaliencyMix(Augmentation):
    """SaliencyMix (Uddin et al. 2020): for each image of the batch (the target) a
    source image (a random permutation of the batch) and ``lam ~ Beta(beta, beta)`` per
    batch as in the official code; a patch of side ``sqrt(1 - lam) * W`` centred on the
    peak of the **source's own** OpenCV fine-grained saliency map (computed per image,
    not from one source for the whole batch as the official code does, and with rows
    and columns not swapped) is pasted into the target at the same place. Labels are
    mixed by the true (clipped) patch area of each image."""
    name = "saliencymix"

    def __init__(self, beta: float = 1.0, p: float = 1.0):
        _check(_num(beta) and beta > 0, self.name, f"beta={beta!r} must be > 0")
        params = dict(beta=float(beta))
        if p != 1.0:
            params["p"] = _check_p(self.name, p)
        super().__init__(**params)

    def mix_batch(self, x, y, generator):
        b, _, h, w = x.shape
        lam = sample_beta(self.params["beta"], 1, generator).expand(b)
        perm = torch.randperm(b, generator=generator)
        src = x[perm.to(x.device)]
        boxes = saliency_boxes(opencv_saliency(src), lam)
        m = box_masks(boxes, h, w).to(x.device)
        area = m.flatten(1).float().mean(1).to(y)  # the pasted share of each image
        out = torch.where(m[:, None], src, x)
        ymix = (1 - area)[:, None] * y + area[:, None] * y[perm.to(y.device)]
        return out, ymix


# --------------------------------------------------------------------------- offline banks
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
                             "(mdlib.study.bank_extras builds them)")
        if len(ctx.y_train) < 2:
            raise ValueError(f"{self.name}: needs at least 2 training images")

    def build_bank(self, ctx: BankContext) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_context(ctx)
        bank_dir = ctx.extras.get("bank_dir")
        if bank_dir is None and ctx.run_dir is not None:
            bank_dir = Path(ctx.run_dir) / "bank"
        bank_dir = Path(bank_dir) if bank_dir is not None else None
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


# --------------------------------------------------------------------------- DBA / DiffuseMix
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


# --------------------------------------------------------------------------- MedDiffuseMix
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
        from .saliency import gradcam
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
