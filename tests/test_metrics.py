"""mdlib.metrics against reference implementations and hand computations: precision /
recall / F1 (of label 1 by default, of label 0 with positive=0; macro for multi-class) against scikit-learn and the
confusion matrix, AUC (binary, macro one-vs-rest, and a class absent from the test split),
ECE with many occupied bins against torchmetrics and the definition."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import (confusion_matrix, f1_score, precision_score, recall_score,
                             roc_auc_score)

from mdlib import metrics


def _probs(n, k, seed, concentration=0.7):
    """Probabilities spread over the whole [1/k, 1] confidence range and labels drawn so
    that the classifier is informative but miscalibrated."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, concentration), n)
    w = p ** 1.5
    y = np.array([rng.choice(k, p=row / row.sum()) for row in w])
    return y, p


def test_binary_precision_recall_f1_of_label_1():
    y, p = _probs(300, 2, 0)
    m = metrics.classification_metrics(y, p)
    pred = p.argmax(1)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["acc"] == pytest.approx((tp + tn) / len(y))
    for fn_, key in ((precision_score, "precision"), (recall_score, "recall"), (f1_score, "f1")):
        assert m[key] == pytest.approx(fn_(y, pred, pos_label=1, average="binary"))
    # the default positive class is label 1, not label 0: the two differ on this data
    assert m["recall"] != pytest.approx(recall_score(y, pred, pos_label=0))
    assert m["n"] == 300
    # positive=0 (BreastMNIST's malignant): the same counts seen from class 0
    m0 = metrics.classification_metrics(y, p, positive=0)
    assert m0["precision"] == pytest.approx(tn / (tn + fn))
    assert m0["recall"] == pytest.approx(tn / (tn + fp))
    assert m0["f1"] == pytest.approx(2 * tn / (2 * tn + fn + fp))
    assert (m0["acc"], m0["auc"], m0["ece"]) == (m["acc"], m["auc"], m["ece"])
    with pytest.raises(ValueError, match="positive"):
        metrics.classification_metrics(y, p, positive=2)


def test_multiclass_macro_precision_recall_f1_with_a_class_never_predicted():
    y, p = _probs(400, 4, 1)
    p[:, 3] *= 0.01                      # class 3 is never the argmax ...
    p /= p.sum(1, keepdims=True)
    pred = p.argmax(1)
    assert 3 not in pred and 3 in y      # ... but occurs in the labels
    m = metrics.classification_metrics(y, p)
    cm = confusion_matrix(y, pred, labels=range(4))
    tp = np.diag(cm).astype(float)
    prec = np.divide(tp, cm.sum(0), out=np.zeros(4), where=cm.sum(0) > 0)  # 0 when never predicted
    rec = tp / cm.sum(1)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(4), where=(prec + rec) > 0)
    assert m["precision"] == pytest.approx(prec.mean())
    assert m["recall"] == pytest.approx(rec.mean())
    assert m["f1"] == pytest.approx(f1.mean())
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro", labels=range(4),
                                             zero_division=0))


def test_auc_binary_and_macro_ovr():
    y, p = _probs(200, 2, 2)
    assert metrics.auc(y, p) == pytest.approx(roc_auc_score(y, p[:, 1]))
    y5, p5 = _probs(300, 5, 3)
    ref = np.mean([roc_auc_score(y5 == c, p5[:, c]) for c in range(5)])
    assert metrics.auc(y5, p5) == pytest.approx(ref)
    assert metrics.auc(y5, p5) == pytest.approx(roc_auc_score(y5, p5, multi_class="ovr"))
    assert np.isnan(metrics.auc(np.zeros(10, int), np.tile([0.4, 0.6], (10, 1))))


def test_multiclass_auc_with_a_class_absent_from_the_test_split():
    """RetinaMNIST-like: 5 classes, grade 4 absent from this test split. The AUC is the
    mean one-vs-rest AUC over the classes present (scikit-learn gives no number here)."""
    y, p = _probs(300, 5, 4)
    keep = y != 4
    y, p = y[keep], p[keep]
    assert set(y) == {0, 1, 2, 3}
    with warnings.catch_warnings():  # scikit-learn gives no number here (NaN or an error)
        warnings.simplefilter("ignore")
        try:
            assert np.isnan(roc_auc_score(y, p, multi_class="ovr", labels=range(5)))
        except ValueError:
            pass
    ref = np.mean([roc_auc_score(y == c, p[:, c]) for c in range(4)])
    got = metrics.auc(y, p)
    assert got == pytest.approx(ref)
    assert metrics.classification_metrics(y, p)["auc"] == pytest.approx(ref)
    # two of five classes present
    two = np.isin(y, (0, 2))
    ref2 = np.mean([roc_auc_score(y[two] == c, p[two, c]) for c in (0, 2)])
    assert metrics.auc(y[two], p[two]) == pytest.approx(ref2)


def _ece_by_definition(y, p, n_bins=15):
    conf, correct = p.max(1), p.argmax(1) == y
    edges = np.linspace(0, 1, n_bins + 1)
    e = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            e += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return e


@pytest.mark.parametrize("k", [2, 5])
def test_ece_with_many_bins_matches_torchmetrics_and_the_definition(k):
    from torchmetrics.classification import MulticlassCalibrationError
    y, p = _probs(600, k, 5 + k)
    conf = p.max(1)
    occupied = len(np.unique(np.ceil(conf * 15)))
    assert occupied >= 7  # the case the constant-confidence tests never reach
    ours = metrics.expected_calibration_error(y, p)
    assert ours == pytest.approx(_ece_by_definition(y, p), abs=1e-12)
    tm = MulticlassCalibrationError(num_classes=k, n_bins=15, norm="l1")(
        torch.from_numpy(p).float(), torch.from_numpy(y))
    assert ours == pytest.approx(float(tm), abs=1e-5)
    # another bin count gives another (definition-matching) value
    assert metrics.expected_calibration_error(y, p, n_bins=5) == \
        pytest.approx(_ece_by_definition(y, p, 5), abs=1e-12)
    assert metrics.classification_metrics(y, p)["ece"] == pytest.approx(ours)


def test_ece_limits():
    # perfectly calibrated constant confidence 0.75 with 75 % accuracy -> 0
    y2 = np.array([1] * 75 + [0] * 25)
    assert metrics.expected_calibration_error(y2, np.tile([0.25, 0.75], (100, 1))) == \
        pytest.approx(0.0)
    # confident and always wrong -> ECE = confidence
    assert metrics.expected_calibration_error(np.zeros(10, int), np.tile([0.1, 0.9], (10, 1))) \
        == pytest.approx(0.9)
