"""Augmentation methods behind one interface (:mod:`.base`: :class:`Augmentation`, the
registry, the equal-budget rule, offline banks), one file per method: :mod:`.no_aug`,
:mod:`.standard_aug`, :mod:`.mixup`, :mod:`.saliencymix`, :mod:`.genmix`, :mod:`.dba`,
:mod:`.meddiffusemix`.

Imports io and saliency (Grad-CAM for MedDiffuseMix's check); a diffusion model arrives
through the bank context. Never imports the trainer, runs or studies.
"""
from .base import (Augmentation, BankContext, OfflineAugmentation, get, methods, register,
                   sample_beta)
from .dba import DBA, fractal_images, hybrid_masks
from .genmix import GenMix
from .meddiffusemix import (MDM_STATUS, MedDiffuseMix, adaptive_alpha, blend, random_mask_like,
                            regions, same_class_partners, smooth_mask)
from .mixup import Mixup
from .no_aug import NoAug
from .saliencymix import SaliencyMix, box_masks, opencv_saliency, saliency_boxes
from .standard_aug import StandardAug

__all__ = ["Augmentation", "BankContext", "OfflineAugmentation", "get", "methods", "register",
           "sample_beta", "DBA", "fractal_images", "hybrid_masks", "GenMix", "MDM_STATUS",
           "MedDiffuseMix", "adaptive_alpha", "blend", "random_mask_like", "regions",
           "same_class_partners", "smooth_mask", "Mixup", "NoAug", "SaliencyMix", "box_masks",
           "opencv_saliency", "saliency_boxes", "StandardAug"]
