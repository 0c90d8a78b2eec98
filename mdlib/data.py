"""Datasets: a registry of MedMNIST 2D sets with their official checksums, strict
validation of every file before any work starts, an image-folder + CSV loader, and
seeded, stratified limited-data subsampling.

Images are kept in memory as ``uint8`` arrays of shape ``(N, H, W, C)`` (C = 1 or 3);
labels as ``int64`` arrays of shape ``(N,)``.

Command line::

    python -m mdlib.data check FILE      # validate one .npz file, print a summary
    python -m mdlib.data list            # list the registry
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import paths

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """A dataset file or folder is missing or malformed. The message names the file."""


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class MedMNISTSpec:
    flag: str
    modality: str  # drives MedDiffuseMix's omega (conservative for radiographs)
    n_classes: int
    channels: int
    class_names: tuple[str, ...]
    split_sizes: tuple[int, int, int]
    # official label counts per split (identical at every image size), when known
    label_counts: dict[str, tuple[int, ...]] | None
    md5: dict[int, str]  # official md5 per image size

    def filename(self, size: int) -> str:
        return f"{self.flag}.npz" if size == 28 else f"{self.flag}_{size}.npz"


MEDMNIST: dict[str, MedMNISTSpec] = {
    "pneumoniamnist": MedMNISTSpec(
        "pneumoniamnist", "xray", 2, 1, ("normal", "pneumonia"), (4708, 524, 624),
        {"train": (1214, 3494), "val": (135, 389), "test": (234, 390)},
        {28: "28209eda62fecd6e6a2d98b1501bb15f", 64: "8f4eceb4ccffa70c672198ea285246c6",
         128: "05b46931834c231683c68f40c47b2971", 224: "d6a3c71de1b945ea11211b03746c1fe1"}),
    "breastmnist": MedMNISTSpec(
        "breastmnist", "ultrasound", 2, 1, ("malignant", "normal_or_benign"), (546, 78, 156),
        {"train": (147, 399), "val": (21, 57), "test": (42, 114)},
        {28: "750601b1f35ba3300ea97c75c52ff8f6", 64: "742edef2a1fd1524b2efff4bd7ba9364",
         128: "363e4b3f8d712e9b5de15470a2aaadf1", 224: "b56378a6eefa9fed602bb16d192d4c8b"}),
    "retinamnist": MedMNISTSpec(
        "retinamnist", "fundus", 5, 3, ("grade0", "grade1", "grade2", "grade3", "grade4"),
        (1080, 120, 400),
        {"train": (486, 128, 206, 194, 66), "val": (54, 12, 28, 20, 6),
         "test": (174, 46, 92, 68, 20)},
        {28: "bd4c0672f1bba3e3a89f0e4e876791e4", 64: "afda852cc34dcda56f86ad2b2457dbcc",
         128: "e48e916a24454daf90583d4e6efb1a18", 224: "eae7e3b6f3fcbda4ae613ebdcbe35348"}),
    "dermamnist": MedMNISTSpec(
        "dermamnist", "dermoscopy", 7, 3, tuple(f"class{i}" for i in range(7)),
        (7007, 1003, 2005), None,
        {28: "0744692d530f8e62ec473284d019b0c7", 64: "b70a2f5635c6199aeaa28c31d7202e1f",
         128: "2defd784463fa5243564e855ed717de1", 224: "8974907d8e169bef5f5b96bc506ae45d"}),
    "pathmnist": MedMNISTSpec(
        "pathmnist", "histopathology", 9, 3, tuple(f"class{i}" for i in range(9)),
        (89996, 10004, 7180), None,
        {28: "a8b06965200029087d5bd730944a56c1", 64: "55aa9c1e0525abe5a6b9d8343a507616",
         128: "ac42d08fb904d92c244187169d1fd1d9", 224: "2c51a510bcdc9cf8ddb2af93af1eadec"}),
    "bloodmnist": MedMNISTSpec(
        "bloodmnist", "microscopy", 8, 3, tuple(f"class{i}" for i in range(8)),
        (11959, 1712, 3421), None,
        {28: "7053d0359d879ad8a5505303e11de1dc", 64: "2b94928a2ae4916078ca51e05b6b800b",
         128: "adace1e0ed228fccda1f39692059dd4c", 224: "b718ff6835fcbdb22ba9eacccd7b2601"}),
}


@dataclass(frozen=True)
class FolderSpec:
    """An image-folder + CSV dataset known to the registry."""
    name: str
    subdir: str
    csv: str
    path_col: str
    label_col: str
    group_col: str | None
    modality: str
    class_names: tuple[str, ...]
    channels: int


FOLDERS: dict[str, FolderSpec] = {
    "lc25000_lung": FolderSpec(
        "lc25000_lung", "histopathology/lc25000_lung", "labels.csv", "path", "binary_label",
        "group_id", "histopathology", ("benign", "malignant"), 3),
}

#: image sizes the loaders accept
SIZES = (28, 32, 64, 128, 224)


def dataset_names() -> list[str]:
    return sorted(MEDMNIST) + sorted(FOLDERS)


# --------------------------------------------------------------------------- containers
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
        return ImageDataset(self.name, self.size, self.n_classes, self.channels, self.modality,
                            self.class_names, splits, self.source, meta)


# --------------------------------------------------------------------------- validation
def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] != b"PK":  # an .npz is a zip archive
        raise DataError(f"{path}: not a readable .npz archive (truncated or corrupt?): "
                        f"it does not start with a zip header ({len(magic)} bytes read)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise DataError(f"{path}: holds pickled object arrays, which are never loaded "
                            "(np.load(..., allow_pickle=False))") from e
        raise DataError(f"{path}: not a readable .npz archive (truncated or corrupt?): {e}") from e
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as e:
        raise DataError(f"{path}: not a readable .npz archive (truncated or corrupt?): "
                        f"{type(e).__name__}: {e}") from e


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


def _identify(path: Path) -> tuple[MedMNISTSpec | None, int | None]:
    stem = path.name[:-4] if path.name.endswith(".npz") else path.name
    flag, _, size = stem.partition("_")
    spec = MEDMNIST.get(flag)
    if spec is None:
        return None, None
    if not size:
        return spec, 28
    return (spec, int(size)) if size.isdigit() else (spec, None)


def check_file(path: str | os.PathLike, verify: bool = True) -> ImageDataset:
    """Validate one MedMNIST-style ``.npz`` file and return it as an :class:`ImageDataset`.

    If the file name is a registered MedMNIST flag, its md5 is checked: a different md5 is
    accepted only when the split sizes and label counts are the official ones (logged)."""
    path = Path(path)
    spec, size = _identify(path)
    arrays = _read_npz(path)
    splits = validate_arrays(arrays, str(path), spec.n_classes if spec else None)
    x0 = splits["train"][0]
    if spec is None:
        n_classes = int(max(int(y.max()) for _, y in splits.values()) + 1)
        return ImageDataset(path.stem, x0.shape[1], n_classes, x0.shape[-1], "unknown",
                            tuple(f"class{i}" for i in range(n_classes)), splits, str(path))
    if x0.shape[-1] != spec.channels:
        raise DataError(f"{path}: images have {x0.shape[-1]} channel(s); {spec.flag} has "
                        f"{spec.channels}")
    if size is not None and x0.shape[1:3] != (size, size):
        raise DataError(f"{path}: images are {x0.shape[1]}x{x0.shape[2]}, but the file name "
                        f"says {size}x{size}")
    meta = {}
    if verify:
        meta["md5_status"] = _verify_official(path, spec, size, splits)
    return ImageDataset(spec.flag, x0.shape[1], spec.n_classes, spec.channels, spec.modality,
                        spec.class_names, splits, str(path), meta)


def _verify_official(path: Path, spec: MedMNISTSpec, size: int | None,
                     splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    digest = md5sum(path)
    if size in spec.md5 and digest == spec.md5[size]:
        return "official"
    sizes = tuple(len(splits[s][1]) for s in SPLITS)
    if sizes != spec.split_sizes:
        raise DataError(f"{path}: md5 {digest} is not the official one and the split sizes "
                        f"{sizes} differ from the official {spec.split_sizes}")
    if spec.label_counts is None:
        raise DataError(f"{path}: md5 {digest} is not the official one and no official label "
                        f"counts are registered for {spec.flag} to verify it by")
    for s in SPLITS:
        counts = tuple(np.bincount(splits[s][1], minlength=spec.n_classes).tolist())
        if counts != spec.label_counts[s]:
            raise DataError(f"{path}: md5 {digest} is not the official one and the '{s}' "
                            f"label counts {counts} differ from the official "
                            f"{spec.label_counts[s]}")
    log.info("%s: md5 %s differs from the official %s, accepted: split sizes and label "
             "counts are the official ones", path, digest, spec.md5.get(size))
    return "verified-by-counts"


# --------------------------------------------------------------------------- MedMNIST
def medmnist_path(flag: str, size: int = 28, root: str | os.PathLike | None = None) -> Path:
    if flag not in MEDMNIST:
        raise DataError(f"unknown MedMNIST dataset '{flag}'; known: {sorted(MEDMNIST)}")
    root = Path(root) if root is not None else paths.data_root()
    return root / "medmnist" / MEDMNIST[flag].filename(size)


def _download_medmnist(flag: str, size: int, target: Path) -> None:
    """Download with the official ``medmnist`` package (needs internet)."""
    try:
        import medmnist
        info = medmnist.INFO[flag]
        cls = getattr(medmnist, info["python_class"])
        target.parent.mkdir(parents=True, exist_ok=True)
        cls(split="train", download=True, size=size, root=str(target.parent))
    except Exception as e:  # no internet, package missing, server error
        raise DataError(f"{target}: file not found and the download with the medmnist package "
                        f"failed ({type(e).__name__}: {e}). Put the file there, or point "
                        "MDLIB_DATA_ROOT at a folder holding medmnist/<file>.npz") from e
    if not target.exists():
        raise DataError(f"{target}: medmnist download finished but the file is not there")


def load_medmnist(flag: str, size: int = 28, root: str | os.PathLike | None = None,
                  download: bool = True) -> ImageDataset:
    path = medmnist_path(flag, size, root)
    if size not in MEDMNIST[flag].md5:
        raise DataError(f"{flag}: MedMNIST has no {size} px version (sizes: "
                        f"{sorted(MEDMNIST[flag].md5)})")
    if not path.exists() and download:
        log.info("%s missing; downloading with the medmnist package", path)
        _download_medmnist(flag, size, path)
    return check_file(path)


# --------------------------------------------------------------------------- image folder
def _read_image(path: Path, size: int | None, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
            a = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: cannot be read as an image ({e})") from e
    return a[..., None] if a.ndim == 2 else a


def grouped_split(labels: np.ndarray, groups: np.ndarray | None, val_frac: float,
                  test_frac: float, seed: int) -> np.ndarray:
    """Assign each row to 'train' / 'val' / 'test', stratified by label and, when groups are
    given, keeping every group inside one split (no near-copies across splits)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise DataError(f"val_frac={val_frac}, test_frac={test_frac}: each must lie in (0, 1) "
                        "and their sum below 1")
    n = len(labels)
    g = groups if groups is not None else np.arange(n)
    out = np.full(n, "train", dtype=object)

    def take(idx: np.ndarray, frac: float, seed_: int) -> np.ndarray:
        k = max(2, round(1.0 / frac))
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed_)
        _, held = next(cv.split(np.zeros(len(idx)), labels[idx], g[idx]))
        return idx[held]

    test_idx = take(np.arange(n), test_frac, seed)
    out[test_idx] = "test"
    rest = np.flatnonzero(out == "train")
    val_idx = take(rest, val_frac / (1.0 - test_frac), seed + 1)
    out[val_idx] = "val"
    return out.astype(str)


