"""Classification metrics on the test split (scikit-learn), and calibration.

Binary tasks: precision / recall / F1 of the positive class (``positive``: the disease
class, e.g. malignant = label 0 in BreastMNIST; see ``ImageDataset.positive``) and the
AUC (the same for either class). Multi-class tasks: macro precision / recall / F1 and macro one-vs-rest AUC.
Expected calibration error (ECE): equal-width bins over the top-class confidence.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import (accuracy_score, f1_score, precision_score, recall_score,
                             roc_auc_score)

METRICS = ("acc", "precision", "recall", "f1", "auc", "ece")


def _check(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != len(y) or probs.shape[1] < 2:
        raise ValueError(f"probs has shape {probs.shape}; expected (N={len(y)}, n_classes>=2)")
    if not np.isfinite(probs).all():
        raise ValueError("probs holds non-finite values")
    return y, probs


def auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Binary: AUC of P(class 1). Multi-class: macro one-vs-rest AUC. NaN if undefined."""
    y, probs = _check(y, probs)
    if len(np.unique(y)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    labels = np.arange(probs.shape[1])
    p = probs / probs.sum(1, keepdims=True)
    present = np.unique(y)
    if len(present) < probs.shape[1]:  # ovr AUC only over classes present in y
        scores = [roc_auc_score(y == c, p[:, c]) for c in present]
        return float(np.mean(scores))
    return float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels))


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    y, probs = _check(y, probs)
    conf = probs.max(1)
    correct = (probs.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    nz = counts > 0
    return float(np.sum(np.abs(acc_sum[nz] - conf_sum[nz])) / len(y))


def classification_metrics(y: np.ndarray, probs: np.ndarray, positive: int | None = 1
                           ) -> dict[str, float]:
    """ACC, precision / recall / F1 (binary: of class ``positive``; multi-class: macro),
    AUC, ECE and the number of images."""
    y, probs = _check(y, probs)
    pred = probs.argmax(1)
    binary = probs.shape[1] == 2
    avg = "binary" if binary else "macro"
    kw = dict(average=avg, zero_division=0)
    if binary:
        if positive not in (0, 1):
            raise ValueError(f"positive={positive!r}: a binary task's positive class is 0 or 1")
        kw["pos_label"] = int(positive)
    else:
        kw["labels"] = np.arange(probs.shape[1])
    return {
        "acc": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, **kw)),
        "recall": float(recall_score(y, pred, **kw)),
        "f1": float(f1_score(y, pred, **kw)),
        "auc": auc(y, probs),
        "ece": expected_calibration_error(y, probs),
        "n": int(len(y)),
    }


def mean_std(df, by, metrics=METRICS):
    """Mean and sample std over seeds, one row per group."""
    g = df.groupby(by)[list(metrics)]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_std"))
    out["n_seeds"] = df.groupby(by).size()
    return out.reset_index()
