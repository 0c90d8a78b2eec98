"""Quality of generated samples (Table 5) and whether they follow their prompts.

Everything is judged by a network that neither generated nor gated the samples: the
**judge**, the U-Net trained on real frames only (:func:`.study.judge_model`).

Realism (Table 5): crops around each synthetic polyp (a square of twice the intended
mask's bounding-box side, at least a third of the frame, resized to 64 px) and around the
largest polyp of real frames; features = the judge's encoder stage ``stage`` globally
average-pooled (128-d for ResNet-18's third stage; its second, 64-d, when the common set
size is below 256, so that the covariance stays usable); Fréchet distance
(:func:`mdlib.diffusion.fid.frechet_distance`) of the accepted samples, of the rejected
ones, and of held-out real crops, each against the same reference (one random half of the
real training crops), at one common set size ``n`` (the smallest of the sets and the other
half), over ``repeats`` random subsets: mean and std. The real-vs-real row is the floor a
perfect generator would reach at that ``n``. LPIPS needs the AlexNet / VGG ImageNet weights
(torchvision download): computed when they load, otherwise skipped with the recorded reason.

Prompt following (:func:`prompt_following`): planned samples with a medium-sized mask are
generated twice with prompts that differ in one word only (``small`` vs ``large``;
``pale`` vs ``reddish``), with the same noise; the judge's predicted polyp area near the
intended mask (size) and the red-minus-green contrast of the generated region against the
mucosa around it (colour) are compared pairwise. And over the pool: the size class of the
judge's predicted area against the size word the prompt requested (which the mask itself
implies).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ...diffusion.fid import frechet_distance
from ...metrics import segmentation as segm
from ...train.segmentation import predict_masks
from . import prompts as P


def crop_boxes(masks: np.ndarray, min_frac: float = 1 / 3) -> np.ndarray:
    """Square crop boxes ``(N, 4)`` (r0, c0, side) around each mask's bounding box."""
    n, H, W = masks.shape
    out = np.zeros((n, 3), int)
    for i, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if len(rows) == 0:
            out[i] = (0, 0, H)
            continue
        cy, cx = (rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2
        side = int(min(H, max(2 * max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1),
                              round(min_frac * H))))
        r0 = int(np.clip(round(cy - side / 2), 0, H - side))
        c0 = int(np.clip(round(cx - side / 2), 0, W - side))
        out[i] = (r0, c0, side)
    return out


def crops(images: np.ndarray, masks: np.ndarray, out: int = 64) -> torch.Tensor:
    """Float ``(N, 3, out, out)`` crops (module docstring)."""
    import torch.nn.functional as F
    boxes = crop_boxes(masks)
    res = []
    for img, (r0, c0, s) in zip(images, boxes):
        c = torch.from_numpy(np.ascontiguousarray(img[r0:r0 + s, c0:c0 + s])).permute(2, 0, 1)[None].float() / 255
        res.append(F.interpolate(c, size=(out, out), mode="bilinear", antialias=True,
                                 align_corners=False))
    return torch.cat(res) if res else torch.zeros((0, 3, out, out))


def largest_lesion_masks(masks: np.ndarray) -> np.ndarray:
    out = np.zeros_like(masks, dtype=bool)
    for i, m in enumerate(masks):
        lab, k = segm.lesions(m)
        if k:
            areas = np.bincount(lab.ravel())[1:]
            out[i] = lab == int(np.argmax(areas)) + 1
    return out


@torch.no_grad()
def judge_features(judge, x: torch.Tensor, stage: int = 3, batch_size: int = 64) -> np.ndarray:
    """Globally average-pooled encoder stage ``stage`` of the judge U-Net."""
    enc = judge.net.encoder
    out = []
    for i in range(0, len(x), batch_size):
        xb = (x[i:i + batch_size] - judge.mean) / judge.std
        out.append(enc(xb)[stage].mean((2, 3)).cpu())
    return torch.cat(out).numpy().astype(np.float64)


