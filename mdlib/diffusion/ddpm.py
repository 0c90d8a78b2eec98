"""Class-conditional DDPM (diffusers) for the study: training with resumable, atomic
checkpoints; seeded DDIM sampling; masked local refinement (MedDiffuseMix step 7) and
whole-image variation (the DBA / DiffuseMix baseline).

Model
-----
``UNet2DModel`` with one learned class embedding per class (``num_class_embeds``), added
to the timestep embedding; ``DownBlock2D`` / ``UpBlock2D`` only (and no attention in the
mid block) unless ``attention=True``, which puts attention in every block but the
first (highest resolution) one and in the mid block. It predicts the noise (epsilon).
Training uses ``DDPMScheduler(num_train_timesteps=T, beta_schedule="linear")`` (betas
1e-4 .. 0.02); sampling, refinement and variation use a ``DDIMScheduler`` built from the
same scheduler config (``timestep_spacing="trailing"``, eta = 0, x0-prediction clipped to
[-1, 1]). ``prediction_type="v_prediction"`` with ``zero_terminal_snr=True`` is the fix of
Lin et al. (2024, "Common diffusion noise schedules and sample steps are flawed"): the betas
rescaled so that the last timestep is pure noise, as sampling assumes, and the velocity
predicted instead of the noise (at high noise it asks for the image itself, so a global
property such as one stain colour per image is in the loss rather than a 1/(H W) share of it).

Intensities and padding
-----------------------
Images enter and leave as float ``(N, C, H, W)`` in [0, 1] (``mdlib.data.to_tensor``;
the training function also accepts the datasets' ``uint8 (N, H, W, C)`` arrays) and are
mapped to [-1, 1] for the network. With ``normalize="channel"`` the [-1, 1] images are then
standardised per channel with the training split's mean and standard deviation (stored in
the checkpoint's state), and the x0 estimate of every DDIM step is clipped to each channel's
image of [-1, 1] instead of to [-1, 1]. For data whose colours fill a narrow, off-centre part
of the range (H&E stain: per-channel std 0.16-0.32 in [-1, 1] units, means up to 0.58) this
raises the signal-to-noise ratio of colour at every timestep of the linear schedule
(scripts/diagnose_generator.py shows where a generator loses the image). The UNet halves the resolution ``len(blocks) - 1``
times, so the working size must be a multiple of ``m = 2 ** (len(blocks) - 1)`` (or of
``pad_multiple`` when that is set). Other sizes are **reflect-padded** symmetrically to
the next multiple (left/top gets ``floor(pad / 2)``, right/bottom the rest) before the
network and **cropped back** afterwards, so callers only ever see ``image_size``. Example:
28 px with ``pad_multiple=32`` (or with 4 blocks, m = 8) is worked at 32 px, 2 px of
reflection on each side; 28 px with the default 3 blocks (m = 4) needs no padding
(28 = 4 * 7), and 64 px never does. Masks are reflect-padded like the images. The padded
border is noised with its own i.i.d. noise, exactly as during training.

Checkpoint directory (``out_dir``), all in diffusers' own format where one exists::

    unet/                  UNet2DModel.save_pretrained (raw weights)
    unet_ema/              UNet2DModel.save_pretrained of the EMA weights (if ema)
    scheduler/             DDPMScheduler.save_pretrained (scheduler_config.json)
    optimizer.pt           {"optimizer": AdamW state, "rng": data/noise generator state},
                           torch.save; read back with torch.load(weights_only=True)
    loss.csv               step,loss (one row per optimisation step)
    diffusion_state.json   DiffusionConfig, step reached, target steps, early stop,
                           wall time, training-data fingerprint (written last)

A checkpoint is committed as a unit: everything is written into ``.ckpt-staging/``,
that folder is renamed to ``.ckpt-ready/`` (the commit point), then its items are moved
over the live ones (``diffusion_state.json`` last) and it is removed. A kill before the
rename leaves the previous checkpoint intact (the staging folder is discarded on the next
start); a kill after it is rolled forward on the next start; a reader that finds
``.ckpt-ready/`` reads its (newer, complete) items first. Do not train two processes into
the same ``out_dir`` at once.

Resuming restores weights, EMA weights, optimizer state, the loss curve and the state of
the generator that draws batches, timesteps and noise, so a run killed and resumed gives
the same weights as an uninterrupted one (same machine and thread count).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

LOSSES = ("l2", "huber")
#: "none": the network sees images in [-1, 1]; "channel": standardised per channel with the
#: training split's statistics (module docstring)
NORMALIZE = ("none", "channel")
#: what the UNet predicts: the noise (the default) or the velocity
#: v = sqrt(abar) * eps - sqrt(1 - abar) * x0 (Salimans & Ho 2022)
PREDICTIONS = ("epsilon", "v_prediction")
STATE_FILE = "diffusion_state.json"
LOSS_FILE = "loss.csv"
OPT_FILE = "optimizer.pt"
#: committed in this order; the state file (which says a checkpoint exists) comes last
CKPT_ITEMS = ("unet", "unet_ema", "scheduler", OPT_FILE, LOSS_FILE, STATE_FILE)
_STAGING = ".ckpt-staging"
_READY = ".ckpt-ready"
FORMAT = "mdlib.diffusion/1"
#: config fields that may differ between a checkpoint and the caller's config: they do
#: not change what is trained (train_steps may be raised to train further)
RUNTIME_FIELDS = ("train_steps", "checkpoint_every", "sample_steps", "device")
#: accepted slack on the [0, 1] range of images and masks (float round-off of a blend)
RANGE_TOL = 1e-4


class CheckpointError(ValueError):
    """A checkpoint directory does not match the configuration or data it is used with.
    The message names the directory and what differs."""


def _diffusers():
    # imported lazily: diffusers takes a second or two to import
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
    return UNet2DModel, DDPMScheduler, DDIMScheduler


# --------------------------------------------------------------------------- config
def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, (bool, np.bool_)) and math.isfinite(float(v)))


@dataclass
class DiffusionConfig:
    """Everything that defines a diffusion model and its training.

    ``norm_num_groups=None`` picks ``gcd(8, *block_out_channels)`` GroupNorm groups;
    ``pad_multiple=None`` pads only what the UNet needs (see the module docstring).
    ``ema_decay`` is the cap of diffusers' usual EMA warm-up,
    ``decay_k = min(ema_decay, (1 + k) / (10 + k))`` at step ``k``; 0.995 (a horizon of
    ~200 steps) suits the few-thousand-step CPU runs. ``grad_clip`` clips the global
    gradient norm (``None``: off). ``device``: "auto", "cpu", "cuda", "cuda:N" or "mps".
    """
    image_size: int
    channels: int
    n_classes: int
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    attention: bool = False
    num_train_timesteps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    batch_size: int = 32
    train_steps: int = 2000
    ema: bool = True
    ema_decay: float = 0.995
    loss: str = "l2"
    huber_delta: float = 1.0
    class_dropout: float = 0.0
    seed: int = 0
    checkpoint_every: int = 500
    sample_steps: int = 50
    norm_num_groups: int | None = None
    pad_multiple: int | None = None
    device: str = "auto"
    normalize: str = "none"
    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False

    def __post_init__(self):
        if isinstance(self.block_out_channels, (list, tuple)):
            self.block_out_channels = tuple(self.block_out_channels)
        for k in ("image_size", "channels", "n_classes", "layers_per_block", "batch_size",
                  "train_steps", "checkpoint_every", "sample_steps", "num_train_timesteps"):
            v = getattr(self, k)
            if not _is_int(v) or v < 1:
                raise ValueError(f"DiffusionConfig.{k}={v!r}: must be an integer >= 1")
            setattr(self, k, int(v))
        if self.image_size < 4:
            raise ValueError(f"DiffusionConfig.image_size={self.image_size}: must be >= 4")
        if self.num_train_timesteps < 2:
            raise ValueError(f"DiffusionConfig.num_train_timesteps={self.num_train_timesteps}: "
                             "must be >= 2")
        if self.sample_steps > self.num_train_timesteps:
            raise ValueError(f"DiffusionConfig.sample_steps={self.sample_steps}: must be <= "
                             f"num_train_timesteps={self.num_train_timesteps}")
        b = self.block_out_channels
        if (not isinstance(b, tuple) or len(b) < 1
                or not all(_is_int(c) and c >= 1 for c in b)):
            raise ValueError(f"DiffusionConfig.block_out_channels={b!r}: must be a non-empty "
                             "sequence of positive integers")
        self.block_out_channels = tuple(int(c) for c in b)
        for k in ("attention", "ema"):
            if not isinstance(getattr(self, k), (bool, np.bool_)):
                raise ValueError(f"DiffusionConfig.{k}={getattr(self, k)!r}: must be a bool")
            setattr(self, k, bool(getattr(self, k)))
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"DiffusionConfig.seed={self.seed!r}: must be an integer >= 0")
        self.seed = int(self.seed)
        if not _is_num(self.lr) or self.lr <= 0:
            raise ValueError(f"DiffusionConfig.lr={self.lr!r}: must be a finite number > 0")
        if not _is_num(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"DiffusionConfig.weight_decay={self.weight_decay!r}: must be a "
                             "finite number >= 0")
        if self.grad_clip is not None and (not _is_num(self.grad_clip) or self.grad_clip <= 0):
            raise ValueError(f"DiffusionConfig.grad_clip={self.grad_clip!r}: must be None or "
                             "a finite number > 0")
        if not _is_num(self.ema_decay) or not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"DiffusionConfig.ema_decay={self.ema_decay!r}: must be in [0, 1)")
        if self.prediction_type not in PREDICTIONS:
            raise ValueError(f"DiffusionConfig.prediction_type={self.prediction_type!r}: expected "
                             f"one of {PREDICTIONS}")
        if not isinstance(self.zero_terminal_snr, (bool, np.bool_)):
            raise ValueError(f"DiffusionConfig.zero_terminal_snr={self.zero_terminal_snr!r}: "
                             "must be a bool")
        self.zero_terminal_snr = bool(self.zero_terminal_snr)
        if self.zero_terminal_snr and self.prediction_type == "epsilon":
            raise ValueError("DiffusionConfig.zero_terminal_snr=True needs prediction_type="
                             "'v_prediction': at zero SNR the noise prediction says nothing "
                             "about the image")
        if self.normalize not in NORMALIZE:
            raise ValueError(f"DiffusionConfig.normalize={self.normalize!r}: expected one of "
                             f"{NORMALIZE}")
        if self.loss not in LOSSES:
            raise ValueError(f"DiffusionConfig.loss={self.loss!r}: expected one of {LOSSES}")
        if not _is_num(self.class_dropout) or not 0.0 <= self.class_dropout < 1.0:
            raise ValueError(f"DiffusionConfig.class_dropout={self.class_dropout!r}: must be "
                             "in [0, 1)")
        self.class_dropout = float(self.class_dropout)
        if not _is_num(self.huber_delta) or self.huber_delta <= 0:
            raise ValueError(f"DiffusionConfig.huber_delta={self.huber_delta!r}: must be a "
                             "finite number > 0")
        for k in ("lr", "weight_decay", "ema_decay", "huber_delta"):
            setattr(self, k, float(getattr(self, k)))
        if self.grad_clip is not None:
            self.grad_clip = float(self.grad_clip)
        g = self.norm_num_groups
        if g is None:
            g = math.gcd(8, *self.block_out_channels)
        elif not _is_int(g) or g < 1:
            raise ValueError(f"DiffusionConfig.norm_num_groups={g!r}: must be None or an "
                             "integer >= 1")
        bad = [c for c in self.block_out_channels if c % g]
        if bad:
            raise ValueError(f"DiffusionConfig.norm_num_groups={g}: does not divide "
                             f"block_out_channels {bad}")
        if self.attention:
            bad = [c for c in self.block_out_channels if c % 8]
            if bad:
                raise ValueError("DiffusionConfig.block_out_channels: with attention=True every "
                                 f"width must be a multiple of the head size 8, not {bad}")
        base = 2 ** (len(self.block_out_channels) - 1)
        m = self.pad_multiple
        if m is not None and (not _is_int(m) or m < 1 or m % base):
            raise ValueError(f"DiffusionConfig.pad_multiple={m!r}: must be None or a positive "
                             f"multiple of 2**(len(block_out_channels)-1) = {base}")
        lo, hi = _padding(self.image_size, m or base)
        if max(lo, hi) >= self.image_size:
            raise ValueError(f"DiffusionConfig.image_size={self.image_size}: too small to "
                             f"reflect-pad by ({lo}, {hi}) px to a multiple of {m or base}")
        if not isinstance(self.device, str) or not (
                self.device in ("auto", "cpu", "cuda", "mps")
                or (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ValueError(f"DiffusionConfig.device={self.device!r}: expected 'auto', 'cpu', "
                             "'cuda', 'cuda:N' or 'mps'")

    # derived ------------------------------------------------------------------------
    @property
    def groups(self) -> int:
        return self.norm_num_groups or math.gcd(8, *self.block_out_channels)

    @property
    def padding(self) -> tuple[int, int]:
        """(before, after) reflect padding in pixels, the same on both axes."""
        return _padding(self.image_size,
                        self.pad_multiple or 2 ** (len(self.block_out_channels) - 1))

    @property
    def work_size(self) -> int:
        """The size the UNet works at (image_size plus padding)."""
        return self.image_size + sum(self.padding)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        # fields added later are left out at their defaults, so that configurations (and the
        # hashes of their runs) written before they existed stay the same
        for k, default in (("normalize", "none"), ("prediction_type", "epsilon"),
                           ("zero_terminal_snr", False)):
            if d[k] == default:
                d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DiffusionConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"DiffusionConfig: unknown field(s) {unknown}")
        return cls(**d)

    def differences(self, other: "DiffusionConfig | dict",
                    ignore: Sequence[str] = RUNTIME_FIELDS) -> dict[str, tuple[Any, Any]]:
        """``{field: (self's value, other's value)}`` for the fields that differ."""
        a = self.to_dict()
        b = other.to_dict() if isinstance(other, DiffusionConfig) else dict(other)
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
                if k not in ignore and a.get(k) != b.get(k)}


def _padding(size: int, multiple: int) -> tuple[int, int]:
    total = -(-size // multiple) * multiple - size
    return total // 2, total - total // 2


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_unet(cfg: DiffusionConfig):
    """A freshly initialised ``UNet2DModel`` for ``cfg`` (initialised from ``cfg.seed``
    without touching the global RNG)."""
    UNet2DModel, _, _ = _diffusers()
    n = len(cfg.block_out_channels)
    down = tuple("AttnDownBlock2D" if cfg.attention and i > 0 else "DownBlock2D"
                 for i in range(n))
    up = tuple("AttnUpBlock2D" if cfg.attention and i < n - 1 else "UpBlock2D"
               for i in range(n))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return UNet2DModel(
            sample_size=cfg.work_size, in_channels=cfg.channels, out_channels=cfg.channels,
            block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
            down_block_types=down, up_block_types=up, add_attention=cfg.attention,
            attention_head_dim=8, norm_num_groups=cfg.groups,
            num_class_embeds=cfg.n_classes + (1 if cfg.class_dropout > 0 else 0))


def build_ddpm_scheduler(cfg: DiffusionConfig):
    _, DDPMScheduler, _ = _diffusers()
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule="linear",
                         prediction_type=cfg.prediction_type,
                         rescale_betas_zero_snr=cfg.zero_terminal_snr)


def ddim_from(ddpm_scheduler):
    """The sampling scheduler: DDIM from the training scheduler's config."""
    _, _, DDIMScheduler = _diffusers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DDIMScheduler.from_config(ddpm_scheduler.config, timestep_spacing="trailing")


