"""Binary segmentation metrics, per image and pooled, and lesion-level detection.

Per image (``pred``, ``gt``: binary ``(N, H, W)``; vectorised over the batch):

* Dice ``2|P∩G| / (|P|+|G|)``, IoU ``|P∩G| / |P∪G|`` (both 1 when P and G are empty);
* sensitivity ``TP / (TP+FN)`` (NaN without foreground), false-negative rate
  ``1 - sensitivity``, specificity ``TN / (TN+FP)``, precision ``TP / (TP+FP)`` (NaN
  without a predicted pixel).

Pooled: the same formulas on the counts summed over all images (smp's "micro").

Lesions
-------
A **lesion** is an 8-connected component of a ground-truth mask with at least
``min_area_frac`` of the frame's pixels (smaller specks are JPEG noise at 256 px; default
0.05%, i.e. a few pixels at 96 px). A lesion is **small** when its area is below
``small_frac`` of the frame (default 3%, about the first quartile of CVC-ClinicDB lesion
areas; 276 px at 96 px, an equivalent diameter under a fifth of the frame width). A
lesion is **detected** when the IoU between it and the union of the predicted components
that touch it is at least ``detect_iou`` (default 0.5): a prediction must both find and
roughly delineate it, and one large blob over a small lesion does not count.
Lesion-level sensitivity is detected / all lesions of the group; FNR its complement.
"""
from __future__ import annotations

import numpy as np

SMALL_FRAC = 0.03
MIN_AREA_FRAC = 0.0005
DETECT_IOU = 0.5
PER_IMAGE = ("dice", "iou", "sensitivity", "fnr", "specificity", "precision")