def fd_table(feats: dict, reference: np.ndarray, repeats: int = 10, seed: int = 0) -> pd.DataFrame:
    """Fréchet distance of each set in ``feats`` against ``reference`` at one common size
    (the smallest set and the reference), over ``repeats`` random subsets."""
    n = min([len(reference)] + [len(v) for v in feats.values()])
    rng = np.random.default_rng(seed)
    rows = []
    for name, f in feats.items():
        vals = []
        for _ in range(repeats):
            a = f[rng.choice(len(f), n, replace=False)]
            r = reference[rng.choice(len(reference), n, replace=False)]
            vals.append(frechet_distance(a, r))
        rows.append({"set": name, "n": n, "fd_mean": float(np.mean(vals)),
                     "fd_std": float(np.std(vals, ddof=1)) if repeats > 1 else math.nan,
                     "n_available": int(len(f))})
    return pd.DataFrame(rows)


def lpips_status():
    """``(lpips model or None, message)``: LPIPS with AlexNet when its weights load offline."""
    try:
        import lpips
        import os
        os.environ.setdefault("TORCH_HOME", os.path.expanduser("~/.cache/torch"))
        from torch.hub import get_dir
        ck = os.path.join(get_dir(), "checkpoints")
        have = os.path.isdir(ck) and any(f.startswith("alexnet") for f in os.listdir(ck))
        if not have:
            return None, (f"LPIPS skipped: its AlexNet ImageNet weights are not in {ck} and this "
                          "machine is offline (torchvision would download "
                          "alexnet-owt-7be5be79.pth on first use)")
        return lpips.LPIPS(net="alex", verbose=False).eval(), "LPIPS (AlexNet) computed"
    except Exception as e:  # pragma: no cover - depends on the environment
        return None, f"LPIPS skipped: {type(e).__name__}: {e}"


@torch.no_grad()
def lpips_to_real(model, fake: torch.Tensor, real: torch.Tensor, seed: int = 0) -> np.ndarray:
    """LPIPS of each fake crop to a random real crop."""
    rng = np.random.default_rng(seed)
    j = rng.integers(0, len(real), len(fake))
    return model(fake * 2 - 1, real[j] * 2 - 1).flatten().cpu().numpy()


