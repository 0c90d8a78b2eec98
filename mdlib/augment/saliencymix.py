"""SaliencyMix (Uddin et al. 2020) with the saliency box computed per source image and the axes the right way round (the official code uses one source per batch and swaps x / y)."""
from __future__ import annotations

import numpy as np
import torch

from .base import Augmentation, _check, _check_p, _num, register, sample_beta


def opencv_saliency(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's static fine-grained saliency (``cv2.saliency``, opencv-contrib), the
    detector of the official SaliencyMix code, for every image of ``x`` (B,C,H,W) in
    [0, 1] (RGB is converted to grey first). Returns float32 (B, H, W) in [0, 1].
    OpenCV has no batched form of this detector; it is one C++ call per image (~20 us at
    28 px), far below the cost of a training step."""
    import cv2
    det = cv2.saliency.StaticSaliencyFineGrained_create()
    xs = x.detach().float().cpu()
    if xs.shape[1] == 3:
        xs = (0.299 * xs[:, 0] + 0.587 * xs[:, 1] + 0.114 * xs[:, 2])[:, None]
    imgs = (xs[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    out = np.empty(imgs.shape, np.float32)
    for i, im in enumerate(imgs):
        ok, m = det.computeSaliency(im)
        out[i] = m if ok else 0.0
    mx = out.reshape(len(out), -1).max(1)
    out /= np.where(mx > 0, mx, 1.0)[:, None, None]
    return torch.from_numpy(out)


def saliency_boxes(sal: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """One box per image, centred on that image's saliency peak: ``sal`` (B, H, W),
    ``lam`` (B,) in [0, 1]. Box side ``int(W * sqrt(1 - lam))`` by ``int(H * sqrt(1 -
    lam))`` (non-square images keep their aspect), clipped at the border as in the
    official code. Returns int64 (B, 4) = (y0, y1, x0, x1), rows then columns (the
    official code swaps the axes; here the peak's row is a row)."""
    b, h, w = sal.shape
    flat = sal.reshape(b, -1).argmax(1)
    cy, cx = flat // w, flat % w
    r = torch.sqrt(1.0 - lam.clamp(0, 1)).cpu()
    ch, cw = (h * r).long(), (w * r).long()
    y0, y1 = (cy - ch // 2).clamp(0, h), (cy + ch // 2).clamp(0, h)
    x0, x1 = (cx - cw // 2).clamp(0, w), (cx + cw // 2).clamp(0, w)
    return torch.stack([y0, y1, x0, x1], 1)


def box_masks(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Boolean (B, H, W) masks of boxes (y0, y1, x0, x1), vectorised."""
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    y0, y1, x0, x1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    return (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)


@register
class SaliencyMix(Augmentation):
    """SaliencyMix (Uddin et al. 2020): for each image of the batch (the target) a
    source image (a random permutation of the batch) and ``lam ~ Beta(beta, beta)`` per
    batch as in the official code; a patch of side ``sqrt(1 - lam) * W`` centred on the
    peak of the **source's own** OpenCV fine-grained saliency map (computed per image,
    not from one source for the whole batch as the official code does, and with rows
    and columns not swapped) is pasted into the target at the same place. Labels are
    mixed by the true (clipped) patch area of each image."""
    name = "saliencymix"

    def __init__(self, beta: float = 1.0, p: float = 1.0):
        _check(_num(beta) and beta > 0, self.name, f"beta={beta!r} must be > 0")
        params = dict(beta=float(beta))
        if p != 1.0:
            params["p"] = _check_p(self.name, p)
        super().__init__(**params)

    def mix_batch(self, x, y, generator):
        b, _, h, w = x.shape
        lam = sample_beta(self.params["beta"], 1, generator).expand(b)
        perm = torch.randperm(b, generator=generator)
        src = x[perm.to(x.device)]
        boxes = saliency_boxes(opencv_saliency(src), lam)
        m = box_masks(boxes, h, w).to(x.device)
        area = m.flatten(1).float().mean(1).to(y)  # the pasted share of each image
        out = torch.where(m[:, None], src, x)
        ymix = (1 - area)[:, None] * y + area[:, None] * y[perm.to(y.device)]
        return out, ymix

