"""Datasets: loaders, a registry with official checksums, and validation of every file
before any work starts (``DataError`` names the file and what is wrong).

* :mod:`.base`: the in-memory container (:class:`ImageDataset`), array validation,
  seeded limited-data subsampling;
* :mod:`.medmnist`: MedMNIST 2D (registry, md5, download);
* :mod:`.folders`: image folders + CSV (LC25000 lung, grouped split);
* :mod:`.segmentation`: ``images/`` + ``masks/`` folder pairs, video-sequence groups and a
  seeded grouped split (CVC-ClinicDB).
* :mod:`.sources`: where each dataset comes from, and :func:`require`, the check that
  every dataset a profile needs is there (fetched and verified, or refused with a message
  that says which files, from where, and where to put them) before any work starts.

Imports only :mod:`mdlib.paths` and :mod:`mdlib.io` (the command line also
:mod:`mdlib.profiles`). Command line::

    python -m mdlib.data check FILE      # validate one .npz file, print a summary
    python -m mdlib.data list            # list the registry
    python -m mdlib.data require --profile cpu [--grid studies/main_cpu.yaml ...]
                                         # fetch / verify / refuse before a run
"""
from __future__ import annotations

import os
from pathlib import Path

from .. import paths
from .base import (SIZES, SPLITS, DataError, ImageDataset, md5sum, subsample_per_class,
                   to_tensor, validate_arrays)
from .folders import FOLDERS, FolderSpec, grouped_split, load_image_folder
from .medmnist import (MEDMNIST, REFERENCE_V2_RESNET18_28, MedMNISTSpec, check_file,
                       load_medmnist, medmnist_path)
from .segmentation import (CVC_CLINICDB_SEQUENCES, SegDataset, cvc_clinicdb, group_agreement,
                           load_segmentation_folder, published_sequences,
                           sequence_groups_by_similarity)
from .sources import profile_datasets, require

__all__ = ["SIZES", "SPLITS", "DataError", "ImageDataset", "md5sum", "subsample_per_class",
           "to_tensor", "validate_arrays", "FOLDERS", "FolderSpec", "grouped_split", "load_image_folder",
           "MEDMNIST", "REFERENCE_V2_RESNET18_28", "MedMNISTSpec", "check_file", "load_medmnist", "medmnist_path",
           "dataset_names", "load_dataset", "spec", "profile_datasets", "require",
           "CVC_CLINICDB_SEQUENCES", "SegDataset", "cvc_clinicdb", "group_agreement",
           "load_segmentation_folder", "published_sequences", "sequence_groups_by_similarity"]


def dataset_names() -> list[str]:
    return sorted(MEDMNIST) + sorted(FOLDERS)


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
                                 modality=f.modality, positive_class=f.positive_class,
                                 split_version=f.split_version)
    raise DataError(f"unknown dataset '{name}'; known: {dataset_names()}")


def spec(name: str):
    """The registry entry (:class:`MedMNISTSpec` or :class:`FolderSpec`) of ``name``, or
    ``None`` when it is not registered."""
    return MEDMNIST.get(name) or FOLDERS.get(name)