def table5(pool: dict, real_train: tuple, judge, theta: float,
           stage: int = 3, repeats: int = 10, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """Accepted vs rejected samples of a pool: counts, acceptance rate, gate IoU (mean ±
    std), Fréchet distance (and LPIPS when available) to real polyp crops."""
    iou = pool["iou_single"]
    acc = iou > theta
    xs, intended = pool["x"], pool["intended"]
    rt = largest_lesion_masks(real_train[1])
    c_tr = crops(real_train[0], rt)
    c_syn = crops(xs, intended.astype(bool))
    n_common = min(len(c_tr) // 2, int(acc.sum()), int((~acc).sum()))
    # the feature dimension must stay well below the set size for a usable covariance
    if n_common < 2 * 128:
        stage = min(stage, 2)
    f_tr = judge_features(judge, c_tr, stage)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(f_tr))
    ref, held = f_tr[perm[: len(perm) // 2]], f_tr[perm[len(perm) // 2:]]
    f_syn = judge_features(judge, c_syn, stage)
    feats = {"accepted": f_syn[acc], "rejected": f_syn[~acc], "real (other half of training polyps)": held}
    if acc.sum() < 3 or (~acc).sum() < 3:
        feats = {k: v for k, v in feats.items() if len(v) >= 3}
    fd = fd_table(feats, ref, repeats, seed) if len(feats) else pd.DataFrame()
    model, msg = lpips_status()
    rows = []
    for name, sel in (("accepted", acc), ("rejected", ~acc)):
        r = {"set": name, "n_samples": int(sel.sum()), "share": float(sel.mean()) if len(sel) else math.nan,
             "gate_iou_mean": float(iou[sel].mean()) if sel.any() else math.nan,
             "gate_iou_std": float(iou[sel].std(ddof=1)) if sel.sum() > 1 else math.nan}
        if len(fd) and name in set(fd.set):
            f = fd[fd.set == name].iloc[0]
            r.update(fd_mean=f.fd_mean, fd_std=f.fd_std, fd_n=int(f.n), fd_dim=int(f_tr.shape[1]))
        if model is not None and sel.any():
            real_c = crops(real_train[0], rt)
            v = lpips_to_real(model, c_syn[sel], real_c, seed)
            r.update(lpips_mean=float(v.mean()), lpips_std=float(v.std(ddof=1)) if len(v) > 1 else math.nan)
        rows.append(r)
    if len(fd) and "real (other half of training polyps)" in set(fd.set):
        f = fd[fd.set == "real (other half of training polyps)"].iloc[0]
        rows.append({"set": "real (other half of training polyps)", "n_samples": int(len(held)),
                     "share": math.nan, "gate_iou_mean": math.nan, "gate_iou_std": math.nan,
                     "fd_mean": f.fd_mean, "fd_std": f.fd_std, "fd_n": int(f.n),
                     "fd_dim": int(f_tr.shape[1])})
    return pd.DataFrame(rows), msg


def _near(mask: np.ndarray, frac: float = 0.5) -> np.ndarray:
    """The mask dilated by ``frac`` of its bounding-box side (where its polyp may lie)."""
    from scipy import ndimage as ndi
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    return ndi.binary_dilation(mask, iterations=max(1, int(round(frac * side))))


def predicted_area_near(pred: np.ndarray, intended: np.ndarray) -> np.ndarray:
    """Predicted foreground area near each intended mask, as a fraction of the frame."""
    return np.array([(p & _near(m)).sum() / p.size for p, m in zip(pred, intended)])


def redness_contrast(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean red-minus-green inside each mask minus that of a ring of mucosa around it."""
    out = []
    for x, m in zip(images, masks):
        ring = P._ring(m, m.shape[0])
        rg = x[..., 0].astype(float) - x[..., 1]
        out.append(rg[m].mean() - rg[ring].mean())
    return np.array(out)


def region_colour(images: np.ndarray, masks: np.ndarray, name: str) -> dict:
    """Colour of the pixels inside ``masks`` (uint8 NHWC images): mean and std of R, G, B,
    the share of near-white pixels (max channel > 240: specular highlights) and of pixels
    bluer than red (which real polyp tissue almost never is). A realism check in pixel
    space that needs no feature network, so no trained judge decides it."""
    v = images[np.asarray(masks) > 0].astype(np.float64)
    if not len(v):
        return {"set": name, "pixels": 0}
    mean, sd = v.mean(0), v.std(0)
    return {"set": name, "pixels": int(len(v)), "r_mean": mean[0], "g_mean": mean[1], "b_mean": mean[2],
            "r_std": sd[0], "g_std": sd[1], "b_std": sd[2],
            "near_white": float((v.max(1) > 240).mean()), "blue_over_red": float((v[:, 2] > v[:, 0]).mean())}


def size_class(area_frac: np.ndarray) -> np.ndarray:
    return np.where(area_frac < P.SIZE_SMALL, P.SIZES[0],
                    np.where(area_frac >= P.SIZE_LARGE, P.SIZES[2], P.SIZES[1]))


def size_agreement(pool: dict, judge, batch_size: int = 32) -> pd.DataFrame:
    """Requested size word vs the size class of the judge's predicted area near the
    intended mask, for every placed sample of the pool (with its gate decision)."""
    rec = pool["records"]
    rec = rec[rec.row >= 0].sort_values("row")
    pred = predict_masks(judge, pool["x"], batch_size) >= 0.5
    area = predicted_area_near(pred, pool["intended"].astype(bool))
    return pd.DataFrame({"row": rec.row.to_numpy(), "requested": rec.size_word.to_numpy(),
                         "predicted_area_frac": area, "predicted": size_class(area),
                         "intended_area_frac": pool["intended"].reshape(len(area), -1).mean(1),
                         "iou_single": pool["iou_single"]})


def paired_word_test(a: np.ndarray, b: np.ndarray) -> dict:
    from scipy import stats
    from ...runs.results import mean_std_ci
    d = np.asarray(a, float) - np.asarray(b, float)
    ci = mean_std_ci(d)
    p = float(stats.wilcoxon(d).pvalue) if len(d) > 1 and np.any(d != 0) else math.nan
    return {"n": int(len(d)), "diff_mean": float(d.mean()), "diff_ci95": ci["ci95"],
            "share_positive": float((d > 0).mean()), "wilcoxon_p": p}
