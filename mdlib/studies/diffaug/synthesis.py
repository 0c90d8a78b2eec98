"""Synthesis on "normal tissue" (Sec. 3.3) and the quality gate.

Plan (:func:`plan_sample`, deterministic per sample index ``i`` and pool seed): the target
frame is the ``i``-th of a seeded permutation of the training frames (cycled, so every frame
gets about the same number of variants); a polyp mask is taken from **another** training
frame (its largest lesion, cropped to its bounding box), mirrored with probability 0.5,
scaled by a factor drawn from ``scale`` and moved to a random position where it lies
inside the frame's visible field (frame brightness above 20/255 after a 5x5 mean, eroded
by ``margin_px``) and away from every polyp of the target frame (their masks dilated by
``margin_px``); 40 positions are tried, then the scale shrinks by 0.8 (up to 4 times); a
sample with no position is recorded as unplaced and skipped. Everything is at 96-px
units scaled with the working size.

The prompt (variant ``text``) is composed for the placed mask (size, shape, location) with
the colour and surface words of a random training polyp (:mod:`.prompts`); variant
``single_prompt`` uses the generic prompt, ``no_text`` the empty prompt without guidance
(the unconditional model). The three variants share the plan (targets, masks, positions,
noise seeds): they differ only in the text.

The generator repaints the placed mask dilated by its training ``dilate_px`` (in training
the region was each polyp's mask dilated the same way, so the painted polyp is expected to
fill the mask). The synthetic ground truth is the union of every polyp visible in the
result: the target frame's own polyps (outside the feathered region the frame is
unchanged) and the placed mask.

Gate (Eq. 14): the latent segmenter's mask of the synthetic frame against the **intended**
(placed) mask; because the target frame shows its own polyp, which the segmenter should
find too, pixels within ``margin_px`` of the frame's own polyps are left out of the IoU
(the placed mask never lies there). A sample is accepted when that IoU exceeds ``theta``.

Pools are written part by part (``part_<k>.npz``: uint8 images, masks, intended masks,
gate IoUs, and the records: target and source frame, scale, position, prompt, seed), so a
killed synthesis resumes at the first missing part.
"""
from __future__ import annotations

import numpy as np

from . import prompts as P

VARIANTS = ("text", "single_prompt", "no_text")


def _px(v: float, size: int) -> int:
    return max(1, int(round(v * size / 96)))


def visible_field(frame: np.ndarray, margin_px: float) -> np.ndarray:
    """Pixels of the frame's visible field (module docstring), eroded by ``margin_px``."""
    from scipy import ndimage as ndi
    g = frame.astype(np.float32).mean(-1) / 255.0
    vis = ndi.uniform_filter(g, 5) > 20 / 255
    return ndi.binary_erosion(vis, iterations=_px(margin_px, frame.shape[0]))


def largest_lesion_crop(mask: np.ndarray) -> np.ndarray:
    from mdlib.metrics.segmentation import lesions
    lab, k = lesions(mask)
    if k == 0:
        lab, k = (mask > 0).astype(int), 1
    areas = np.bincount(lab.ravel())[1:]
    les = lab == int(np.argmax(areas)) + 1
    rows, cols = np.flatnonzero(les.any(1)), np.flatnonzero(les.any(0))
    return les[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _resize_mask(crop: np.ndarray, s: float) -> np.ndarray:
    from PIL import Image
    h, w = crop.shape
    nh, nw = max(2, int(round(h * s))), max(2, int(round(w * s)))
    im = Image.fromarray(crop.astype(np.uint8) * 255).resize((nw, nh), Image.Resampling.BILINEAR)
    return np.asarray(im) > 127


def place(crop: np.ndarray, allowed: np.ndarray, rng, scale=(0.6, 1.3), tries: int = 40,
          shrinks: int = 4) -> tuple[np.ndarray | None, dict]:
    """A placed mask (bool, frame size) inside ``allowed`` or ``None``; with its scale and
    top-left position."""
    H, W = allowed.shape
    s = float(rng.uniform(*scale))
    flip = bool(rng.random() < 0.5)
    c = crop[:, ::-1] if flip else crop
    for _ in range(shrinks + 1):
        m = _resize_mask(c, s)
        h, w = m.shape
        if h < H and w < W and m.sum() >= 4:
            for _ in range(tries):
                r0, c0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
                win = allowed[r0:r0 + h, c0:c0 + w]
                if win[m].all():
                    out = np.zeros((H, W), bool)
                    out[r0:r0 + h, c0:c0 + w] = m
                    return out, {"scale": s, "flip": flip, "row0": r0, "col0": c0}
        s *= 0.8
    return None, {"scale": s, "flip": flip, "row0": -1, "col0": -1}


def plan_sample(i: int, train_x: np.ndarray, train_m: np.ndarray, perm: np.ndarray,
                attr_words: list[dict], seed: int, scale=(0.6, 1.3), margin_px: float = 3.0
                ) -> dict:
    """The plan of sample ``i`` (module docstring): target / source frame indices into the
    training split, the placed mask, the three variants' prompts, the noise seed."""
    from scipy import ndimage as ndi
    rng = np.random.default_rng([int(seed), int(i)])
    n = len(train_x)
    j = int(perm[i % n])
    k = int(rng.integers(0, n - 1))
    k = k + 1 if k >= j else k                     # another training frame
    size = train_x.shape[1]
    own = train_m[j] > 0
    allowed = visible_field(train_x[j], margin_px) & ~ndi.binary_dilation(
        own, iterations=_px(margin_px, size))
    placed, geo = place(largest_lesion_crop(train_m[k]), allowed, rng, scale)
    d = int(rng.integers(0, len(attr_words)))
    donor = attr_words[d]
    rec = {"index": int(i), "target": j, "source": k, "donor": d,
           "noise_seed": int(seed) * 1_000_003 + int(i), "placed": placed is not None, **geo}
    if placed is None:
        rec.update({"prompt_text": "", "size_word": "", "area_frac": 0.0})
        return {"record": rec, "mask": None}
    a = P.lesion_attributes(train_x[j], placed)
    w = P.words(a, P.Thresholds(0, 0, 0))          # geometry words; colour / surface from donor
    w.update({"colour": donor["colour"], "surface": donor["surface"], "several": False})
    rec.update({"prompt_text": P.compose(w), "size_word": w["size"], "shape_word": w["shape"],
                "colour_word": w["colour"], "surface_word": w["surface"],
                "location_word": w["location"], "area_frac": float(placed.mean())})
    return {"record": rec, "mask": placed}


def prompt_for(rec: dict, variant: str) -> str:
    if variant == "text":
        return rec["prompt_text"]
    if variant == "single_prompt":
        return P.GENERIC_PROMPT
    if variant == "no_text":
        return P.NULL_PROMPT
    raise ValueError(f"variant={variant!r}: expected one of {VARIANTS}")


def gate_iou(pred: np.ndarray, intended: np.ndarray, own: np.ndarray, margin_px: float = 3.0
             ) -> np.ndarray:
    """Per sample: IoU of the predicted and the intended mask outside the dilated own
    polyps (module docstring). Arrays ``(N, H, W)``, bool-like."""
    from scipy import ndimage as ndi
    pred, intended, own = (np.asarray(a).astype(bool) for a in (pred, intended, own))
    r = _px(margin_px, pred.shape[-1])
    keep = np.stack([~ndi.binary_dilation(o, iterations=r) for o in own])
    inter = (pred & intended & keep).reshape(len(pred), -1).sum(1)
    union = ((pred | intended) & keep).reshape(len(pred), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)
