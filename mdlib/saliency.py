"""Saliency maps for MedDiffuseMix: batched Grad-CAM, a per-split cache, other CAM
variants, and the guidance classifier.

Grad-CAM (:func:`gradcam`)
--------------------------
``S(x)`` of METHODS.md section 1, step 1. For an image ``x``, a target class ``k`` and a
target layer with activations ``A`` of shape ``(C, h, w)``:

* ``w_c = mean_{i,j} d y_k / d A_c[i, j]`` (spatial mean of the gradient of the target
  *logit*, not a softmax probability);
* ``cam = ReLU(sum_c w_c A_c)``;
* then exactly pytorch-grad-cam's ``GradCAM`` post-processing (``BaseCAM`` and
  ``utils.image.scale_cam_image``), in this order: per-image min-max normalisation
  ``(cam - min) / (1e-7 + max)``, bilinear resize to the input size (``cv2.resize``
  ``INTER_LINEAR``, which is half-pixel bilinear, i.e. ``F.interpolate(...,
  mode="bilinear", align_corners=False)``), and a second per-image min-max normalisation
  with the same ``1e-7``. A constant map therefore gives all zeros (never NaN), and the
  maximum of a non-constant map is ``1 / (1 + 1e-7)``. Values lie in ``[0, 1]``.

The result matches ``pytorch_grad_cam.GradCAM(model, [layer], reshape_transform)`` with
``ClassifierOutputTarget`` targets to float32 rounding (the tests check <= 1e-3), but:

* the whole batch goes through **one** forward and **one** backward pass (optionally in
  chunks of ``batch_size``), with each image's own target class (the sum of the target
  logits is differentiated; in eval mode images do not interact, so each image gets the
  gradient of its own logit);
* the backward pass covers only the part of the network *after* the target layer: the
  parameters' ``requires_grad`` is switched off for the call (and restored), and a
  forward hook replaces the layer's output by a detached leaf that requires grad, so no
  autograd graph is recorded before the layer, no parameter gradient is computed, and
  ``torch.autograd.grad`` returns only ``dS/dA``. ``.grad`` of the parameters is never
  touched;
* everything stays on the model's device (resize with ``F.interpolate``, vectorised
  normalisation); no NumPy round trip, no loop over images;
* the model is put in eval mode for the call (BN running statistics, no dropout) and
  every submodule's previous mode is restored afterwards.

ViT / Swin layers give token activations; the model's ``reshape_transform`` (see
:mod:`mdlib.models`) turns both the activations and their gradients into ``(B, C, h, w)``,
as pytorch-grad-cam does.

Per-split cache (:func:`compute_split_saliency`)
------------------------------------------------
Maps for a whole split (each image with its own label as target) are computed once and
stored as float16 in an ``.npz`` file (``maps`` and the ``key``), written atomically
(``np.savez`` to a temporary file in the same folder, then ``os.replace``) and read with
``np.load(..., allow_pickle=False)``. The key (:func:`saliency_key`) is a SHA-256 of the
guidance model's ``state_dict`` (parameters *and* buffers such as BN statistics), its
class and CAM layer, the images (float32 bytes and shape), the targets, and the version
of this algorithm; a different model or different images give a different key, hence
a different file (``cache_path`` a folder) or a recomputation (``cache_path`` a file).
The first call returns the float16-rounded maps too, so a fresh computation and a cache
hit return identical tensors.

Other CAMs (:func:`cam_variant`)
--------------------------------
A thin wrapper around pytorch-grad-cam's other classes by name (Grad-CAM++, HiResCAM,
XGrad-CAM, EigenCAM, EigenGrad-CAM, LayerCAM, ScoreCAM, AblationCAM, ...), using the
model's CAM layer and reshape transform, restoring the model's modes and parameter
``.grad`` afterwards, for comparisons and ablations (slow: it is the library's own code).

The guidance classifier itself is trained by :func:`mdlib.train.train_guidance_classifier`
(this module imports models, data and io only; the trainer and augmentations import it).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import models as models_mod
from .io import atomic_path

log = logging.getLogger(__name__)

#: bump when the saliency computation changes, so old cache files are not reused
ALGORITHM_VERSION = "gradcam-v1"

#: pytorch-grad-cam's epsilon in ``scale_cam_image``
_EPS = 1e-7


# --------------------------------------------------------------------------- helpers
def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _check_x(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"x has shape {tuple(x.shape)}; expected a 4-D batch (B, C, H, W)")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch")
    if not x.is_floating_point():
        raise ValueError(f"x has dtype {x.dtype}; expected a floating-point image batch "
                         "(convert uint8 images with mdlib.data.to_tensor)")
    return x


def _check_targets(targets: Any, n: int) -> torch.Tensor | None:
    if targets is None:
        return None
    t = torch.as_tensor(targets)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"targets have dtype {t.dtype}; expected integer class indices")
    if t.ndim != 1:
        raise ValueError(f"targets have shape {tuple(t.shape)}; expected (B,) = ({n},)")
    if len(t) != n:
        raise ValueError(f"{len(t)} targets for a batch of {n} images")
    if len(t) and int(t.min()) < 0:
        raise ValueError(f"targets hold a negative class index ({int(t.min())})")
    return t.long()


def _resolve_layer(model: nn.Module, layer: nn.Module | str | None,
                   reshape: Callable | None) -> tuple[nn.Module, Callable | None, str]:
    default = None
    if getattr(model, "cam_layer", None) is not None:
        default = models_mod.cam_layer(model)
    if layer is None:
        if default is None:
            raise ValueError("the model has no 'cam_layer' attribute (build it with "
                             "mdlib.models.build_model) and no layer= was given")
        layer = default
    elif isinstance(layer, str):
        layer = model.get_submodule(layer)
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be an nn.Module or a dotted name, got {type(layer).__name__}")
    if reshape is None and layer is default:
        reshape = models_mod.reshape_transform(model)
    name = next((n for n, m in model.named_modules() if m is layer), None)
    if name is None:
        raise ValueError("layer is not a submodule of the model")
    return layer, reshape, name or "<model>"


class _ModelState:
    """Eval mode and frozen parameters for the duration of a ``with`` block; restores every
    submodule's mode and every parameter's ``requires_grad`` (and ``.grad``) on exit."""

    def __init__(self, model: nn.Module, freeze: bool = True):
        self.model, self.freeze = model, freeze

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.params = [(p, p.requires_grad, p.grad) for p in self.model.parameters()]
        self.model.eval()
        if self.freeze:
            for p, _, _ in self.params:
                p.requires_grad_(False)
        return self.model

    def __exit__(self, *exc) -> None:
        for m, mode in self.modes:
            m.training = mode
        for p, rg, grad in self.params:
            p.requires_grad_(rg)
            p.grad = grad


def _minmax(cam: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's per-image ``(img - min) / (1e-7 + max)`` over the last two dims."""
    cam = cam - cam.amin(dim=(-2, -1), keepdim=True)
    return cam / (_EPS + cam.amax(dim=(-2, -1), keepdim=True))


