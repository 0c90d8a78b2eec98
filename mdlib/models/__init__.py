"""Networks. :mod:`.classifiers`: the small CNN and the timm backbones (each naming its
Grad-CAM layer; ``forward_features`` / ``forward_head`` for penultimate features).
:mod:`.segmentation`: the smp U-Net, the small AutoencoderKL (and pretrained loading),
the SDSeg-style latent segmenter and the generator's inpainting UNet2DConditionModel.

Imports torch / timm only, nothing else from mdlib.
"""
from .classifiers import (BACKBONES, SMALL_INPUT, SmallCNN, build_model, cam_layer, count_params,
                          embed, reshape_transform)
from .segmentation import (AEConfig, InpaintConfig, LatentCodec, LatentSegConfig, LatentSegmenter,
                           PixelSegmenter, WeightsUnavailable, build_autoencoder,
                           build_inpaint_unet, build_unet, load_pretrained_autoencoder)

__all__ = ["BACKBONES", "SMALL_INPUT", "SmallCNN", "build_model", "cam_layer", "count_params",
           "embed", "reshape_transform",
           "AEConfig", "InpaintConfig", "LatentCodec", "LatentSegConfig", "LatentSegmenter",
           "PixelSegmenter", "WeightsUnavailable", "build_autoencoder", "build_inpaint_unet",
           "build_unet", "load_pretrained_autoencoder"]
