"""Image folders described by a CSV (one row per image: relative path, integer label,
optionally split and group), e.g. LC25000 lung tiles: a seeded, stratified split that
keeps every group inside one split when a group column is given, saved as CSV next to
the cached arrays.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import paths
from ..io import atomic_savez
from .base import (SIZES, SPLITS, DataError, ImageDataset, contiguous_classes, md5sum,
                   validate_arrays)


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
    positive_class: int | None = None  # the disease class of a binary task
    #: md5 of the registered CSV (the project's selection), checked by ``require``
    csv_md5: str | None = None
    #: CSV column with each image's md5, checked by ``require``
    md5_col: str | None = None
    #: what the folder holds, for messages
    contents: tuple[str, ...] = ()
    #: which version of the seeded grouped split the dataset is pinned to (1: the one its
    #: earlier results used; 2: :func:`grouped_split`, which honours the fractions)
    split_version: int = 2


FOLDERS: dict[str, FolderSpec] = {
    "lc25000_lung": FolderSpec(
        "lc25000_lung", "histopathology/lc25000_lung", "labels.csv", "path", "binary_label",
        "group_id", "histopathology", ("benign", "malignant"), 3, positive_class=1,
        csv_md5="533c32faa8f40adec0a03353e727e1b9", md5_col="md5",
        contents=("lung_n/", "lung_aca/", "lung_scc/ (3703 224x224 JPEG tiles)",),
        split_version=1),
}


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


def _n_folds(val_frac: float, test_frac: float, max_folds: int) -> tuple[int, int, int]:
    """``(k, n_val, n_test)``: the number of folds ``k <= max_folds`` (fewest among the
    best) whose multiples ``n_val / k`` and ``n_test / k`` come closest to the fractions."""
    best = None
    for k in range(3, max(3, max_folds) + 1):
        nv, nt = max(1, round(val_frac * k)), max(1, round(test_frac * k))
        if nv + nt >= k:
            continue
        err = max(abs(nv / k - val_frac), abs(nt / k - test_frac))
        if best is None or err < best[0] - 1e-12:
            best = (err, k, nv, nt)
    if best is None:
        raise DataError(f"val_frac={val_frac}, test_frac={test_frac}: no split into at most "
                        f"{max_folds} folds leaves a training split")
    return best[1], best[2], best[3]


def _grouped_split_v1(labels: np.ndarray, groups: np.ndarray | None, val_frac: float,
                      test_frac: float, seed: int) -> np.ndarray:
    """The first version of :func:`grouped_split`, kept because LC25000's split (and so
    every LC25000 result of this project) was made with it: test = one fold of a seeded
    ``StratifiedGroupKFold`` into ``round(1 / test_frac)`` folds, val = one fold of the rest
    into ``round((1 - test_frac) / val_frac)`` folds (so the fractions are met only to the
    nearest ``1/k``: 0.2 -> 20%, 0.15 -> 16%)."""
    from sklearn.model_selection import StratifiedGroupKFold
    n = len(labels)
    g = groups if groups is not None else np.arange(n)
    out = np.full(n, "train", dtype=object)

    def take(idx: np.ndarray, frac: float, seed_: int) -> np.ndarray:
        k = max(2, round(1.0 / frac))
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed_)
        _, held = next(cv.split(np.zeros(len(idx)), labels[idx], g[idx]))
        return idx[held]

    out[take(np.arange(n), test_frac, seed)] = "test"
    rest = np.flatnonzero(out == "train")
    out[take(rest, val_frac / (1.0 - test_frac), seed + 1)] = "val"
    return out.astype(str)


def grouped_split(labels: np.ndarray, groups: np.ndarray | None, val_frac: float,
                  test_frac: float, seed: int, max_folds: int = 20) -> np.ndarray:
    """Assign each row to 'train' / 'val' / 'test', stratified by label and, when groups are
    given, keeping every group inside one split (no near-copies across splits).

    One seeded ``StratifiedGroupKFold`` pass cuts the data into ``k`` folds of about
    ``1/k`` of the images each (and of each class), ``k <= max_folds`` chosen so that whole
    folds give the requested fractions (20 folds: 0.15 -> 3 folds, 0.2 -> 4); the folds,
    in a seeded random order, go to test, then val, the rest to train. The fractions are
    therefore met to within the nearest ``1/k`` and the size of one group."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise DataError(f"val_frac={val_frac}, test_frac={test_frac}: each must lie in (0, 1) "
                        "and their sum below 1")
    labels = np.asarray(labels)
    n = len(labels)
    g = np.asarray(groups) if groups is not None else np.arange(n)
    # every fold needs a group of every class: at most as many folds as the rarest class has groups
    per_class = min(len(np.unique(g[labels == c])) for c in np.unique(labels))
    k, n_val, n_test = _n_folds(val_frac, test_frac, min(max_folds, per_class))
    if groups is not None:
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        folds = [held for _, held in cv.split(np.zeros(n), labels, g)]
    else:  # one image per group: the plain stratified split (much faster)
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        folds = [held for _, held in cv.split(np.zeros(n), labels)]
    order = np.random.default_rng(seed).permutation(k)
    out = np.full(n, "train", dtype=object)
    for i in order[:n_test]:
        out[folds[i]] = "test"
    for i in order[n_test:n_test + n_val]:
        out[folds[i]] = "val"
    return out.astype(str)


def load_image_folder(root: str | os.PathLike, csv: str = "labels.csv", *, path_col: str = "path",
                      label_col: str = "label", split_col: str | None = None,
                      group_col: str | None = None, size: int | None = 28,
                      channels: int | None = None, class_names: Sequence[str] | None = None,
                      val_frac: float = 0.15, test_frac: float = 0.2, seed: int = 0,
                      name: str | None = None, modality: str = "unknown",
                      cache: bool = True, workers: int = 4,
                      positive_class: int | None = None, split_version: int = 2) -> ImageDataset:
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
    n_classes = (contiguous_classes([labels], str(csv_path)) if class_names is None
                 else len(class_names))
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
        if split_version not in (1, 2):
            raise DataError(f"split_version={split_version}: expected 1 or 2")
        split = (_grouped_split_v1 if split_version == 1 else grouped_split)(
            labels, groups, val_frac, test_frac, seed)
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
    groups = None
    if group_col:  # the images of each split are in CSV order (``split == s``)
        g = df[group_col].astype(str).to_numpy()
        groups = {s: g[split == s] for s in SPLITS}
    return ImageDataset(ds_name, int(splits["train"][0].shape[1]), n_classes, channels,
                        modality, names, splits, str(csv_path),
                        {"split_file": str(cache_file.with_suffix(".split.csv")), "seed": seed},
                        positive_class=positive_class, groups=groups)

