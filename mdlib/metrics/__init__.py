"""Metrics. :mod:`.classification`: ACC, precision / recall / F1, AUC (binary and macro
one-vs-rest), ECE. :mod:`.segmentation`: Dice, IoU, sensitivity, FNR, specificity per image and pooled,
lesion-level detection of small lesions.

Imports numpy / scikit-learn only, nothing else from mdlib.
"""
from .classification import METRICS, auc, classification_metrics, expected_calibration_error, mean_std
from . import segmentation

__all__ = ["METRICS", "auc", "classification_metrics", "expected_calibration_error", "mean_std",
           "segmentation"]