def _postprocess(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) ReLU'd cam -> (B, H, W): normalise, bilinear resize, normalise
    (the order of pytorch-grad-cam's ``compute_cam_per_layer`` + ``aggregate_multi_layers``)."""
    cam = _minmax(cam.float())
    if tuple(cam.shape[-2:]) != tuple(size):
        cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return _minmax(cam)


# --------------------------------------------------------------------------- Grad-CAM
def gradcam(model: nn.Module, x: torch.Tensor, targets: Any = None,
            layer: nn.Module | str | None = None, reshape: Callable | None = None,
            batch_size: int | None = None) -> torch.Tensor:
    """Grad-CAM maps of a batch: float32 ``(B, H, W)`` in [0, 1] on the model's device.

    ``targets``: class index per image (``(B,)`` integers); default: the predicted class.
    ``layer``: the target module (or its dotted name); default: ``model.cam_layer``, in
    which case ``reshape`` defaults to the model's :func:`mdlib.models.reshape_transform`.
    ``batch_size``: process in chunks of this many images (default: all at once, one
    forward and one backward pass). See the module docstring for the exact definition.
    """
    x = _check_x(x)
    n, size = x.shape[0], (int(x.shape[-2]), int(x.shape[-1]))
    t_all = _check_targets(targets, n)
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    layer, reshape, layer_name = _resolve_layer(model, layer, reshape)
    device = _model_device(model)
    step = n if batch_size is None else int(batch_size)

    captured: list[torch.Tensor] = []

    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"layer '{layer_name}' returns {type(output).__name__}; "
                            "Grad-CAM needs a tensor output")
        if captured:
            raise RuntimeError(f"layer '{layer_name}' is called more than once per forward "
                               "pass; choose a layer that runs once")
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf.clone()  # a clone, so in-place ops downstream never touch the leaf

    out: list[torch.Tensor] = []
    handle = layer.register_forward_hook(hook)
    try:
        with _ModelState(model), torch.inference_mode(False), torch.enable_grad():
            for i in range(0, n, step):
                xb = x[i:i + step].detach().to(device)
                captured.clear()
                logits = model(xb)
                if not captured:
                    raise RuntimeError(f"layer '{layer_name}' was not called in the forward pass")
                if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                    raise ValueError("the model must return logits of shape (B, K); got "
                                     f"{getattr(logits, 'shape', type(logits).__name__)}")
                k = logits.shape[1]
                if t_all is None:
                    tb = logits.detach().argmax(1)
                else:
                    tb = t_all[i:i + step].to(logits.device).clone()  # never an inference tensor
                    if int(tb.max()) >= k:
                        raise ValueError(f"target class {int(tb.max())} out of range for a "
                                         f"model with {k} outputs")
                act = captured[0]
                score = logits.gather(1, tb[:, None]).sum()
                if not score.requires_grad:
                    raise ValueError(f"the model's output does not depend on layer '{layer_name}'")
                (grad,) = torch.autograd.grad(score, act, allow_unused=True)
                if grad is None:
                    raise ValueError(f"the model's output does not depend on layer '{layer_name}'")
                act = act.detach()
                if reshape is not None:
                    act, grad = reshape(act), reshape(grad)
                if act.ndim != 4:
                    raise ValueError(f"activations of layer '{layer_name}' have shape "
                                     f"{tuple(act.shape)}; expected (B, C, h, w) (pass reshape= "
                                     "for token outputs)")
                act, grad = act.float(), grad.float()
                weights = grad.mean(dim=(2, 3))
                cam = torch.relu((weights[:, :, None, None] * act).sum(1))
                out.append(_postprocess(cam, size))
                del logits, score, grad, act
    finally:
        handle.remove()
        captured.clear()
    return out[0] if len(out) == 1 else torch.cat(out)


