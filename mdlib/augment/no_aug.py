"""No Aug: intensity scaling to [0, 1] only (the trainer does it for every method)."""
from __future__ import annotations

from .base import Augmentation, register


@register
class NoAug(Augmentation):
    """Intensity scaling to [0, 1] only (done by the trainer for every method)."""
    name = "no_aug"

