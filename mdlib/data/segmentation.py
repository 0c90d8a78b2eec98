"""Segmentation data: an ``images/`` + ``masks/`` folder pair, validated before any work
starts; sequence groups of video frames; a seeded, grouped train / val / test split.

Folder pair
-----------
``<root>/images/<name>.<ext>`` and ``<root>/masks/<name>.<ext>`` with the same file stems
(any extension PIL reads: JPEG, PNG, TIFF, BMP). Every pair is checked, and the first
problem found raises :class:`~mdlib.data.base.DataError` naming the file:

* an image without a mask, or a mask without an image;
* a file that cannot be read as an image;
* an image and its mask of different sizes;
* a mask that is not binary: after conversion to grey, more than ``max_ambiguous``
  (default 5%) of its pixels lie in the ambiguous band [32, 223] (JPEG masks hold a thin
  band of compression noise at edges: about 0.3% of the pixels in CVC-ClinicDB, at most
  1%); what remains is binarised at ``threshold`` (127);
* an empty mask (no pixel above the threshold) where ``require_foreground`` (every frame
  of a polyp dataset shows a polyp).

Images are kept as ``uint8 (N, H, W, 3)``, masks as ``uint8 (N, H, W)`` in {0, 1}. With
``size`` the pair is resized to ``size x size``: the image with antialiased bilinear
resampling, the binarised mask with antialiased bilinear resampling of its 0/255 values
and a threshold at 127 (the area rule: a pixel is foreground when it is at least half
covered). A mask that becomes empty at the working size (a lesion smaller than a pixel)
is an error too when ``require_foreground``.

Frames are ordered by the number in their stem (natural order: 2 before 10); an unsorted
or lexicographic glob mixes sequences.

Sequence groups (CVC-ClinicDB)
------------------------------
CVC-ClinicDB's 612 frames come from 29 sequences (25 colonoscopy studies); neighbouring
frames are near-copies, so frames of one sequence must stay in one split. The dataset's
own README (``README.txt`` shipped with it) publishes the frame-number-to-sequence table;
it is :data:`CVC_CLINICDB_SEQUENCES` and :func:`published_sequences` applies it (the
shared copy lacks frames 133, 419 and 480, inside sequences 7, 20 and 24).

For folders without such a table, :func:`sequence_groups_by_similarity` derives groups
from consecutive-frame similarity. The rule: frames in natural order; each frame's colour
histogram (``bins`` levels per RGB channel, normalised); frame ``i`` starts a new group
when the histogram intersection between it and each of the last ``window`` frames of the
current group is below ``threshold``. A low threshold merges neighbouring sequences rather
than splitting one (merging costs nothing but split balance; splitting leaks near-copies).
:func:`group_agreement` measures a derived grouping against the published one (notebook 14
checks the rule on CVC-ClinicDB).

Split
-----
:func:`grouped_split` makes a fixed, seeded split by group: the test groups are the
shortest prefix of a seeded random permutation of the groups whose frame count is closest
to ``n_test`` (ties: the smaller), drawn over ``draws`` permutations, the one closest to
the target kept (first one on ties); then validation groups are drawn the same way from
the remaining groups with target ``n_val``. :func:`save_split` writes it as CSV.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import paths
from ..io import atomic_savez, write_csv
from .base import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
#: grey levels between these count as "ambiguous" in a mask (neither clearly 0 nor 255)
AMBIGUOUS_BAND = (32, 223)

#: CVC-ClinicDB frame-number -> sequence table, as published in the dataset's README.txt
#: ("The correspondence between the number of frame and the video sequence"); sequence k
#: is frames CVC_CLINICDB_SEQUENCES[k-1][0] .. [1] inclusive.
CVC_CLINICDB_SEQUENCES: tuple[tuple[int, int], ...] = (
    (1, 25), (26, 50), (51, 67), (68, 78), (79, 103), (104, 126), (127, 151), (152, 177),
    (178, 199), (200, 205), (206, 227), (228, 252), (253, 277), (278, 297), (298, 317),
    (318, 342), (343, 363), (364, 383), (384, 408), (409, 428), (429, 447), (448, 466),
    (467, 478), (479, 503), (504, 528), (529, 546), (547, 571), (572, 591), (592, 612))
#: frames of CVC-ClinicDB absent from the shared 256 px copy
CVC_CLINICDB_MISSING = (133, 419, 480)


@dataclass
class SegDataset:
    """Frames ``uint8 (N, H, W, 3)``, binary masks ``uint8 (N, H, W)``, the frames' stems
    ``ids`` (natural order), optional ``groups`` (one integer per frame) and ``splits``
    (``{name: indices}``)."""
    name: str
    size: int
    images: np.ndarray
    masks: np.ndarray
    ids: np.ndarray
    groups: np.ndarray | None = None
    splits: dict = field(default_factory=dict)
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def index(self, split: str) -> np.ndarray:
        if split not in self.splits:
            raise KeyError(f"{self.name}: no split '{split}' (have {sorted(self.splits)})")
        return self.splits[split]

    def x(self, split: str) -> np.ndarray:
        return self.images[self.index(split)]

    def m(self, split: str) -> np.ndarray:
        return self.masks[self.index(split)]

    def ids_of(self, split: str) -> np.ndarray:
        return self.ids[self.index(split)]

    def groups_of(self, split: str) -> np.ndarray:
        if self.groups is None:
            raise ValueError(f"{self.name}: no groups")
        return self.groups[self.index(split)]

    def with_splits(self, splits: dict) -> "SegDataset":
        return SegDataset(self.name, self.size, self.images, self.masks, self.ids, self.groups,
                          {k: np.asarray(v, dtype=np.int64) for k, v in splits.items()},
                          self.source, dict(self.meta))

    def replace(self, **kw) -> "SegDataset":
        d = dict(name=self.name, size=self.size, images=self.images, masks=self.masks,
                 ids=self.ids, groups=self.groups, splits=self.splits, source=self.source,
                 meta=dict(self.meta))
        d.update(kw)
        return SegDataset(**d)

    def summary(self) -> str:
        parts = [f"{s}={len(i)}" for s, i in self.splits.items()]
        g = "" if self.groups is None else f" groups={len(np.unique(self.groups))}"
        return (f"{self.name} {self.size}px frames={len(self)}{g} " + " ".join(parts)
                + f" foreground={self.masks.mean():.3f}")


def natural_key(stem: str):
    """Sort key: numbers compare as numbers ("2" < "10")."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", stem)]