# --------------------------------------------------------------------------- cache
def _hash_tensor(h: "hashlib._Hash", t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous().reshape(-1)
    h.update(f"{t.dtype}:{t.numel()};".encode())
    if t.numel():
        h.update(t.view(torch.uint8).numpy().data)


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's class, CAM layer and every ``state_dict`` entry (name,
    dtype, shape, bytes)."""
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}|"
             f"{getattr(model, 'cam_layer', None)}|{getattr(model, 'cam_reshape', None)}|".encode())
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:".encode())
        _hash_tensor(h, t)
    return h.hexdigest()


def saliency_key(model: nn.Module, x: torch.Tensor, targets: Any) -> str:
    """Cache key of a split's maps: model fingerprint + images + targets + algorithm."""
    h = hashlib.sha256()
    h.update(f"{ALGORITHM_VERSION}|{model_fingerprint(model)}|{tuple(x.shape)}|".encode())
    _hash_tensor(h, x.float())
    _hash_tensor(h, torch.as_tensor(targets).long())
    return h.hexdigest()


def _as_images(x: Any) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.ndim == 4 and x.dtype == np.uint8 and x.shape[-1] in (1, 3):
            from .data import to_tensor
            return to_tensor(x)  # ImageDataset layout: uint8 (N, H, W, C)
        x = torch.from_numpy(np.ascontiguousarray(x))
    return _check_x(x)


def _cache_file(cache_path: str | os.PathLike, key: str) -> Path:
    p = Path(cache_path)
    if p.suffix == ".npz":
        return p
    return p / f"saliency_{key[:24]}.npz"


