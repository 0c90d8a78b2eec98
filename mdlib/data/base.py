"""What every loader shares: the in-memory dataset container, the error type, array
validation, checksums and seeded limited-data subsampling.

Images are kept in memory as ``uint8`` arrays of shape ``(N, H, W, C)`` (C = 1 or 3);
labels as ``int64`` arrays of shape ``(N,)``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """A dataset file or folder is missing or malformed. The message names the file."""


#: image sizes the loaders accept
SIZES = (28, 32, 64, 128, 224)


@dataclass
class ImageDataset:
    """Images ``uint8 (N,H,W,C)`` and labels ``int64 (N,)`` for train / val / test."""
    name: str
    size: int
    n_classes: int
    channels: int
    modality: str
    class_names: tuple[str, ...]
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    source: str = ""
    meta: dict = field(default_factory=dict)
    #: the disease class of a binary task (precision / recall / F1 are reported for it;
    #: e.g. 0 = malignant in BreastMNIST); None: label 1, or macro for multi-class tasks
    positive_class: int | None = None
    #: per split, the group of each image (e.g. the source tile of LC25000's rotated copies),
    #: for resampling by group; None where images are independent
    groups: dict[str, np.ndarray] | None = None

    def x(self, split: str) -> np.ndarray:
        return self.splits[split][0]

    def y(self, split: str) -> np.ndarray:
        return self.splits[split][1]

    @property
    def task(self) -> str:
        return "binary" if self.n_classes == 2 else "multiclass"

    def class_counts(self, split: str) -> list[int]:
        return np.bincount(self.y(split), minlength=self.n_classes).tolist()

    def summary(self) -> str:
        parts = [f"{s}={len(self.y(s))} {self.class_counts(s)}" for s in self.splits]
        return (f"{self.name} {self.size}px C={self.channels} classes={self.n_classes} "
                + " ".join(parts))

    def with_train_subset(self, idx: np.ndarray) -> "ImageDataset":
        """A copy whose train split holds only ``idx`` (val/test unchanged)."""
        x, y = self.splits["train"]
        splits = dict(self.splits)
        splits["train"] = (x[idx], y[idx])
        meta = dict(self.meta, train_subset_size=int(len(idx)))
        groups = None
        if self.groups is not None:
            groups = dict(self.groups)
            groups["train"] = self.groups["train"][idx]
        return dataclasses.replace(self, splits=splits, meta=meta, groups=groups)

    def positive(self) -> int | None:
        """The class whose precision / recall / F1 are reported: the registered disease
        class of a binary task (label 1 when none is registered), None (macro averages)
        for a multi-class task."""
        if self.n_classes != 2:
            return None
        return 1 if self.positive_class is None else int(self.positive_class)


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def validate_arrays(arrays: dict[str, np.ndarray], source: str, n_classes: int | None = None,
                    splits: Sequence[str] = SPLITS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Check a dict of ``<split>_images`` / ``<split>_labels`` arrays and return them as
    ``{split: (uint8 NHWC images, int64 labels)}``. Raises :class:`DataError` naming
    ``source`` and the problem."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    shape_ref = None
    for s in splits:
        for kind in ("images", "labels"):
            if f"{s}_{kind}" not in arrays:
                raise DataError(f"{source}: missing array '{s}_{kind}' "
                                f"(arrays present: {sorted(arrays)})")
        x, y = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"{source}: '{s}_images' has dtype {x.dtype}; expected uint8 "
                            "(or float in [0, 1])")
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
            raise DataError(f"{source}: '{s}_images' has shape {x.shape}; expected rank 3 "
                            "(N, H, W) or rank 4 (N, H, W, C) with C in {1, 3}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{source}: '{s}_labels' has dtype {y.dtype}; expected an integer type")
        if not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
            raise DataError(f"{source}: '{s}_labels' has shape {y.shape}; expected (N,) or (N, 1)")
        if len(x) == 0:
            raise DataError(f"{source}: split '{s}' is empty")
        if len(x) != len(y):
            raise DataError(f"{source}: split '{s}' has {len(x)} images but {len(y)} labels")
        if np.issubdtype(x.dtype, np.floating):
            if not np.isfinite(x).all():
                raise DataError(f"{source}: '{s}_images' holds non-finite values (NaN or inf)")
            lo, hi = float(x.min()), float(x.max())
            if lo < 0.0 or hi > 1.0:
                raise DataError(f"{source}: float '{s}_images' lie in [{lo:.3g}, {hi:.3g}]; "
                                "expected [0, 1]")
            x = np.round(x * 255.0).astype(np.uint8)
        if x.ndim == 3:
            x = x[..., None]
        y = y.reshape(-1).astype(np.int64)
        if y.min() < 0 or (n_classes is not None and y.max() >= n_classes):
            raise DataError(f"{source}: '{s}_labels' lie in [{y.min()}, {y.max()}], outside "
                            f"[0, {(n_classes - 1) if n_classes else 'inf'}]")
        if len(np.unique(y)) < 2:
            raise DataError(f"{source}: split '{s}' holds a single class ({int(y[0])}); "
                            "a classifier cannot be trained or evaluated on it")
        if shape_ref is None:
            shape_ref = x.shape[1:]
        elif x.shape[1:] != shape_ref:
            raise DataError(f"{source}: split '{s}' has image shape {x.shape[1:]}, "
                            f"but an earlier split has {shape_ref}")
        out[s] = (np.ascontiguousarray(x), y)
    return out


def _ranges(values: Sequence[int]) -> str:
    """``[2, 3, 4, 7]`` -> ``"2-4, 7"``."""
    out, vals = [], sorted(int(v) for v in values)
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        out.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ", ".join(out)


def contiguous_classes(labels: Sequence[np.ndarray], source: str) -> int:
    """The class count ``K`` of labels whose classes are not known from a registry: the
    labels of all splits together must be exactly ``0 .. K-1``. A label far above the
    others would otherwise create classes without a single image (a K-way classifier with
    empty outputs, undefined per-class metrics). Raises :class:`DataError` naming the
    empty classes."""
    present = np.unique(np.concatenate([np.asarray(y).reshape(-1) for y in labels]))
    k = int(present.max()) + 1
    if len(present) != k:
        empty = sorted(set(range(k)) - set(present.tolist()))
        raise DataError(f"{source}: labels {{{_ranges(present)}}} do not form a contiguous "
                        f"range 0..{k - 1}: class(es) {_ranges(empty)} have no image in any "
                        f"split. Relabel the {len(present)} classes present as "
                        f"0..{len(present) - 1}")
    return k


def subsample_per_class(y: np.ndarray, fraction: float | None = None,
                        per_class: int | None = None, seed: int = 0) -> np.ndarray:
    """Seeded, stratified subset of indices: ``fraction`` of every class (at least 2 per
    class), or at most ``per_class`` of every class. Returns sorted indices."""
    if (fraction is None) == (per_class is None):
        raise ValueError("give exactly one of fraction= or per_class=")
    if fraction is not None and not (0.0 < fraction <= 1.0):
        raise ValueError(f"fraction={fraction}: must lie in (0, 1]")
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class={per_class}: must be >= 1")
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = (min(len(idx), max(2, math.ceil(fraction * len(idx)))) if fraction is not None
             else min(len(idx), per_class))
        keep.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(keep))


def to_tensor(x: np.ndarray):
    """uint8 ``(N, H, W, C)`` -> float32 torch tensor ``(N, C, H, W)`` in [0, 1] (the
    'intensity scaling' every method shares)."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)
