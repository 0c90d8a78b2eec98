"""Training loops. :mod:`.classification`: train on the training split with a pluggable
augmentation (:mod:`mdlib.augment`'s interface), select on validation AUC, test once;
seeded and deterministic on CPU. :mod:`.checkpoints`: safetensors. :mod:`.segmentation`:
segmenters on a step budget with paired image / mask augmentation, selected on validation
Dice, tested once, resumable.

Imports data, models, metrics, augment (the interface only) and io; never runs or studies.
"""
from .checkpoints import load_checkpoint, save_checkpoint
from .classification import (OPTIMIZERS, SCHEDULERS, TrainConfig, TrainResult, predict_proba,
                             resolve_device, seed_everything, soft_cross_entropy,
                             train_classifier, train_guidance_classifier)
from .segmentation import (PairedAugment, SegTrainConfig, SegTrainResult, StepCheckpoint,
                           predict_masks, train_segmenter)

__all__ = ["load_checkpoint", "save_checkpoint", "OPTIMIZERS", "SCHEDULERS", "TrainConfig",
           "TrainResult", "predict_proba", "resolve_device", "seed_everything",
           "soft_cross_entropy", "train_classifier", "train_guidance_classifier",
           "PairedAugment", "SegTrainConfig", "SegTrainResult", "StepCheckpoint",
           "predict_masks", "train_segmenter"]