def _load_cached(path: Path, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                log.info("%s: saliency cache holds another key; recomputing", path)
                return None
            maps = np.asarray(z["maps"])
    except Exception as e:  # truncated / corrupt / foreign file: recompute, overwrite
        log.warning("%s: unreadable saliency cache (%s: %s); recomputing", path,
                    type(e).__name__, e)
        return None
    if maps.shape != shape or maps.dtype != np.float16:
        log.warning("%s: cached maps have shape %s / dtype %s, expected %s float16; "
                    "recomputing", path, maps.shape, maps.dtype, shape)
        return None
    return maps


def compute_split_saliency(model: nn.Module, x: Any, y: Any, batch_size: int = 256,
                           cache_path: str | os.PathLike | None = None,
                           layer: nn.Module | str | None = None,
                           reshape: Callable | None = None) -> torch.Tensor:
    """Grad-CAM maps of a whole split, each image with its own label ``y`` as target:
    float32 ``(N, H, W)`` on the CPU (values rounded to float16, as stored).

    ``x``: float tensor ``(N, C, H, W)`` in [0, 1], or an ImageDataset-style uint8 array
    ``(N, H, W, C)``. ``cache_path``: a folder (the file is ``saliency_<key>.npz`` in it)
    or an ``.npz`` file path (reused only if its stored key matches); ``None``: no cache.
    """
    x = _as_images(x)
    y = _check_targets(y, len(x))
    if y is None:
        raise ValueError("y (the labels used as Grad-CAM targets) is required")
    shape = (len(x), int(x.shape[-2]), int(x.shape[-1]))
    key = path = None
    if cache_path is not None:
        key = saliency_key(model, x, y)
        path = _cache_file(cache_path, key)
        maps = _load_cached(path, key, shape)
        if maps is not None:
            log.info("saliency maps loaded from %s", path)
            return torch.from_numpy(maps).float()
    out = np.empty(shape, dtype=np.float16)
    step = max(1, int(batch_size))
    for i in range(0, len(x), step):
        s = gradcam(model, x[i:i + step], y[i:i + step], layer=layer, reshape=reshape)
        out[i:i + step] = s.cpu().numpy().astype(np.float16)
    if path is not None:
        with atomic_path(path) as tmp:
            np.savez(tmp, maps=out, key=np.array(key))
        log.info("saliency maps written to %s", path)
    return torch.from_numpy(out).float()


# --------------------------------------------------------------------------- variants
def _cam_classes() -> dict[str, type]:
    import pytorch_grad_cam as pgc
    names = {
        "gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "gradcamplusplus": "GradCAMPlusPlus",
        "hirescam": "HiResCAM", "xgradcam": "XGradCAM", "eigencam": "EigenCAM",
        "eigengradcam": "EigenGradCAM", "layercam": "LayerCAM", "scorecam": "ScoreCAM",
        "ablationcam": "AblationCAM", "gradcamelementwise": "GradCAMElementWise",
        "kpcacam": "KPCA_CAM", "randomcam": "RandomCAM",
    }
    return {k: getattr(pgc, v) for k, v in names.items() if hasattr(pgc, v)}


def cam_variant(model: nn.Module, x: torch.Tensor, targets: Any = None,
                method: str = "gradcam++", layer: nn.Module | str | None = None,
                reshape: Callable | None = None) -> torch.Tensor:
    """A pytorch-grad-cam CAM by name (see :func:`available_cams`) at the model's CAM layer:
    float32 ``(B, H, W)`` in [0, 1] on the model's device. ``targets`` default: the
    predicted class. The model's modes, ``requires_grad`` flags and ``.grad`` are
    restored afterwards."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    classes = _cam_classes()
    norm = str(method).lower().replace("-", "").replace("_", "").replace(" ", "")
    if norm not in classes:
        raise ValueError(f"unknown CAM method '{method}'; known: {sorted(classes)}")
    x = _check_x(x)
    t = _check_targets(targets, len(x))
    layer, reshape, _ = _resolve_layer(model, layer, reshape)
    cam_targets = None if t is None else [ClassifierOutputTarget(int(c)) for c in t]
    with _ModelState(model, freeze=False):
        with classes[norm](model=model, target_layers=[layer], reshape_transform=reshape) as cam:
            maps = cam(input_tensor=x.detach(), targets=cam_targets)
    return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).to(_model_device(model))


def available_cams() -> list[str]:
    return sorted(_cam_classes())