def frame_number(stem: str) -> int:
    """The (last) integer in a file stem: ``"612"`` -> 612, ``"frame_0042"`` -> 42."""
    nums = re.findall(r"\d+", stem)
    if not nums:
        raise DataError(f"'{stem}': no frame number in the file name")
    return int(nums[-1])


def _listing(d: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in d.iterdir():
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."):
            if p.stem in out:
                raise DataError(f"{p}: two files with the stem '{p.stem}' in {d}")
            out[p.stem] = p
    return out


def pair_files(root: str | os.PathLike, images: str = "images", masks: str = "masks"
               ) -> list[tuple[str, Path, Path]]:
    """``[(stem, image path, mask path)]`` in natural order; :class:`DataError` for a
    missing folder, an empty one, or an image without its mask (and vice versa)."""
    root = Path(root)
    di, dm = root / images, root / masks
    for d in (di, dm):
        if not d.is_dir():
            raise DataError(f"{d}: folder not found (expected {root}/{images}/ and "
                            f"{root}/{masks}/ with the same file names)")
    li, lm = _listing(di), _listing(dm)
    if not li:
        raise DataError(f"{di}: no image files ({', '.join(IMAGE_EXTS)})")
    no_mask = sorted(set(li) - set(lm), key=natural_key)
    if no_mask:
        raise DataError(f"{li[no_mask[0]]}: no mask with the same name in {dm} "
                        f"({len(no_mask)} image(s) without a mask)")
    no_image = sorted(set(lm) - set(li), key=natural_key)
    if no_image:
        raise DataError(f"{lm[no_image[0]]}: no image with the same name in {di} "
                        f"({len(no_image)} mask(s) without an image)")
    return [(s, li[s], lm[s]) for s in sorted(li, key=natural_key)]


def _read(path: Path, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: cannot be read as an image ({e})") from e


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image
    if a.shape[0] == size and a.shape[1] == size:
        return a
    im = Image.fromarray(a)
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))