# --------------------------------------------------------------------------- inputs
def _to_unit_images(x: Any, cfg: DiffusionConfig, name: str = "x_train") -> torch.Tensor:
    """numpy uint8 (N,H,W,C) (the datasets' layout) or a torch tensor (N,C,H,W) (uint8 or
    float in [0, 1]) -> float32 (N,C,H,W) in [0, 1] on the CPU."""
    if isinstance(x, np.ndarray):
        if x.ndim != 4:
            raise ValueError(f"{name}: expected a numpy array (N,H,W,C), got shape {x.shape}")
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    elif isinstance(x, torch.Tensor):
        t = x.detach().cpu()
    else:
        raise ValueError(f"{name}: expected a numpy array (N,H,W,C) or a torch tensor "
                         f"(N,C,H,W), got {type(x).__name__}")
    if t.ndim != 4:
        raise ValueError(f"{name}: expected 4 dimensions, got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        t = t.float().div_(255.0)
    elif t.is_floating_point():
        t = t.float()
    else:
        raise ValueError(f"{name}: dtype {t.dtype} (expected uint8 or float in [0, 1])")
    want = (cfg.channels, cfg.image_size, cfg.image_size)
    if tuple(t.shape[1:]) != want:
        raise ValueError(f"{name}: images of shape (C,H,W)={tuple(t.shape[1:])}, but the model "
                         f"takes {want}")
    if len(t) == 0:
        raise ValueError(f"{name}: no images")
    _check_range(t, name)
    return t.clamp(0.0, 1.0).contiguous()


def _check_range(t: torch.Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or inf")
    lo, hi = float(t.min()), float(t.max())
    if lo < -RANGE_TOL or hi > 1 + RANGE_TOL:
        raise ValueError(f"{name}: values in [{lo:.4g}, {hi:.4g}], expected [0, 1]")


def _to_labels(y: Any, n: int, n_classes: int, name: str = "labels") -> torch.Tensor:
    if _is_int(y):
        y = [int(y)] * n
    t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).detach().cpu()
    if n == 0 and t.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if t.ndim == 2 and t.shape[1] == 1:  # MedMNIST-style (N, 1) labels
        t = t[:, 0]
    if t.ndim != 1 or len(t) != n:
        raise ValueError(f"{name}: expected {n} class indices, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name}: expected integer class indices, got dtype {t.dtype}")
    t = t.long()
    if n and (int(t.min()) < 0 or int(t.max()) >= n_classes):
        bad = t[(t < 0) | (t >= n_classes)][0].item()
        raise ValueError(f"{name}: class index {bad} outside [0, {n_classes})")
    return t


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(str(tuple(x.shape)).encode())
    h.update(x.contiguous().numpy().tobytes())
    h.update(y.contiguous().numpy().astype(np.int64).tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- checkpoints
def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _roll_forward(out_dir: Path) -> None:
    ready = out_dir / _READY
    if not ready.is_dir():
        return
    for name in CKPT_ITEMS:
        src = ready / name
        if src.exists():
            _remove(out_dir / name)
            os.rename(src, out_dir / name)
    shutil.rmtree(ready)


def _recover(out_dir: Path) -> None:
    """Finish (or discard) a commit interrupted by a kill."""
    _remove(out_dir / _STAGING)
    _roll_forward(out_dir)


def _item(out_dir: Path, name: str) -> Path:
    """Where to read a checkpoint item without modifying the folder (a complete but not
    yet rolled-forward commit wins)."""
    p = out_dir / _READY / name
    return p if p.exists() else out_dir / name


def has_checkpoint(out_dir: str | os.PathLike) -> bool:
    out_dir = Path(out_dir)
    return _item(out_dir, STATE_FILE).is_file()


def read_state(out_dir: str | os.PathLike) -> dict:
    """The ``diffusion_state.json`` of a checkpoint directory (clear errors if absent)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"diffusion checkpoint directory {out_dir} does not exist")
    p = _item(out_dir, STATE_FILE)
    if not p.is_file():
        raise FileNotFoundError(f"{out_dir}: no diffusion checkpoint in it ({STATE_FILE} "
                                "missing); train one with mdlib.diffusion.train_diffusion")
    state = json.loads(p.read_text())
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{out_dir}: {STATE_FILE} has format {state.get('format')!r}, "
                              f"expected {FORMAT!r}")
    return state


def check_config(out_dir: str | os.PathLike, cfg: DiffusionConfig, state: dict | None = None
                 ) -> DiffusionConfig:
    """Raise :class:`CheckpointError` if the checkpoint in ``out_dir`` was trained with a
    configuration that differs from ``cfg`` (fields in ``RUNTIME_FIELDS`` excepted).
    Returns the saved configuration."""
    state = state or read_state(out_dir)
    saved = state["config"]
    diff = cfg.differences(saved)
    if diff:
        lines = ", ".join(f"{k}: checkpoint {b!r} vs requested {a!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"{out_dir}: the checkpoint there was trained with a different "
                              f"configuration ({lines}); use another directory or the same "
                              "configuration")
    return DiffusionConfig.from_dict(saved)


def read_loss_curve(out_dir: str | os.PathLike) -> list[tuple[int, float]]:
    p = _item(Path(out_dir), LOSS_FILE)
    if not p.is_file():
        return []
    rows = p.read_text().splitlines()[1:]
    return [(int(s), float(v)) for s, v in (r.split(",") for r in rows if r)]


def _save_checkpoint(out_dir: Path, *, unet, ema_unet, ddpm, optimizer, gen: torch.Generator,
                     losses: list[tuple[int, float]], state: dict) -> None:
    staging = out_dir / _STAGING
    _remove(staging)
    staging.mkdir(parents=True)
    unet.save_pretrained(staging / "unet")
    if ema_unet is not None:
        ema_unet.save_pretrained(staging / "unet_ema")
    ddpm.save_pretrained(staging / "scheduler")
    torch.save({"optimizer": optimizer.state_dict(), "rng": gen.get_state()}, staging / OPT_FILE)
    (staging / LOSS_FILE).write_text(
        "step,loss\n" + "".join(f"{s},{v!r}\n" for s, v in losses))
    (staging / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.rename(staging, out_dir / _READY)  # the commit point
    _roll_forward(out_dir)


# --------------------------------------------------------------------------- training
def _ema_decay(cfg: DiffusionConfig, step: int) -> float:
    return min(cfg.ema_decay, (1 + step) / (10 + step))


def _pad(x: torch.Tensor, cfg: DiffusionConfig) -> torch.Tensor:
    lo, hi = cfg.padding
    if lo == hi == 0:
        return x
    return F.pad(x, (lo, hi, lo, hi), mode="reflect")


def _crop(x: torch.Tensor, cfg: DiffusionConfig) -> torch.Tensor:
    lo, _ = cfg.padding
    s = cfg.image_size
    return x[..., lo:lo + s, lo:lo + s]


def _norm_stats(x: torch.Tensor, cfg: DiffusionConfig) -> dict | None:
    """Per-channel mean and std of the [-1, 1] training images (``normalize="channel"``)."""
    if cfg.normalize == "none":
        return None
    w = x.double() * 2.0 - 1.0
    return {"mean": w.mean(dim=(0, 2, 3)).tolist(),
            "std": w.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()}


def _stat(stats: dict, key: str, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(stats[key], dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def _to_work(x: torch.Tensor, stats: dict | None) -> torch.Tensor:
    """[0, 1] images -> the network's working space (before padding)."""
    w = x * 2.0 - 1.0
    if stats is None:
        return w
    return (w - _stat(stats, "mean", w)) / _stat(stats, "std", w)


def _from_work(w: torch.Tensor, stats: dict | None) -> torch.Tensor:
    """The working space -> [0, 1] (not clamped)."""
    if stats is not None:
        w = w * _stat(stats, "std", w) + _stat(stats, "mean", w)
    return (w + 1.0) / 2.0


def train_diffusion(x_train: Any, y_train: Any, cfg: DiffusionConfig,
                    out_dir: str | os.PathLike, progress: bool = True,
                    max_seconds: float | None = None,
                    callback: Callable[[int, float], None] | None = None) -> "DiffusionModel":
    """Train (or resume training) a class-conditional DDPM on ``x_train, y_train`` only.

    ``x_train``: the training split, numpy ``uint8 (N,H,W,C)`` or a tensor ``(N,C,H,W)``
    in [0, 1]; ``y_train``: class indices ``(N,)``. Each step draws a batch of
    ``cfg.batch_size`` images uniformly with replacement, a timestep per image and
    Gaussian noise, all from one generator seeded with ``cfg.seed``, and minimises the
    L2 (or Huber, ``cfg.huber_delta``) error of the predicted noise with AdamW.

    Checkpoints go to ``out_dir`` (layout in the module docstring) every
    ``cfg.checkpoint_every`` steps, at the end, and when ``max_seconds`` (wall clock of
    this call's training loop) runs out; the state records the step reached and
    ``stopped_early``. If ``out_dir`` already holds a checkpoint, training resumes from it
    up to ``cfg.train_steps`` total steps (raising ``train_steps`` trains further); a
    checkpoint from another configuration (other than ``RUNTIME_FIELDS``) or other
    training data raises :class:`CheckpointError`. A checkpoint already at or beyond
    ``train_steps`` is loaded and returned without training.

    ``callback(step, loss)`` runs after every step (after that step's checkpoint, if
    any); an exception from it aborts training, leaving the last checkpoint on disk.

    Returns the trained :class:`DiffusionModel` (EMA weights when ``cfg.ema``).
    """
    if max_seconds is not None and (not _is_num(max_seconds) or max_seconds <= 0):
        raise ValueError(f"max_seconds={max_seconds!r}: must be None or a number > 0")
    UNet2DModel, DDPMScheduler, _ = _diffusers()
    x = _to_unit_images(x_train, cfg, "x_train")
    y = _to_labels(y_train, len(x), cfg.n_classes, "y_train")
    fingerprint = data_fingerprint(x, y)
    stats = _norm_stats(x, cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _recover(out_dir)
    device = resolve_device(cfg.device)

    ddpm = build_ddpm_scheduler(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, wall_prev, losses = 0, 0.0, []
    state = None
    if has_checkpoint(out_dir):
        state = read_state(out_dir)
        check_config(out_dir, cfg, state)
        if state["data"]["fingerprint"] != fingerprint:
            raise CheckpointError(
                f"{out_dir}: the checkpoint there was trained on other data ({state['data']['n']} "
                f"images, fingerprint {state['data']['fingerprint']}) than the {len(x)} images "
                f"given now (fingerprint {fingerprint}); use another directory")
        with _quiet_diffusers():
            unet = UNet2DModel.from_pretrained(_item(out_dir, "unet"))
            ema_unet = (UNet2DModel.from_pretrained(_item(out_dir, "unet_ema"))
                        if cfg.ema else None)
        step = int(state["step"])
        wall_prev = float(state.get("wall_s", 0.0))
        losses = read_loss_curve(out_dir)[:step]
        log.info("%s: resuming diffusion training at step %d of %d", out_dir, step,
                 cfg.train_steps)
    else:
        unet = build_unet(cfg)
        ema_unet = copy.deepcopy(unet) if cfg.ema else None

    unet.to(device).train()
    if ema_unet is not None:
        ema_unet.to(device).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state is not None:
        extra = torch.load(_item(out_dir, OPT_FILE), map_location="cpu", weights_only=True)
        opt.load_state_dict(extra["optimizer"])
        gen.set_state(extra["rng"])

    def make_state(stopped_early: bool, wall: float) -> dict:
        import diffusers
        return {"format": FORMAT, "config": cfg.to_dict(), "step": step,
                "train_steps": cfg.train_steps, "done": step >= cfg.train_steps,
                "stopped_early": stopped_early, "wall_s": wall,
                "data": {"n": len(x), "fingerprint": fingerprint,
                         "class_counts": torch.bincount(y, minlength=cfg.n_classes).tolist()},
                "image_size": cfg.image_size, "work_size": cfg.work_size,
                "padding": list(cfg.padding), "ema_weights": cfg.ema,
                "normalization": stats,
                "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def save(stopped_early: bool, wall: float) -> None:
        _save_checkpoint(out_dir, unet=unet, ema_unet=ema_unet, ddpm=ddpm, optimizer=opt,
                         gen=gen, losses=losses, state=make_state(stopped_early, wall))

    if step >= cfg.train_steps:
        if step > cfg.train_steps:
            log.warning("%s: checkpoint is at step %d, beyond train_steps=%d; returning it "
                        "as is", out_dir, step, cfg.train_steps)
        return _finish(unet, ema_unet, cfg, ddpm, out_dir, state)

    x0 = _pad(_to_work(x.to(device), stats), cfg)  # working space ([-1, 1] or standardised), padded
    y_dev = y.to(device)
    n, bs, T = len(x0), cfg.batch_size, cfg.num_train_timesteps
    shape = (bs, cfg.channels, cfg.work_size, cfg.work_size)
    params = [p for p in unet.parameters()]
    ema_params = list(ema_unet.parameters()) if ema_unet is not None else []
    t_start = time.monotonic()
    stopped_early, saved_at = False, step
    smooth = None
    bar = tqdm(total=cfg.train_steps, initial=step, disable=not progress, desc="diffusion",
               unit="step", leave=False)
    try:
        while step < cfg.train_steps:
            if max_seconds is not None and time.monotonic() - t_start >= max_seconds:
                stopped_early = True
                break
            idx = torch.randint(n, (bs,), generator=gen)
            t = torch.randint(0, T, (bs,), generator=gen)
            noise = torch.randn(shape, generator=gen)
            idx, t, noise = idx.to(device), t.to(device), noise.to(device)
            labels = y_dev[idx]
            if cfg.class_dropout > 0:  # classifier-free guidance: train the null class too
                drop = (torch.rand((bs,), generator=gen) < cfg.class_dropout).to(device)
                labels = torch.where(drop, torch.full_like(labels, cfg.n_classes), labels)
            noisy = ddpm.add_noise(x0[idx], noise, t)
            pred = unet(noisy, t, class_labels=labels).sample
            target = noise if cfg.prediction_type == "epsilon" else ddpm.get_velocity(x0[idx], noise, t)
            if cfg.loss == "l2":
                loss = F.mse_loss(pred, target)
            else:
                loss = F.huber_loss(pred, target, delta=cfg.huber_delta)
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise FloatingPointError(f"{out_dir}: diffusion loss became {lv} at step "
                                         f"{step + 1}; the last checkpoint is at step {saved_at}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            if ema_unet is not None:
                d = _ema_decay(cfg, step)
                with torch.no_grad():
                    for e, p in zip(ema_params, params):
                        e.lerp_(p.detach(), 1.0 - d)
            losses.append((step, lv))
            smooth = lv if smooth is None else 0.95 * smooth + 0.05 * lv
            bar.update(1)
            bar.set_postfix(loss=f"{smooth:.4f}", refresh=False)
            if step % cfg.checkpoint_every == 0 or step == cfg.train_steps:
                save(False, wall_prev + time.monotonic() - t_start)
                saved_at = step
            if callback is not None:
                callback(step, lv)
    finally:
        bar.close()
    if saved_at != step or stopped_early:
        save(stopped_early, wall_prev + time.monotonic() - t_start)
    if stopped_early:
        log.info("%s: stopped after max_seconds=%s at step %d of %d", out_dir, max_seconds,
                 step, cfg.train_steps)
    return _finish(unet, ema_unet, cfg, ddpm, out_dir, read_state(out_dir))


def _finish(unet, ema_unet, cfg, ddpm, out_dir, state) -> "DiffusionModel":
    net = ema_unet if ema_unet is not None else unet
    return DiffusionModel(net, cfg, scheduler_config=ddpm.config, step=state["step"],
                          out_dir=out_dir, state=state)


class _quiet_diffusers:
    """Silence diffusers' informational logging while loading."""

    def __enter__(self):
        from diffusers.utils import logging as dlog
        self._dlog = dlog
        self._level = dlog.get_verbosity()
        dlog.set_verbosity_error()

    def __exit__(self, *exc):
        self._dlog.set_verbosity(self._level)


# --------------------------------------------------------------------------- model
class DiffusionModel:
    """A trained class-conditional DDPM: sampling, masked refinement, variation.

    All methods are batched (one UNet call per denoising step for the whole batch or
    chunk), run under ``torch.no_grad()``, and are seeded: every random draw comes from a
    ``torch.Generator`` seeded by the ``seed`` argument, on the CPU, so results do not
    depend on the global RNG, on chunking, or (up to float round-off) on the device.
    """

    def __init__(self, unet, cfg: DiffusionConfig, *, scheduler_config=None,
                 step: int | None = None, out_dir: str | os.PathLike | None = None,
                 state: dict | None = None, device: str | None = None):
        _, DDPMScheduler, _ = _diffusers()
        self.cfg = cfg
        self.device = resolve_device(device or cfg.device)
        self.unet = unet.to(self.device).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.ddpm = (DDPMScheduler.from_config(scheduler_config) if scheduler_config
                         is not None else build_ddpm_scheduler(cfg))
        self.ddim = ddim_from(self.ddpm)
        self.alphas_cumprod = self.ddim.alphas_cumprod.to(torch.float32).cpu()
        self.final_alpha_cumprod = float(self.ddim.final_alpha_cumprod)
        self.step = step
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.state = state or {}
        self.guidance_scale = 1.0
        self._norm = self.state.get("normalization") if cfg.normalize != "none" else None
        if cfg.normalize != "none" and not self._norm:
            raise CheckpointError(f"{out_dir}: normalize={cfg.normalize!r} but the checkpoint's "
                                  "state holds no normalization statistics")
        if self._norm is not None:  # x0 clipped to each channel's image of [-1, 1]
            ref = torch.zeros(1, cfg.channels, 1, 1, device=self.device)
            self._lo = _to_work(ref, self._norm)
            self._hi = _to_work(ref + 1.0, self._norm)

    @property
    def guidance_scale(self) -> float:
        """Classifier-free guidance weight ``w`` used by :meth:`sample`, :meth:`refine` and
        :meth:`vary`: ``eps = eps(x, null) + w * (eps(x, y) - eps(x, null))``. 1.0 (the
        default) is plain conditional sampling with one UNet call per step; other values
        need a model trained with ``class_dropout > 0`` and cost two UNet evaluations
        (one batched call) per step."""
        return self._guidance_scale

    @guidance_scale.setter
    def guidance_scale(self, w: float) -> None:
        if not _is_num(w) or w < 0:
            raise ValueError(f"guidance_scale={w!r}: must be a finite number >= 0")
        if float(w) != 1.0 and self.cfg.class_dropout <= 0:
            raise ValueError(f"guidance_scale={w}: classifier-free guidance needs a model "
                             "trained with class_dropout > 0 (this one has none); use 1.0")
        self._guidance_scale = float(w)

    def _eps(self, xt: torch.Tensor, tt: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        w = self._guidance_scale
        if w == 1.0:
            return self.unet(xt, tt, class_labels=labels).sample
        null = torch.full_like(labels, self.cfg.n_classes)
        both = self.unet(torch.cat([xt, xt]), torch.cat([tt, tt]),
                         class_labels=torch.cat([labels, null])).sample
        cond, unc = both.chunk(2)
        return unc + w * (cond - unc)

    def __repr__(self) -> str:
        c = self.cfg
        return (f"DiffusionModel({c.image_size}px x{c.channels}, {c.n_classes} classes, "
                f"blocks={c.block_out_channels}, step={self.step}, dir={self.out_dir})")

    @property
    def stopped_early(self) -> bool:
        return bool(self.state.get("stopped_early", False))

    # loading ----------------------------------------------------------------------------
    @classmethod
    def load(cls, out_dir: str | os.PathLike, *, ema: bool = True, device: str | None = None,
             cfg: DiffusionConfig | None = None) -> "DiffusionModel":
        """Load a checkpoint written by :func:`train_diffusion` (``UNet2DModel.from_pretrained``;
        the EMA weights when present and ``ema``). With ``cfg``, raise
        :class:`CheckpointError` if it differs from the saved configuration (runtime
        fields such as ``device`` and ``sample_steps`` are then taken from ``cfg``)."""
        UNet2DModel, DDPMScheduler, _ = _diffusers()
        out_dir = Path(out_dir)
        state = read_state(out_dir)
        saved = DiffusionConfig.from_dict(state["config"])
        if cfg is not None:
            check_config(out_dir, cfg, state)
        use = cfg or saved
        sub = _item(out_dir, "unet_ema")
        if not (ema and sub.is_dir()):
            sub = _item(out_dir, "unet")
        with _quiet_diffusers():
            unet = UNet2DModel.from_pretrained(sub)
            sched = DDPMScheduler.from_pretrained(_item(out_dir, "scheduler"))
        return cls(unet, use, scheduler_config=sched.config, step=int(state["step"]),
                   out_dir=out_dir, state=state, device=device)

    # helpers ----------------------------------------------------------------------------
    def _work_noise(self, n: int, seed: int) -> torch.Tensor:
        c, s = self.cfg, self.cfg.work_size
        g = torch.Generator().manual_seed(int(seed))
        return torch.randn((n, c.channels, s, s), generator=g)

    def make_noise(self, n: int, seed: int = 0) -> torch.Tensor:
        """The image-size noise (n, C, H, W) that :meth:`refine` / :meth:`vary` draw for
        ``seed``: passing it back as ``noise=`` with the same ``seed`` reproduces them."""
        return _crop(self._work_noise(n, seed), self.cfg).clone()

    def _check_x(self, x: Any, name: str = "x") -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name}: expected a tensor (B,C,H,W), got {type(x).__name__}")
        c = self.cfg
        want = (c.channels, c.image_size, c.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"{name}: shape {tuple(x.shape)}, but the model takes (B,C,H,W) "
                             f"with (C,H,W)={want}")
        if not x.is_floating_point():
            raise ValueError(f"{name}: dtype {x.dtype}; expected float images in [0, 1]")
        if len(x):
            _check_range(x.detach(), name)
        return x

    def _check_mask(self, mask: Any, x: torch.Tensor) -> torch.Tensor:
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(mask)
        if not isinstance(mask, torch.Tensor):
            raise ValueError(f"mask: expected a tensor (B,1,H,W) or (B,H,W), got "
                             f"{type(mask).__name__}")
        b, c, h, w = x.shape
        m = mask.detach()
        if m.ndim == 3:
            m = m[:, None]
        if m.ndim != 4 or m.shape[0] != b or m.shape[1] not in (1, c) or tuple(m.shape[2:]) != (h, w):
            raise ValueError(f"mask: shape {tuple(mask.shape)}, expected ({b}, 1, {h}, {w}), "
                             f"({b}, {h}, {w}) or ({b}, {c}, {h}, {w})")
        if m.dtype == torch.bool:
            m = m.float()
        if not m.is_floating_point():
            m = m.float()
        if not torch.isfinite(m).all():
            raise ValueError("mask: contains NaN or inf")
        if b:
            lo, hi = float(m.min()), float(m.max())
            if lo < -RANGE_TOL or hi > 1 + RANGE_TOL:
                raise ValueError(f"mask: values in [{lo:.4g}, {hi:.4g}], expected [0, 1]")
        return m.to(x.device).clamp(0.0, 1.0)

    def _partial_timesteps(self, strength: float, steps: int | None, default_steps: int
                           ) -> list[int]:
        if not _is_num(strength) or not 0.0 < float(strength) <= 1.0:
            raise ValueError(f"strength={strength!r}: must be in (0, 1]")
        T = self.cfg.num_train_timesteps
        n0 = max(1, int(round(float(strength) * T)))  # noise levels covered; t0 = n0 - 1
        if steps is None:
            steps = min(n0, default_steps)
        if not _is_int(steps) or steps < 1:
            raise ValueError(f"steps={steps!r}: must be an integer >= 1")
        if steps > n0:
            raise ValueError(f"steps={steps}: at most {n0} denoising steps fit below t0 = "
                             f"strength * T = {n0}")
        return [int(round(n0 * (steps - k) / steps)) - 1 for k in range(steps)]

    def _alpha(self, t: int) -> float:
        return float(self.alphas_cumprod[t]) if t >= 0 else self.final_alpha_cumprod

    def _ddim_step(self, x: torch.Tensor, out: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) from timestep ``t`` to ``t_prev`` (-1: clean), the
        update of ``DDIMScheduler.step`` for an arbitrary pair of timesteps; ``out`` is the
        UNet's prediction (noise, or velocity with ``prediction_type="v_prediction"``)."""
        a, a_prev = self._alpha(t), self._alpha(t_prev)
        if self.cfg.prediction_type == "v_prediction":
            x0 = math.sqrt(a) * x - math.sqrt(1.0 - a) * out
            eps = math.sqrt(a) * out + math.sqrt(1.0 - a) * x
        else:
            eps = out
            x0 = (x - math.sqrt(1.0 - a) * eps) / math.sqrt(a)
        if self._norm is not None:
            x0 = torch.maximum(torch.minimum(x0, self._hi), self._lo)
        elif self.ddim.config.clip_sample:
            r = self.ddim.config.clip_sample_range
            x0 = x0.clamp(-r, r)
        return math.sqrt(a_prev) * x0 + math.sqrt(1.0 - a_prev) * eps

    def _noised(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        a = self._alpha(t)
        return math.sqrt(a) * x0 + math.sqrt(1.0 - a) * noise

    def _denoise_from(self, x0w: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor,
                      ts: list[int], maskw: torch.Tensor | None, bar) -> torch.Tensor:
        """Noise working-space ``x0w`` to ``ts[0]`` and run DDIM over ``ts``; with ``maskw``,
        replace the known part (weight ``1 - maskw``) after every step by ``x0w`` noised to
        the new timestep with the same ``noise`` (RePaint)."""
        xt = self._noised(x0w, noise, ts[0])
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            tt = torch.full((len(xt),), t, dtype=torch.long, device=xt.device)
            eps = self._eps(xt, tt, labels)
            xt = self._ddim_step(xt, eps, t, t_prev)
            if maskw is not None:
                known = x0w if t_prev < 0 else self._noised(x0w, noise, t_prev)
                xt = maskw * xt + (1.0 - maskw) * known
            bar.update(1)
        return xt

    def _prepare_noise(self, noise: Any, b: int, seed: int) -> torch.Tensor:
        full = self._work_noise(b, seed)
        if noise is None:
            return full
        if isinstance(noise, np.ndarray):
            noise = torch.from_numpy(noise)
        c = self.cfg
        want = (b, c.channels, c.image_size, c.image_size)
        if not isinstance(noise, torch.Tensor) or tuple(noise.shape) != want:
            got = tuple(noise.shape) if hasattr(noise, "shape") else type(noise).__name__
            raise ValueError(f"noise: expected shape {want}, got {got}")
        if not noise.is_floating_point() or not torch.isfinite(noise).all():
            raise ValueError("noise: must be finite floats")
        lo, _ = c.padding
        s = c.image_size
        full[:, :, lo:lo + s, lo:lo + s] = noise.detach().cpu().float()
        return full

    def _chunks(self, n: int, batch_size: int | None):
        if batch_size is None:
            batch_size = max(n, 1)
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be None or an integer >= 1")
        return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]

    # public -----------------------------------------------------------------------------
    @torch.no_grad()
    def denoising_error(self, x: Any, labels: Any, *, seed: int = 0, draws: int = 4,
                        batch_size: int = 256) -> dict[str, float]:
        """The training objective on held-out images: for each image ``draws`` pairs of
        (timestep uniform over the T training steps, Gaussian noise), drawn from ``seed``
        on the CPU, and the conditional prediction (no guidance) compared with its training
        target (the noise, or the velocity for ``prediction_type="v_prediction"``). Returns the mean squared error and the mean Huber loss (``cfg.huber_delta``)
        over all draws, so models trained with either loss are measured the same way.
        ``x``: float images ``(N, C, H, W)`` in [0, 1]; ``labels``: ``(N,)`` classes."""
        x = self._check_x(x)
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if y.shape != (len(x),):
            raise ValueError(f"labels: shape {tuple(y.shape)}, expected ({len(x)},)")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.cfg.n_classes):
            raise ValueError(f"labels: classes must be in [0, {self.cfg.n_classes - 1}]")
        if not _is_int(draws) or draws < 1:
            raise ValueError(f"draws={draws!r}: must be an integer >= 1")
        g = torch.Generator().manual_seed(int(seed))
        T = self.ddpm.config.num_train_timesteps
        x0 = _pad(_to_work(x.float(), self._norm), self.cfg)
        x0, y = x0.repeat(draws, 1, 1, 1), y.repeat(draws)
        t = torch.randint(0, T, (len(x0),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        se, hu = 0.0, 0.0
        for i in range(0, len(x0), batch_size):
            sl = slice(i, i + batch_size)
            tt, nn_ = t[sl].to(self.device), noise[sl].to(self.device)
            xs = x0[sl].to(self.device)
            noisy = self.ddpm.add_noise(xs, nn_, tt)
            pred = self.unet(noisy, tt, class_labels=y[sl].to(self.device)).sample
            tgt = nn_ if self.cfg.prediction_type == "epsilon" else self.ddpm.get_velocity(xs, nn_, tt)
            se += float(F.mse_loss(pred, tgt, reduction="sum"))
            hu += float(F.huber_loss(pred, tgt, delta=self.cfg.huber_delta, reduction="sum"))
        n = noise.numel()
        return {"mse": se / n, "huber": hu / n}

    @torch.no_grad()
    def sample(self, n_per_class: int | None = None, labels: Any = None, *, seed: int = 0,
               batch_size: int = 64, steps: int | None = None, progress: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate images with DDIM (``steps``, default ``cfg.sample_steps``).

        Give either ``n_per_class`` (that many of every class, class-major order) or
        ``labels`` (one class index per image). The starting noise for all images is drawn
        up front from ``seed``, so the result does not depend on ``batch_size``.
        Returns ``(images float32 (N,C,H,W) in [0, 1] on the CPU, labels int64 (N,))``.
        """
        c = self.cfg
        if (n_per_class is None) == (labels is None):
            raise ValueError("sample: give exactly one of n_per_class and labels")
        if n_per_class is not None:
            if not _is_int(n_per_class) or n_per_class < 0:
                raise ValueError(f"n_per_class={n_per_class!r}: must be an integer >= 0")
            y = torch.arange(c.n_classes).repeat_interleave(int(n_per_class))
        else:
            if _is_int(labels):
                labels = [labels]
            arr = labels if isinstance(labels, torch.Tensor) else np.asarray(labels)
            y = _to_labels(arr, len(arr), c.n_classes, "labels")
        steps = c.sample_steps if steps is None else steps
        if not _is_int(steps) or not 1 <= steps <= c.num_train_timesteps:
            raise ValueError(f"steps={steps!r}: must be an integer in [1, "
                             f"{c.num_train_timesteps}]")
        if not _is_int(seed):
            raise ValueError(f"seed={seed!r}: must be an integer")
        n = len(y)
        noise = self._work_noise(n, seed)
        chunks = self._chunks(n, batch_size)
        self.ddim.set_timesteps(int(steps))
        timesteps = self.ddim.timesteps
        stride = c.num_train_timesteps // int(steps)  # DDIMScheduler.step's previous timestep
        out = torch.empty((n, c.channels, c.image_size, c.image_size))
        bar = tqdm(total=len(chunks) * len(timesteps), disable=not progress, desc="sample",
                   unit="step", leave=False)
        try:
            for i, j in chunks:
                xt = noise[i:j].to(self.device)
                yb = y[i:j].to(self.device)
                for t in timesteps:
                    tt = torch.full((j - i,), int(t), dtype=torch.long, device=self.device)
                    eps = self._eps(xt, tt, yb)
                    if self._norm is None:
                        xt = self.ddim.step(eps, int(t), xt).prev_sample
                    else:  # DDIMScheduler.step's update with per-channel x0 clipping
                        xt = self._ddim_step(xt, eps, int(t), int(t) - stride)
                    bar.update(1)
                out[i:j] = _crop(_from_work(xt.float().cpu(), self._norm), c).clamp(0.0, 1.0)
        finally:
            bar.close()
        return out, y

    @torch.no_grad()
    def refine(self, x: torch.Tensor, mask: torch.Tensor, labels: Any, strength: float = 0.3,
               steps: int = 10, seed: int = 0, noise: torch.Tensor | None = None, *,
               batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
        """Diffusion-guided local refinement (MedDiffuseMix step 7).

        ``x``: images (B,C,H,W) in [0, 1]; ``mask``: (B,1,H,W), (B,H,W) (or (B,C,H,W)) in
        [0, 1], 1 = the model may regenerate; ``labels``: class per image (or one int).
        ``x`` is noised to ``t0 = round(strength * T) - 1`` (0-based) with one noise draw
        (from ``seed``, or ``noise`` of shape (B,C,H,W), e.g. :meth:`make_noise`, to reuse
        the same draw across retries), then DDIM runs ``steps`` steps from ``t0`` to clean,
        conditioned on the labels; after every step the known region is put back as
        ``x_t = m * x_t + (1 - m) * noised(x, t)`` with the same noise (RePaint), and at the
        end ``out = m * denoised + (1 - m) * x``. Exact guarantees: ``out == x`` bit for
        bit wherever ``mask == 0``; images whose mask is all zero are returned unchanged
        without any model call; the same inputs and seed give the same output.
        Returns a tensor like ``x`` (same dtype and device).
        """
        x = self._check_x(x)
        m = self._check_mask(mask, x)
        b = len(x)
        y = _to_labels(labels, b, self.cfg.n_classes, "labels")
        ts = self._partial_timesteps(strength, steps, 10)
        if not _is_int(seed):
            raise ValueError(f"seed={seed!r}: must be an integer")
        full_noise = self._prepare_noise(noise, b, seed)
        self._chunks(b, batch_size)  # validates batch_size
        out = x.detach().clone()
        # only images with something to regenerate go through the model
        active = (m.flatten(1) > 0).any(1).nonzero().flatten().cpu()
        if len(active) == 0:
            return out
        c = self.cfg
        act_chunks = self._chunks(len(active), batch_size)
        bar = tqdm(total=len(act_chunks) * len(ts), disable=not progress, desc="refine",
                   unit="step", leave=False)
        try:
            for i, j in act_chunks:
                rows = active[i:j]
                xb = x.detach()[rows.to(x.device)]
                mb = m[rows.to(m.device)]
                x0w = _pad(_to_work(xb.to(self.device, torch.float32).clamp(0, 1), self._norm), c)
                mw = _pad(mb.to(self.device, torch.float32), c)
                nz = full_noise[rows].to(self.device)
                den = self._denoise_from(x0w, y[rows].to(self.device), nz, ts, mw, bar)
                den = _crop(_from_work(den, self._norm), c).clamp(0.0, 1.0).to(x.device, x.dtype)
                mb = mb.to(x.dtype).expand_as(xb)
                comp = torch.where(mb == 0, xb, mb * den + (1.0 - mb) * xb)
                out[rows.to(x.device)] = comp
        finally:
            bar.close()
        return out

    @torch.no_grad()
    def vary(self, x: torch.Tensor, labels: Any, strength: float = 0.5,
             steps: int | None = None, seed: int = 0, noise: torch.Tensor | None = None, *,
             batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
        """Image-to-image variation of whole images (SDEdit): noise ``x`` (B,C,H,W) in
        [0, 1] to ``t0 = round(strength * T) - 1`` and denoise with DDIM, conditioned on
        ``labels``. ``steps`` defaults to ``round(cfg.sample_steps * strength)`` (the same
        step spacing as :meth:`sample`). Seeded like :meth:`refine`. Returns a tensor like
        ``x`` in [0, 1]."""
        x = self._check_x(x)
        b = len(x)
        y = _to_labels(labels, b, self.cfg.n_classes, "labels")
        default = max(1, int(round(self.cfg.sample_steps * float(strength)))) \
            if _is_num(strength) else 1
        ts = self._partial_timesteps(strength, steps, default)
        if not _is_int(seed):
            raise ValueError(f"seed={seed!r}: must be an integer")
        full_noise = self._prepare_noise(noise, b, seed)
        c = self.cfg
        out = torch.empty_like(x.detach())
        chunks = self._chunks(b, batch_size)
        bar = tqdm(total=len(chunks) * len(ts), disable=not progress, desc="vary",
                   unit="step", leave=False)
        try:
            for i, j in chunks:
                x0w = _pad(_to_work(x.detach()[i:j].to(self.device, torch.float32).clamp(0, 1), self._norm), c)
                den = self._denoise_from(x0w, y[i:j].to(self.device),
                                         full_noise[i:j].to(self.device), ts, None, bar)
                out[i:j] = _crop(_from_work(den, self._norm), c).clamp(0.0, 1.0).to(x.device, x.dtype)
        finally:
            bar.close()
        return out


def load(out_dir: str | os.PathLike, **kw) -> DiffusionModel:
    """Shorthand for :meth:`DiffusionModel.load`."""
    return DiffusionModel.load(out_dir, **kw)
