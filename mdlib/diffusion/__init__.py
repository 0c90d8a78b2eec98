"""Diffusion models and what measures them.

* :mod:`.ddpm`: the class-conditional DDPM (diffusers ``UNet2DModel``, DDPM / DDIM
  schedulers): resumable training (L2 or Huber, EMA, classifier-free guidance through
  class dropout), seeded DDIM sampling, masked (RePaint-style) refinement, image-to-image
  variation;
* :mod:`.fid`: Fréchet distance, the guidance classifier's stage features, InceptionV3
  through torchmetrics / torch-fidelity.

Imports :mod:`mdlib.models` (stage features) and nothing above it.
"""
from .ddpm import (LOSSES, CheckpointError, DiffusionConfig, DiffusionModel, build_unet,
                   check_config, data_fingerprint, has_checkpoint, load, read_loss_curve,
                   read_state, train_diffusion)

__all__ = ["LOSSES", "CheckpointError", "DiffusionConfig", "DiffusionModel", "build_unet",
           "check_config", "data_fingerprint", "has_checkpoint", "load", "read_loss_curve",
           "read_state", "train_diffusion"]