def read_pair(stem: str, image_path: Path, mask_path: Path, size: int | None = None,
              threshold: int = 127, max_ambiguous: float = 0.05,
              require_foreground: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One validated pair: ``(uint8 (H, W, 3) image, uint8 (H, W) mask in {0, 1})``."""
    img = _read(image_path, "RGB")
    mk = _read(mask_path, "L")
    if img.shape[:2] != mk.shape[:2]:
        raise DataError(f"{mask_path}: mask is {mk.shape[1]}x{mk.shape[0]} px but its image "
                        f"{image_path} is {img.shape[1]}x{img.shape[0]} px")
    lo, hi = AMBIGUOUS_BAND
    amb = float(((mk >= lo) & (mk <= hi)).mean())
    if amb > max_ambiguous:
        raise DataError(f"{mask_path}: not a binary mask: {amb:.1%} of its pixels are grey "
                        f"levels in [{lo}, {hi}] (at most {max_ambiguous:.0%} allowed; a "
                        "soft / probability map or a photo in the masks folder?)")
    binary = mk > threshold
    if require_foreground and not binary.any():
        raise DataError(f"{mask_path}: empty mask (no pixel above {threshold}) but every "
                        "frame must show a lesion (require_foreground=True)")
    if size is not None:
        img = _resize(img, size)
        binary = _resize(binary.astype(np.uint8) * 255, size) > 127
        if require_foreground and not binary.any():
            raise DataError(f"{mask_path}: the lesion vanishes when the mask is resized to "
                            f"{size}x{size} px (smaller than a pixel)")
    return img, binary.astype(np.uint8)


def _check_size(size: int | None) -> None:
    if size is not None and (not isinstance(size, (int, np.integer)) or size < 16 or size % 8):
        raise DataError(f"size={size!r}: expected None (native size) or an integer >= 16 "
                        "that is a multiple of 8 (latent models downsample by 4 or 8)")


def load_segmentation_folder(root: str | os.PathLike, size: int | None = None, *,
                             images: str = "images", masks: str = "masks",
                             threshold: int = 127, max_ambiguous: float = 0.05,
                             require_foreground: bool = True, name: str | None = None,
                             cache: bool = True, workers: int = 4) -> SegDataset:
    """Load and validate an ``images/`` + ``masks/`` folder pair (module docstring).
    Every file is checked before the dataset is returned; the arrays are cached under
    ``runs/cache`` keyed by the file list, sizes, modification times and options."""
    _check_size(size)
    root = Path(root)
    files = pair_files(root, images, masks)
    stat = [(s, i.stat().st_size, int(i.stat().st_mtime), m.stat().st_size,
             int(m.stat().st_mtime)) for s, i, m in files]
    key = hashlib.md5(json.dumps([str(root.resolve()), stat, size, threshold, max_ambiguous,
                                  require_foreground]).encode()).hexdigest()[:12]
    ds_name = name or root.name
    cache_file = paths.cache_dir() / f"seg_{ds_name}_{size}_{key}.npz"
    if cache and cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as z:
            x, m, ids = z["images"], z["masks"], z["ids"]
    else:
        def one(f):
            return read_pair(*f, size=size, threshold=threshold, max_ambiguous=max_ambiguous,
                             require_foreground=require_foreground)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pairs = list(pool.map(one, files))  # the first DataError propagates
        shapes = {p[0].shape for p in pairs}
        if len(shapes) > 1:
            first = pairs[0][0].shape
            odd = next(f for f, p in zip(files, pairs) if p[0].shape != first)
            raise DataError(f"{odd[1]}: {odd[1].name} is {pairs[files.index(odd)][0].shape[1]}x"
                            f"{pairs[files.index(odd)][0].shape[0]} px but {files[0][1].name} "
                            f"is {first[1]}x{first[0]}; pass size= to resize them all")
        x = np.stack([p[0] for p in pairs])
        m = np.stack([p[1] for p in pairs])
        ids = np.array([f[0] for f in files])
        if cache:
            atomic_savez(cache_file, images=x, masks=m, ids=ids)
    return SegDataset(ds_name, int(x.shape[1]), x, m, ids.astype(str), None, {}, str(root),
                      {"threshold": threshold, "cache": str(cache_file) if cache else None})


# --------------------------------------------------------------------------- groups
def published_sequences(ids: Sequence[str],
                        table: Sequence[tuple[int, int]] = CVC_CLINICDB_SEQUENCES) -> np.ndarray:
    """Sequence number (1-based) of each frame from a published frame-range table;
    :class:`DataError` for a frame the table does not cover."""
    nums = np.array([frame_number(s) for s in ids])
    seq = np.zeros(len(nums), dtype=np.int64)
    for k, (a, b) in enumerate(table, start=1):
        seq[(nums >= a) & (nums <= b)] = k
    if (seq == 0).any():
        bad = nums[seq == 0][0]
        raise DataError(f"frame {bad}: not covered by the sequence table "
                        f"(frames {table[0][0]}..{table[-1][1]})")
    return seq


def _histograms(images: np.ndarray, bins: int) -> np.ndarray:
    q = (images.astype(np.int64) * bins) // 256                    # (N, H, W, 3)
    code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]        # (N, H, W)
    n = len(images)
    flat = code.reshape(n, -1) + (np.arange(n) * bins ** 3)[:, None]
    h = np.bincount(flat.ravel(), minlength=n * bins ** 3).reshape(n, bins ** 3)
    return h / h.sum(1, keepdims=True)


def frame_similarity(images: np.ndarray, bins: int = 16, window: int = 5) -> np.ndarray:
    """For frames in order, ``s[i]`` (i >= 1): the largest colour-histogram intersection
    between frame ``i`` and each of the ``window`` frames before it."""
    h = _histograms(images, bins)
    s = np.zeros(len(images))
    for i in range(1, len(images)):
        lo = max(0, i - window)
        s[i] = np.minimum(h[lo:i], h[i]).sum(1).max()
    return s


def sequence_groups_by_similarity(images: np.ndarray, threshold: float = 0.4, bins: int = 16,
                                  window: int = 5, return_similarity: bool = False):
    """Groups (0-based integers) of frames given in their natural order, by the
    consecutive-frame rule of the module docstring. Histogram intersection lies in [0, 1]
    (1: identical colour distributions). With ``return_similarity``: also the similarity
    each decision used (``s[0] = 1``)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold}: must lie in [0, 1]")
    h = _histograms(images, bins)
    groups = np.zeros(len(images), dtype=np.int64)
    sims = np.ones(len(images))
    start = 0
    for i in range(1, len(images)):
        lo = max(start, i - window)
        sims[i] = np.minimum(h[lo:i], h[i]).sum(1).max()
        if sims[i] < threshold:
            start = i
            groups[i] = groups[i - 1] + 1
        else:
            groups[i] = groups[i - 1]
    return (groups, sims) if return_similarity else groups


