"""Classifiers: a small CNN that trains in seconds per epoch on two CPU cores, and the
paper's five backbones from timm (ResNet-50, DenseNet-121, EfficientNet-B4, ViT-B/16,
Swin-T), adapted to the image size and channel count, plus ResNet-18 and two CPU-sized
timm variants (``resnet18_slim``, ``vit_mini``: see :data:`_SLIM_KWARGS`).

Every model built here carries two attributes used by the saliency code:

* ``model.cam_layer``: dotted name of the Grad-CAM target layer (the last
  convolutional stage, or the last transformer block's norm for ViT / Swin);
* ``model.cam_reshape``: ``None``, ``"vit"`` or ``"swin"``: how that layer's output is
  turned into an ``(B, C, h, w)`` activation map (see :func:`reshape_transform`).

Every model also exposes ``forward_features(x)`` and ``forward_head(f, pre_logits=True)``
(timm's interface), so :func:`embed` gives penultimate features for t-SNE / Fréchet
distance for any of them.

Size adaptation for CNNs below 128 px: a stride-1 3x3 stem without max-pool (ResNet,
DenseNet) or with the first two stride-2 layers set to stride 1 (EfficientNet), so a
28 px image still ends in a spatial map: 4x4 (ResNet, EfficientNet), 3x3 (DenseNet),
7x7 (small CNN, ViT), 2x2 (Swin-T; its saliency is coarse at 28 px). Size adaptation for transformers (the paper used 224 px): ViT-B/16 uses a patch of
``size // 7`` rounded to 4 / 8 / 16 (28 px -> 4, 64 px -> 8, 224 px -> 16) and Swin-T a patch
of 2 below 128 px (4 above), with timm clamping its 7x7 windows to small feature maps.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

BACKBONES = ("small_cnn", "resnet18", "resnet50", "densenet121", "efficientnet_b4",
             "vit_b16", "swin_t", "resnet18_slim", "vit_mini")

#: timm architectures at reduced width / depth, sized for CPU runs (notebook 12 trains
#: them 18 times per dataset): ResNet-18 with stage widths 16-32-64-128 (0.7 M parameters,
#: CIFAR stem) and a ViT with patch 4 at 28 px, depth 6, width 96, 3 heads (0.7 M).
_SLIM_KWARGS = {
    "resnet18_slim": {"channels": (16, 32, 64, 128)},
    "vit_mini": {"depth": 6, "embed_dim": 96, "num_heads": 3},
}

_TIMM = {
    "resnet18": ("resnet18", "layer4", None),
    "resnet50": ("resnet50", "layer4", None),
    "densenet121": ("densenet121", "features.norm5", None),
    "efficientnet_b4": ("efficientnet_b4", "bn2", None),
    "vit_b16": ("vit_base_patch16_224", "blocks.11.norm1", "vit"),
    "swin_t": ("swin_tiny_patch4_window7_224", "layers.3.blocks.1.norm1", "swin"),
    "resnet18_slim": ("resnet18", "layer4", None),
    "vit_mini": ("vit_tiny_patch16_224", "blocks.5.norm1", "vit"),
}


class SmallCNN(nn.Module):
    """Three conv stages (2 conv-BN-ReLU each, widths w, 2w, 4w), max-pooling between
    stages, global average pooling, dropout and a linear head."""

    def __init__(self, in_chans: int = 1, num_classes: int = 2, width: int = 32,
                 drop: float = 0.3):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True))

        w = width
        self.stage1 = block(in_chans, w)
        self.stage2 = block(w, 2 * w)
        self.stage3 = block(2 * w, 4 * w)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(4 * w, num_classes)
        self.num_features = 4 * w
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stage1(x))
        x = self.pool(self.stage2(x))
        return self.stage3(x)

    def forward_head(self, f: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        f = f.mean(dim=(2, 3))
        return f if pre_logits else self.fc(self.drop(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(name: str, in_chans: int, num_classes: int, img_size: int = 28,
                pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a classifier by name (see :data:`BACKBONES`). ``pretrained=True`` loads
    ImageNet weights through timm (needs internet or a local HF cache)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown model '{name}'; known: {BACKBONES}")
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans={in_chans}: expected 1 or 3")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: expected >= 2")
    if name == "small_cnn":
        if pretrained:
            raise ValueError("small_cnn has no pretrained weights")
        model = SmallCNN(in_chans, num_classes, **kwargs)
        model.cam_layer, model.cam_reshape = "stage3", None
        return model
    import timm
    timm_name, layer, reshape = _TIMM[name]
    extra: dict = dict(_SLIM_KWARGS.get(name, {}))
    if name in ("vit_b16", "vit_mini"):
        extra.update(img_size=img_size, patch_size=4 if img_size <= 32 else 8 if img_size <= 64 else 16)
    elif name == "swin_t":
        extra = dict(img_size=img_size, patch_size=2 if img_size < 128 else 4)
    extra.update(kwargs)
    model = timm.create_model(timm_name, pretrained=pretrained, num_classes=num_classes,
                              in_chans=in_chans, **extra)
    if img_size < SMALL_INPUT:
        _adapt_cnn_stem(name, model, in_chans)
    model.cam_layer, model.cam_reshape = layer, reshape
    return model


#: below this size the CNN stems are made CIFAR-style (see :func:`_adapt_cnn_stem`)
SMALL_INPUT = 128


def _adapt_cnn_stem(name: str, model: nn.Module, in_chans: int) -> None:
    """Small inputs (MedMNIST 28 / 64 px): a stride-1 3x3 stem and no stem max-pool, as
    CIFAR-style ResNets do, so the last stage keeps a spatial map (4x4 at 28 px instead of
    1x1) that Grad-CAM can use. A pretrained stem is replaced (re-initialised)."""
    if name.startswith("resnet"):  # resnet18, resnet50, resnet18_slim
        model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif name == "densenet121":
        f = model.features
        f.conv0 = nn.Conv2d(in_chans, f.conv0.out_channels, 3, 1, 1, bias=False)
        f.pool0 = nn.Identity()
    elif name == "efficientnet_b4":
        model.conv_stem.stride = (1, 1)
        model.blocks[1][0].conv_dw.stride = (1, 1)


def cam_layer(model: nn.Module) -> nn.Module:
    """The Grad-CAM target module of a model built by :func:`build_model`."""
    return model.get_submodule(model.cam_layer)


def reshape_transform(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """pytorch-grad-cam style reshape: token activations -> ``(B, C, h, w)``."""
    kind = getattr(model, "cam_reshape", None)
    if kind is None:
        return None
    if kind == "vit":
        n_prefix = getattr(model, "num_prefix_tokens", 1)

        def vit(t: torch.Tensor) -> torch.Tensor:
            t = t[:, n_prefix:, :]
            side = int(round(t.shape[1] ** 0.5))
            return t.reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)
        return vit
    if kind == "swin":
        return lambda t: t.permute(0, 3, 1, 2)  # timm swin blocks are NHWC
    raise ValueError(f"unknown cam_reshape '{kind}'")


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Penultimate (pre-logits) features, batched, in eval mode."""
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        f = model.forward_features(x[i:i + batch_size])
        out.append(model.forward_head(f, pre_logits=True).flatten(1))
    model.train(was)
    return torch.cat(out)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