def _binary(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{name}: expected (N, H, W) or (H, W), got shape {a.shape}")
    if a.dtype != bool:
        u = np.unique(a)
        if not np.isin(u, (0, 1)).all():
            raise ValueError(f"{name}: not binary (values {u[:5]}...); threshold it first")
        a = a.astype(bool)
    return a


def confusion(pred, gt) -> dict[str, np.ndarray]:
    """Per-image TP, FP, FN, TN (int64 arrays of length N)."""
    p, g = _binary(pred, "pred"), _binary(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} differ in shape")
    n = len(p)
    p, g = p.reshape(n, -1), g.reshape(n, -1)
    tp = (p & g).sum(1)
    fp = (p & ~g).sum(1)
    fn = (~p & g).sum(1)
    tn = p.shape[1] - tp - fp - fn
    return {"tp": tp.astype(np.int64), "fp": fp.astype(np.int64), "fn": fn.astype(np.int64),
            "tn": tn.astype(np.int64)}


def _ratio(a, b, empty: float) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    out = np.full(np.broadcast(a, b).shape, empty, dtype=float)
    np.divide(a, b, out=out, where=b > 0)
    return out


def from_counts(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    dice = _ratio(2 * np.asarray(tp), 2 * np.asarray(tp) + fp + fn, 1.0)
    iou = _ratio(tp, np.asarray(tp) + fp + fn, 1.0)
    sens = _ratio(tp, np.asarray(tp) + fn, np.nan)
    return {"dice": dice, "iou": iou, "sensitivity": sens, "fnr": 1.0 - sens,
            "specificity": _ratio(tn, np.asarray(tn) + fp, np.nan),
            "precision": _ratio(tp, np.asarray(tp) + fp, np.nan)}


def per_image(pred, gt) -> dict[str, np.ndarray]:
    """Per-image Dice, IoU, sensitivity, FNR, specificity, precision (module docstring)."""
    c = confusion(pred, gt)
    return from_counts(c["tp"], c["fp"], c["fn"], c["tn"])


def pooled(pred, gt) -> dict[str, float]:
    """The metrics of the counts summed over all images."""
    c = {k: v.sum() for k, v in confusion(pred, gt).items()}
    return {k: float(v) for k, v in from_counts(c["tp"], c["fp"], c["fn"], c["tn"]).items()}


def threshold(prob, t: float = 0.5) -> np.ndarray:
    return np.asarray(prob) >= t


def summary(prob_or_pred, gt, t: float = 0.5) -> dict[str, float]:
    """Mean of the per-image metrics (``<m>``) and pooled metrics (``pooled_<m>``)."""
    pred = prob_or_pred if np.asarray(prob_or_pred).dtype == bool else threshold(prob_or_pred, t)
    pi = per_image(pred, gt)
    out = {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in pi.items()}
    out.update({f"pooled_{k}": v for k, v in pooled(pred, gt).items()})
    return out


def lesions(gt2d, min_area_frac: float = MIN_AREA_FRAC) -> tuple[np.ndarray, int]:
    """8-connected components of one mask with at least ``min_area_frac`` of its pixels:
    ``(label image with 1..k, k)``."""
    from scipy import ndimage as ndi
    g = np.asarray(gt2d).astype(bool)
    lab, k = ndi.label(g, structure=np.ones((3, 3), int))
    if k == 0:
        return lab, 0
    areas = np.bincount(lab.ravel(), minlength=k + 1)[1:]
    keep = np.flatnonzero(areas >= min_area_frac * g.size) + 1
    remap = np.zeros(k + 1, dtype=np.int64)
    remap[keep] = np.arange(1, len(keep) + 1)
    return remap[lab], int(len(keep))


def lesion_table(pred, gt, small_frac: float = SMALL_FRAC, detect_iou: float = DETECT_IOU,
                 min_area_frac: float = MIN_AREA_FRAC):
    """One row per ground-truth lesion: ``image, lesion, area_px, area_frac, small, iou,
    detected`` (module docstring for the rules). Returns a DataFrame."""
    import pandas as pd
    from scipy import ndimage as ndi
    p, g = _binary(pred, "pred"), _binary(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} differ in shape")
    rows = []
    s8 = np.ones((3, 3), int)
    for i in range(len(g)):
        lab, k = lesions(g[i], min_area_frac)
        if k == 0:
            continue
        plab, pk = ndi.label(p[i], structure=s8)
        npx = g[i].size
        for j in range(1, k + 1):
            les = lab == j
            touching = np.unique(plab[les])
            touching = touching[touching > 0]
            pu = np.isin(plab, touching) if len(touching) else np.zeros_like(les)
            inter = (les & pu).sum()
            union = (les | pu).sum()
            iou = inter / union if union else 0.0
            area = int(les.sum())
            rows.append({"image": i, "lesion": j, "area_px": area, "area_frac": area / npx,
                         "small": area < small_frac * npx, "iou": float(iou),
                         "detected": bool(iou >= detect_iou)})
    return pd.DataFrame(rows, columns=["image", "lesion", "area_px", "area_frac", "small",
                                       "iou", "detected"])


def small_lesion_metrics(pred, gt, small_frac: float = SMALL_FRAC,
                         detect_iou: float = DETECT_IOU, min_area_frac: float = MIN_AREA_FRAC
                         ) -> dict[str, float]:
    """Lesion-level detection of small lesions: ``n_small``, ``sensitivity``, ``fnr``, and
    the pixel specificity ``TN / (TN + FP)`` over the frames that hold a small lesion
    (``specificity``); the same sensitivity for all lesions (``sensitivity_all``)."""
    t = lesion_table(pred, gt, small_frac, detect_iou, min_area_frac)
    sm = t[t.small]
    out = {"n_small": int(len(sm)), "n_lesions": int(len(t)),
           "sensitivity": float(sm.detected.mean()) if len(sm) else float("nan"),
           "sensitivity_all": float(t.detected.mean()) if len(t) else float("nan")}
    out["fnr"] = 1.0 - out["sensitivity"]
    imgs = np.unique(sm.image.to_numpy()) if len(sm) else np.array([], int)
    if len(imgs):
        c = confusion(np.asarray(pred)[imgs], np.asarray(gt)[imgs])
        out["specificity"] = float(c["tn"].sum() / (c["tn"].sum() + c["fp"].sum()))
    else:
        out["specificity"] = float("nan")
    return out
