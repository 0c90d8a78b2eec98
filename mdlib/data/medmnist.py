"""MedMNIST 2D: the registry with official checksums, ``.npz`` reading and validation
(``check_file``), verification against the official md5 (or, for re-saved copies, the
official split sizes and label counts), and download with the ``medmnist`` package.
"""
from __future__ import annotations

import logging
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import paths
from .base import (SPLITS, DataError, ImageDataset, contiguous_classes, md5sum,
                   validate_arrays)

log = logging.getLogger(__name__)


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
    positive_class: int | None = None  # the disease class of a binary task

    def filename(self, size: int) -> str:
        return f"{self.flag}.npz" if size == 28 else f"{self.flag}_{size}.npz"


MEDMNIST: dict[str, MedMNISTSpec] = {
    "pneumoniamnist": MedMNISTSpec(
        "pneumoniamnist", "xray", 2, 1, ("normal", "pneumonia"), (4708, 524, 624),
        {"train": (1214, 3494), "val": (135, 389), "test": (234, 390)},
        {28: "28209eda62fecd6e6a2d98b1501bb15f", 64: "8f4eceb4ccffa70c672198ea285246c6",
         128: "05b46931834c231683c68f40c47b2971", 224: "d6a3c71de1b945ea11211b03746c1fe1"},
        positive_class=1),
    "breastmnist": MedMNISTSpec(
        "breastmnist", "ultrasound", 2, 1, ("malignant", "normal_or_benign"), (546, 78, 156),
        {"train": (147, 399), "val": (21, 57), "test": (42, 114)},
        {28: "750601b1f35ba3300ea97c75c52ff8f6", 64: "742edef2a1fd1524b2efff4bd7ba9364",
         128: "363e4b3f8d712e9b5de15470a2aaadf1", 224: "b56378a6eefa9fed602bb16d192d4c8b"},
        positive_class=0),  # label 0 = malignant, the disease class
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
    if spec is None:  # classes not known from the registry: they must be 0..K-1
        n_classes = contiguous_classes([y for _, y in splits.values()], str(path))
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
                        spec.class_names, splits, str(path), meta,
                        positive_class=spec.positive_class)


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
                        f"(from Zenodo, https://zenodo.org/records/10519652) failed "
                        f"({type(e).__name__}: {e}). Put the file there, or point "
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


#: published reference numbers (test split, ACC / AUC) quoted from ../shared/data/MANIFEST.md:
#: MedMNIST v2, 28 px, ResNet-18, 100 epochs, model chosen by val AUC.
REFERENCE_V2_RESNET18_28 = {
    "pneumoniamnist": {"acc": 0.854, "auc": 0.944},
    "breastmnist": {"acc": 0.863, "auc": 0.901},
    "retinamnist": {"acc": 0.524, "auc": 0.717},
}