def load_image_folder(root: str | os.PathLike, csv: str = "labels.csv", *, path_col: str = "path",
                      label_col: str = "label", split_col: str | None = None,
                      group_col: str | None = None, size: int | None = 28,
                      channels: int | None = None, class_names: Sequence[str] | None = None,
                      val_frac: float = 0.15, test_frac: float = 0.2, seed: int = 0,
                      name: str | None = None, modality: str = "unknown",
                      cache: bool = True, workers: int = 4) -> ImageDataset:
    """Load an image folder described by a CSV (one row per image: relative path, integer
    label, optionally split and group). Without a split column a seeded, stratified split is
    made; with a group column it is grouped (whole groups go to one split). The split used
    is saved next to the cached arrays as CSV."""
    import pandas as pd
    root = Path(root)
    csv_path = root / csv if not Path(csv).is_absolute() else Path(csv)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: label CSV not found")
    if size is not None and size not in SIZES:
        raise DataError(f"size={size}: expected one of {SIZES} or None (keep native size)")
    try:
        df = pd.read_csv(csv_path)
    except Exception as e:
        raise DataError(f"{csv_path}: cannot be parsed as CSV ({e})") from e
    for col in [path_col, label_col] + [c for c in (split_col, group_col) if c]:
        if col not in df.columns:
            raise DataError(f"{csv_path}: column '{col}' not found (columns: {list(df.columns)})")
    if len(df) == 0:
        raise DataError(f"{csv_path}: no rows")
    if not pd.api.types.is_integer_dtype(df[label_col]):
        raise DataError(f"{csv_path}: column '{label_col}' must hold integer labels, "
                        f"found dtype {df[label_col].dtype}")
    labels = df[label_col].to_numpy(np.int64)
    if labels.min() < 0:
        raise DataError(f"{csv_path}: negative label {labels.min()} in '{label_col}'")
    n_classes = int(labels.max()) + 1 if class_names is None else len(class_names)
    if labels.max() >= n_classes:
        raise DataError(f"{csv_path}: label {labels.max()} but only {n_classes} class names")
    files = [root / p for p in df[path_col].astype(str)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{csv_path}: {len(missing)} listed image(s) not found, e.g. {missing[0]}")
    if split_col:
        split = df[split_col].astype(str).to_numpy()
        bad = sorted(set(split) - set(SPLITS))
        if bad:
            raise DataError(f"{csv_path}: column '{split_col}' holds {bad}; expected {SPLITS}")
    else:
        groups = df[group_col].astype(str).to_numpy() if group_col else None
        split = grouped_split(labels, groups, val_frac, test_frac, seed)
    if channels is None:
        from PIL import Image, UnidentifiedImageError
        try:
            with Image.open(files[0]) as im:
                channels = 1 if im.mode in ("L", "I", "I;16", "1") else 3
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{files[0]}: cannot be read as an image ({e})") from e

    key = hashlib.md5(json.dumps([md5sum(csv_path), size, channels, list(split)],
                                 sort_keys=True).encode()).hexdigest()[:12]
    ds_name = name or root.name
    cache_file = paths.cache_dir() / f"{ds_name}_{size}_{key}.npz"
    if cache and cache_file.exists():
        arrays = dict(np.load(cache_file, allow_pickle=False))
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            imgs = list(pool.map(lambda f: _read_image(f, size, channels), files))
        shapes = {a.shape for a in imgs}
        if len(shapes) > 1:
            raise DataError(f"{root}: images differ in size {sorted(shapes)[:3]}...; pass size=")
        x = np.stack(imgs)
        arrays = {}
        for s in SPLITS:
            m = split == s
            arrays[f"{s}_images"], arrays[f"{s}_labels"] = x[m], labels[m]
        if cache:
            atomic_savez(cache_file, **arrays)
            split_df = df[[path_col, label_col]].assign(split=split)
            if group_col:
                split_df[group_col] = df[group_col]
            tmp = cache_file.with_suffix(".split.csv.tmp")
            split_df.to_csv(tmp, index=False)
            os.replace(tmp, cache_file.with_suffix(".split.csv"))
    splits = validate_arrays(arrays, str(csv_path), n_classes)
    names = tuple(class_names) if class_names else tuple(f"class{i}" for i in range(n_classes))
    return ImageDataset(ds_name, int(splits["train"][0].shape[1]), n_classes, channels,
                        modality, names, splits, str(csv_path),
                        {"split_file": str(cache_file.with_suffix(".split.csv")), "seed": seed})


def atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- dispatch
def load_dataset(name: str, size: int = 28, root: str | os.PathLike | None = None,
                 seed: int = 0, download: bool = True) -> ImageDataset:
    """Load a registered dataset by name at an image size."""
    root = Path(root) if root is not None else paths.data_root()
    if name in MEDMNIST:
        return load_medmnist(name, size, root, download=download)
    if name in FOLDERS:
        f = FOLDERS[name]
        folder = root / f.subdir
        if not folder.is_dir():
            raise DataError(f"{folder}: dataset folder for '{name}' not found (set "
                            "MDLIB_DATA_ROOT to the folder that holds it)")
        return load_image_folder(folder, f.csv, path_col=f.path_col, label_col=f.label_col,
                                 group_col=f.group_col, size=size, channels=f.channels,
                                 class_names=f.class_names, seed=seed, name=name,
                                 modality=f.modality)
    raise DataError(f"unknown dataset '{name}'; known: {dataset_names()}")


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


# --------------------------------------------------------------------------- CLI
def _main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mdlib.data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a dataset .npz file")
    c.add_argument("file")
    c.add_argument("--no-md5", action="store_true", help="skip the official-md5 check")
    sub.add_parser("list", help="list registered datasets")
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.cmd == "list":
        for n in dataset_names():
            print(n)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        ds = check_file(args.file, verify=not args.no_md5)
    except DataError as e:
        print(f"ERROR {e}", file=sys.stderr)
        return 1
    status = ds.meta.get("md5_status", "unverified")
    print(f"OK {ds.summary()} md5={status}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
