"""Networks. :mod:`.classifiers`: the small CNN and the timm backbones (each naming its
Grad-CAM layer; ``forward_features`` / ``forward_head`` for penultimate features).
Segmentation networks go in a module of their own beside it.

Imports torch / timm only, nothing else from mdlib.
"""
from .classifiers import (BACKBONES, SMALL_INPUT, SmallCNN, build_model, cam_layer, count_params,
                          embed, reshape_transform)

__all__ = ["BACKBONES", "SMALL_INPUT", "SmallCNN", "build_model", "cam_layer", "count_params",
           "embed", "reshape_transform"]
