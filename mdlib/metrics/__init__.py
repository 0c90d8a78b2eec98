"""Metrics. :mod:`.classification`: ACC, precision / recall / F1, AUC (binary and macro
one-vs-rest), ECE. Segmentation metrics go in a module of their own beside it.

Imports numpy / scikit-learn only, nothing else from mdlib.
"""
from .classification import METRICS, auc, classification_metrics, expected_calibration_error, mean_std

__all__ = ["METRICS", "auc", "classification_metrics", "expected_calibration_error", "mean_std"]
