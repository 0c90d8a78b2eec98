"""Where each registered dataset comes from, and the check that every dataset a run
needs is there **before any work starts** (:func:`require`).

* MedMNIST files are fetched from their public source (Zenodo, through the ``medmnist``
  package, no account needed) when missing, and verified (official md5, or the official
  split sizes and label counts: :func:`mdlib.data.check_file`).
* The LC25000 lung subset cannot be fetched by code: its selection of tiles and their
  group ids (``labels.csv``) is distributed with the project's shared data only (the
  images themselves are public, see :data:`LC25000_HOWTO`). When it is missing or is not
  the project's subset, :func:`require` refuses with a message that says which files,
  from where, and where to put them.
* CVC-ClinicDB (DiffAug's polyp frames, :data:`SEGMENTATION`): the same; its frames and
  masks are checked against the md5 list beside them.

Command line (``make study`` and ``make test`` call it first)::

    python -m mdlib.data require --profile cpu --grid studies/main_cpu.yaml
    python -m mdlib.data require --dataset breastmnist:64 --dataset lc25000_lung --no-download
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

from .. import paths
from .base import DataError, md5sum
from .folders import FOLDERS
from .medmnist import MEDMNIST, _download_medmnist, check_file, medmnist_path

log = logging.getLogger(__name__)

#: how to obtain the LC25000 lung subset (there is no code path that fetches it)
LC25000_HOWTO = (
    "It cannot be fetched by code: the selection of 3703 tiles and their group ids "
    "(labels.csv, md5 {csv_md5}) is distributed with the project's shared data "
    "(shared/data/histopathology/lc25000_lung/, whose SOURCE.md says how it was made). "
    "The images are byte copies of public files: GitHub loser564/Lung-Cancer-Prediction-Model "
    "@ 3a1a557e8364e961a2a5b3e9126fafeb8244b531 (lung_image_sets/<class>/, the source_path "
    "column of labels.csv), group ids from GitHub GeorgeBatch/LC25000-clean @ "
    "c6c55395b7f62910cf90bce6234f07e2671ff904 (annotations/<class>/UNI/resize_only/"
    "final_clusters.csv); the original LC25000 release is "
    "github.com/tampapath/lung_colon_image_set. Put the folder (labels.csv, lung_n/, "
    "lung_aca/, lung_scc/) at {folder}, or point MDLIB_DATA_ROOT (make ... DATA=<dir>) at "
    "the folder that holds histopathology/lc25000_lung/.")


#: segmentation frame folders (``images/`` + ``masks/``) that :func:`require` checks: where
#: they go under the data root, their per-file md5 list beside them, and where they are from
SEGMENTATION = {
    "cvc_clinicdb": {
        "subdir": "segmentation/CVC-ClinicDB_256",
        "md5_list": "segmentation/CVC-ClinicDB_256.md5",
        "md5_list_md5": "0bf55b77a08d021d581afbba39001a3e",
        "n_frames": 609,
        "howto": (
            "CVC-ClinicDB (Bernal et al. 2015; public, https://polyp.grand-challenge.org/CVCClinicDB/) "
            "as the project uses it: 609 of the 612 frames (133, 419, 480 missing) resized to "
            "256 x 256 JPEG, images/N.jpg and masks/N.jpg, distributed with the project's shared "
            "data (shared/data/segmentation/, with its per-file md5 list CVC-ClinicDB_256.md5). "
            "Put the folder at {folder} and the md5 list beside it, or point the profile's "
            "diffaug.data.root at another images/ + masks/ folder pair."),
    },
}


def parse_dataset(item) -> tuple[str, int | None]:
    """``"breastmnist"``, ``"breastmnist:64"`` or ``("breastmnist", 64)`` -> (name, size)."""
    if isinstance(item, (tuple, list)):
        name, size = item
        return str(name), (int(size) if size is not None else None)
    name, _, size = str(item).partition(":")
    if size and not size.isdigit():
        raise DataError(f"dataset '{item}': expected NAME or NAME:SIZE (e.g. breastmnist:64)")
    return name, (int(size) if size else None)


def _as_list(v) -> list:
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _grid_configurations(spec: dict) -> list[dict]:
    """The (DATASET, IMAGE_SIZE) parts of a sweep grid's configurations, per sub-grid:
    top-level ``fixed``, then each sub-grid's ``fixed``, ``grid`` (lists) and ``extra``
    (explicit configurations), as in :mod:`mdlib.runs.sweep` (which data cannot import)."""
    top = dict(spec.get("fixed") or {})
    subs = spec.get("grids") or [spec]
    out = []
    for sub in subs:
        base = {**top, **(sub.get("fixed") or {})}
        grid = sub.get("grid") or {}
        names = _as_list(grid["DATASET"]) if "DATASET" in grid else _as_list(base.get("DATASET"))
        sizes = _as_list(grid["IMAGE_SIZE"]) if "IMAGE_SIZE" in grid else \
            _as_list(base.get("IMAGE_SIZE"))
        out += [{"DATASET": n, "IMAGE_SIZE": z} for n in names for z in (sizes or [None])]
        for extra in sub.get("extra") or []:
            cfg = {**base, **extra}
            out.append({"DATASET": cfg.get("DATASET"), "IMAGE_SIZE": cfg.get("IMAGE_SIZE")})
    return [c for c in out if c["DATASET"] is not None]


def profile_datasets(prof: dict, grids: Sequence[str | os.PathLike] = ()) -> list[tuple[str, int]]:
    """Every (dataset, image size) that a profile's notebooks and the sweep ``grids``
    (``studies/*.yaml``: the ``DATASET`` and ``IMAGE_SIZE`` of each configuration; no
    ``IMAGE_SIZE`` = the profile's) read: the profile's ``datasets`` and the ``datasets``
    of its ``diffusion``, ``loss_study`` and ``synthetic`` sections, and the datasets of
    its ``study`` section."""
    import yaml
    size = int(prof.get("image_size", 28))
    names: list[str] = list(prof.get("datasets") or [])
    for sec in ("diffusion", "loss_study", "synthetic"):
        names += list((prof.get(sec) or {}).get("datasets") or [])
    names += list(prof.get("study") or {})
    pairs = [(n, size) for n in names]
    dm = prof.get("diffmic") or {}  # DiffMIC-v2: its datasets at its size, plus extra sizes
    dm_size = int(dm.get("image_size", size))
    for n in dm.get("datasets") or []:
        pairs += [(n, dm_size)] + [(n, int(z)) for z in (dm.get("sizes") or {}).get(n, [])]
    da = prof.get("diffaug") or {}  # DiffAug: CVC-ClinicDB, unless pointed elsewhere
    if da and not (da.get("data") or {}).get("root"):
        pairs.append(("cvc_clinicdb", None))
    for g in grids:
        g = Path(g)
        if not g.is_file():
            raise DataError(f"{g}: sweep grid not found")
        spec = yaml.safe_load(g.read_text()) or {}
        pairs += [(str(c["DATASET"]), int(c["IMAGE_SIZE"]) if c["IMAGE_SIZE"] else size)
                  for c in _grid_configurations(spec)]
    seen, out = set(), []
    for p in pairs:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def _require_medmnist(name: str, size: int, root: Path, download: bool, verify: bool) -> str:
    path = medmnist_path(name, size, root)
    spec = MEDMNIST[name]
    if size not in spec.md5:
        raise DataError(f"{name}: MedMNIST has no {size} px version (sizes: {sorted(spec.md5)})")
    fetched = False
    if not path.exists():
        if not download:
            raise DataError(
                f"{path}: not found. Fetch it with `python -m mdlib.data require --dataset "
                f"{name}:{size}` (downloads from Zenodo through the medmnist package, "
                f"https://zenodo.org/records/10519652, official md5 {spec.md5[size]}), or copy "
                f"{spec.filename(size)} to {path.parent}/")
        log.info("%s missing; downloading with the medmnist package", path)
        _download_medmnist(name, size, path)
        fetched = True
    ds = check_file(path, verify=verify)
    status = ds.meta.get("md5_status", "present")
    return f"downloaded, {status}" if fetched else status


def _require_folder(name: str, root: Path, verify: bool) -> str:
    f = FOLDERS[name]
    folder = root / f.subdir
    csv = folder / f.csv
    howto = LC25000_HOWTO.format(csv_md5=f.csv_md5, folder=folder) if name == "lc25000_lung" \
        else f"Put the folder at {folder}."
    if not csv.is_file():
        raise DataError(f"{csv}: not found ({name}: {f.csv} with {', '.join(f.contents)}). "
                        + howto)
    if f.csv_md5 and md5sum(csv) != f.csv_md5:
        raise DataError(f"{csv}: md5 {md5sum(csv)} is not the project's {name} subset "
                        f"(md5 {f.csv_md5}); another selection gives other splits and other "
                        "numbers. " + howto)
    import pandas as pd
    df = pd.read_csv(csv)
    rel = df[f.path_col].astype(str).tolist()
    missing = [r for r in rel if not (folder / r).is_file()]
    if missing:
        raise DataError(f"{folder}: {len(missing)} of the {len(rel)} images listed in {f.csv} "
                        f"are missing, e.g. {missing[0]}. " + howto)
    if verify and f.md5_col and f.md5_col in df:
        bad = [r for r, m in zip(rel, df[f.md5_col]) if md5sum(folder / r) != m]
        if bad:
            raise DataError(f"{folder}: {len(bad)} image(s) differ from the md5 recorded in "
                            f"{f.csv}, e.g. {bad[0]}. " + howto)
        return "verified (md5 of labels.csv and of every image)"
    return "present"


def _require_segmentation(name: str, root: Path, verify: bool) -> str:
    spec = SEGMENTATION[name]
    folder = root / spec["subdir"]
    howto = spec["howto"].format(folder=folder)
    for sub in ("images", "masks"):
        if not (folder / sub).is_dir():
            raise DataError(f"{folder / sub}: not found ({name}: images/ and masks/ with "
                            f"{spec['n_frames']} frames each). " + howto)
    imgs = sorted(p.name for p in (folder / "images").iterdir() if p.is_file())
    masks = {p.name for p in (folder / "masks").iterdir() if p.is_file()}
    if len(imgs) != spec["n_frames"] or set(imgs) != masks:
        raise DataError(f"{folder}: {len(imgs)} images and {len(masks)} masks "
                        f"({len(set(imgs) ^ masks)} without a partner); expected "
                        f"{spec['n_frames']} pairs. " + howto)
    lst = root / spec["md5_list"]
    if not verify:
        return "present"
    if not lst.is_file():
        raise DataError(f"{lst}: md5 list not found, so the frames cannot be verified. " + howto)
    if md5sum(lst) != spec["md5_list_md5"]:
        raise DataError(f"{lst}: md5 {md5sum(lst)} is not the project's list "
                        f"({spec['md5_list_md5']}). " + howto)
    bad = []
    for line in lst.read_text().splitlines():
        md5, _, rel = line.strip().partition("  ")
        if rel.startswith(("./images/", "./masks/")) and md5sum(folder / rel[2:]) != md5:
            bad.append(rel[2:])
    if bad:
        raise DataError(f"{folder}: {len(bad)} file(s) differ from {lst.name}, e.g. {bad[0]}. "
                        + howto)
    return "verified (md5 of every image and mask)"


def require(datasets: Iterable, root: str | os.PathLike | None = None, download: bool = True,
            verify: bool = True) -> list[dict]:
    """Check, before any work starts, that every dataset in ``datasets`` (names,
    ``"name:size"`` or ``(name, size)``; size None = 28) is under the data root and is
    the registered data: MedMNIST files are downloaded when missing (``download``) and
    verified; folder datasets are checked against their registered ``labels.csv`` md5 and
    per-image md5. Every problem is collected and raised together as one
    :class:`DataError` that says which files, from where, and where to put them.
    Returns one row per dataset: ``{dataset, size, status}``."""
    root = Path(root) if root is not None else paths.data_root()
    rows, problems, folders_done = [], [], set()
    for item in datasets:
        name, size = parse_dataset(item)
        size = 28 if size is None else size
        if name in FOLDERS or name in SEGMENTATION:  # any size, the same files: once
            if name in folders_done:
                continue
            folders_done.add(name)
        try:
            if name in MEDMNIST:
                status = _require_medmnist(name, size, root, download, verify)
            elif name in FOLDERS:
                status = _require_folder(name, root, verify)
            elif name in SEGMENTATION:
                status = _require_segmentation(name, root, verify)
            else:
                raise DataError(f"unknown dataset '{name}'; known: "
                                f"{sorted(MEDMNIST) + sorted(FOLDERS) + sorted(SEGMENTATION)}")
        except DataError as e:
            sized = name not in FOLDERS and name not in SEGMENTATION
            problems.append(f"- {name}{f' ({size} px)' if sized else ''}: {e}")
            continue
        rows.append({"dataset": name, "size": size, "status": status})
    if problems:
        raise DataError(f"data root {root}: {len(problems)} dataset(s) missing or not the "
                        "registered data:\n" + "\n".join(problems))
    return rows