def group_agreement(derived: np.ndarray, published: np.ndarray) -> dict:
    """How a derived grouping matches the published one: adjusted Rand index, group
    counts, published sequences split over several derived groups (the leak risk), and
    derived groups that merge several sequences (harmless for leakage)."""
    from sklearn.metrics import adjusted_rand_score
    derived, published = np.asarray(derived), np.asarray(published)
    split = [int(s) for s in np.unique(published) if len(np.unique(derived[published == s])) > 1]
    merged = [int(g) for g in np.unique(derived) if len(np.unique(published[derived == g])) > 1]
    return {"ari": float(adjusted_rand_score(published, derived)),
            "n_derived": int(len(np.unique(derived))), "n_published": int(len(np.unique(published))),
            "sequences_split": len(split), "split_sequences": split,
            "groups_merging_sequences": len(merged)}


# --------------------------------------------------------------------------- split
def _closest_prefix(groups_order: np.ndarray, counts: dict, target: int) -> tuple[list, int]:
    best, best_n, n = [], 0, 0
    chosen = []
    for g in groups_order:
        chosen.append(g)
        n += counts[g]
        if abs(n - target) < abs(best_n - target) or not best:
            best, best_n = list(chosen), n
        if n >= target:
            break
    return best, best_n


def _draw(groups: np.ndarray, pool: np.ndarray, target: int, rng, draws: int) -> list:
    counts = {g: int((groups == g).sum()) for g in pool}
    best, best_gap = None, None
    for _ in range(draws):
        chosen, n = _closest_prefix(rng.permutation(pool), counts, target)
        gap = abs(n - target)
        if best is None or gap < best_gap:
            best, best_gap = chosen, gap
        if gap == 0:
            break
    return sorted(best)


def grouped_split(groups: np.ndarray, n_test: int, n_val: int, seed: int = 0,
                  draws: int = 2000) -> np.ndarray:
    """``'train' / 'val' / 'test'`` per frame, whole groups per split (module docstring)."""
    groups = np.asarray(groups)
    ug = np.unique(groups)
    if len(ug) < 3:
        raise DataError(f"{len(ug)} group(s): a grouped train / val / test split needs >= 3")
    if not (0 < n_test < len(groups) and 0 < n_val < len(groups) - n_test):
        raise DataError(f"n_test={n_test}, n_val={n_val}: must be positive and leave training "
                        f"frames out of {len(groups)}")
    rng = np.random.default_rng(seed)
    test_g = _draw(groups, ug, n_test, rng, draws)
    rest = np.array([g for g in ug if g not in set(test_g)])
    val_g = _draw(groups, rest, n_val, rng, draws)
    out = np.full(len(groups), "train", dtype=object)
    out[np.isin(groups, test_g)] = "test"
    out[np.isin(groups, val_g)] = "val"
    if not (out == "train").any():
        raise DataError("the grouped split left no training frames")
    return out.astype(str)


def split_table(ds: SegDataset, split: np.ndarray) -> "pd.DataFrame":
    import pandas as pd
    return pd.DataFrame({"id": ds.ids, "frame": [frame_number(s) for s in ds.ids],
                         "group": ds.groups if ds.groups is not None else -1,
                         "split": split, "foreground": ds.masks.reshape(len(ds), -1).mean(1)})


def save_split(path: str | os.PathLike, ds: SegDataset, split: np.ndarray) -> Path:
    """The split as CSV (``id, frame, group, split, foreground``), atomically."""
    write_csv(path, split_table(ds, split))
    return Path(path)


def apply_split(ds: SegDataset, split: np.ndarray | Sequence[str]) -> SegDataset:
    split = np.asarray(split)
    if len(split) != len(ds):
        raise DataError(f"split of {len(split)} rows for {len(ds)} frames")
    return ds.with_splits({s: np.flatnonzero(split == s) for s in ("train", "val", "test")})


def read_split(path: str | os.PathLike, ds: SegDataset) -> SegDataset:
    """Apply a split CSV written by :func:`save_split` (matched by frame id)."""
    import pandas as pd
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    t = pd.read_csv(path, dtype={"id": str})
    for c in ("id", "split"):
        if c not in t:
            raise DataError(f"{path}: column '{c}' missing (columns: {list(t.columns)})")
    lookup = dict(zip(t["id"], t["split"]))
    missing = [i for i in ds.ids if i not in lookup]
    if missing:
        raise DataError(f"{path}: frame '{missing[0]}' of {ds.source} not in the split file")
    return apply_split(ds, np.array([lookup[i] for i in ds.ids]))


def cvc_clinicdb(size: int | None = None, root: str | os.PathLike | None = None,
                 n_test: int = 121, n_val: int = 60, seed: int = 0) -> SegDataset:
    """CVC-ClinicDB (``<data root>/segmentation/CVC-ClinicDB_256``) at ``size`` with its
    published sequence groups and the seeded grouped split (``meta['split']`` holds the
    per-frame labels)."""
    root = Path(root) if root is not None else paths.data_root() / "segmentation" / "CVC-ClinicDB_256"
    ds = load_segmentation_folder(root, size, name="cvc_clinicdb")
    groups = published_sequences(ds.ids)
    ds = ds.replace(groups=groups)
    split = grouped_split(groups, n_test, n_val, seed)
    out = apply_split(ds, split)
    out.meta.update({"split": split, "split_seed": seed, "n_test": n_test, "n_val": n_val})
    return out
