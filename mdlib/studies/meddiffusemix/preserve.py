"""Apply every augmentation method to the same training images, and measure how much of
the guidance classifier's evidence each one preserves (notebook 05, the table the paper
does not give).

For images ``x1`` (training split) with their cached Grad-CAM maps ``S(x1)`` and the
high-saliency region ``R_h(x1) = S(x1) > tau_h``:

* ``saliency_kept``: mean of ``S(x_aug)`` (Grad-CAM of the augmented image for ``x1``'s
  label) inside ``R_h(x1)``, the quantity of MedDiffuseMix's Eq. 8;
* ``label_agreement``: the guidance classifier's prediction on ``x_aug`` equals the
  dominant class of the augmented soft label;
* ``psnr_in`` / ``psnr_out``, ``ssim_in`` / ``ssim_out``: PSNR (pooled MSE over all images'
  region pixels) and SSIM (the mean of the SSIM map over the region, per image, then
  averaged) of ``x_aug`` against ``x1`` inside and outside ``R_h(x1)``.

``ssim_map`` is a batched torch version of ``skimage.metrics.structural_similarity``
(7x7 uniform window, sample covariance, ``full=True``); the tests check it against
scikit-image.
"""
from __future__ import annotations

import math

import pandas as pd
import torch
import torch.nn.functional as F

from ... import augment
from ...saliency import gradcam
from ...train import predict_proba

K1, K2 = 0.01, 0.03


def ssim_map(a: torch.Tensor, b: torch.Tensor, win: int = 7, data_range: float = 1.0
             ) -> torch.Tensor:
    """SSIM map of image batches (B,C,H,W) -> (B,H,W) (averaged over channels), equal to
    scikit-image's ``structural_similarity(..., win_size=7, data_range=1, full=True)``
    map (uniform window, sample covariance, symmetric boundary)."""
    a, b = a.double(), b.double()
    pad = win // 2
    c = a.shape[1]

    def filt(t):  # scipy.ndimage.uniform_filter(mode="reflect") == torch "reflect"+1 (symmetric)
        t = F.pad(t, (pad, pad, pad, pad), mode="replicate") if min(t.shape[-2:]) <= pad else \
            _symmetric_pad(t, pad)
        return F.avg_pool2d(t, win, stride=1)

    ux, uy = filt(a), filt(b)
    uxx, uyy, uxy = filt(a * a), filt(b * b), filt(a * b)
    cov_norm = win * win / (win * win - 1)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(1).float() if c > 1 else s[:, 0].float()


def _symmetric_pad(t: torch.Tensor, p: int) -> torch.Tensor:
    """scipy's ``mode='reflect'`` (half-sample symmetric: d c b a | a b c d)."""
    left, right = t[..., :, :p].flip(-1), t[..., :, -p:].flip(-1)
    t = torch.cat([left, t, right], -1)
    top, bottom = t[..., :p, :].flip(-2), t[..., -p:, :].flip(-2)
    return torch.cat([top, t, bottom], -2)


def region_scores(x1: torch.Tensor, xa: torch.Tensor, region: torch.Tensor) -> dict:
    """PSNR (pooled MSE) and mean SSIM of ``xa`` vs ``x1`` inside and outside ``region``
    (B,H,W bool)."""
    se = ((xa - x1) ** 2).mean(1)  # (B,H,W), averaged over channels
    ss = ssim_map(x1, xa)
    out = {}
    for tag, r in (("in", region), ("out", ~region)):
        n = r.flatten(1).sum(1)
        has = n > 0
        mse = float((se * r).sum() / r.sum().clamp(min=1))
        out[f"psnr_{tag}"] = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
        per = (ss * r).flatten(1).sum(1) / n.clamp(min=1)
        out[f"ssim_{tag}"] = float(per[has].mean()) if has.any() else float("nan")
    return out


def augment_same_images(method: str, aug: augment.Augmentation, x_all: torch.Tensor,
                        y_all: torch.Tensor, idx: torch.Tensor, n_classes: int, extras: dict,
                        seed: int = 0):
    """Apply ``aug`` to the training images ``idx`` (each image is ``x1`` exactly once).
    Online methods act on the batch ``x_all[idx]`` (mixing partners come from that batch)
    with ``p = 1``; offline methods call their bank generator on ``idx``.
    Returns ``(x_aug, soft labels, records or None)``."""
    gen = torch.Generator().manual_seed(seed)
    x1, y1 = x_all[idx], F.one_hot(y_all[idx], n_classes).float()
    if method == "no_aug":
        return x1.clone(), y1, None
    if not aug.offline:
        xa = aug.per_sample(x1, gen)
        xa, ya = aug.mix_batch(xa, y1, gen)
        return xa, ya, None
    ctx = augment.BankContext(x_all, y_all, n_classes, seed, None, extras)
    aug.check_context(ctx)
    return aug.generate(ctx, idx, gen, 0)


def preservation_table(results: dict, x_all, y_all, idx, saliency_all, guidance,
                       tau_h: float) -> pd.DataFrame:
    """One row per method: see the module docstring. ``results``: method ->
    ``(x_aug, soft labels, records)`` from :func:`augment_same_images` on ``idx``."""
    x1, y1 = x_all[idx], y_all[idx]
    rh = saliency_all[idx] > tau_h
    rows = []
    for method, (xa, ya, rec) in results.items():
        xa = xa.float()
        cam = gradcam(guidance, xa, y1).cpu()
        n = rh.flatten(1).sum(1)
        kept = ((cam * rh).flatten(1).sum(1) / n.clamp(min=1))[n > 0]
        pred = predict_proba(guidance, xa).argmax(1)
        row = {"method": method, "n": len(idx),
               "saliency_kept": float(kept.mean()),
               "saliency_kept_ge_0.7": float((kept >= 0.7).float().mean()),
               "label_agreement": float((pred == ya.argmax(1).numpy()).mean()),
               "label_weight_x1": float(ya[torch.arange(len(y1)), y1].mean()),
               "changed": float((xa - x1).abs().mean())}
        row.update(region_scores(x1, xa, rh))
        if rec is not None and "status" in rec:
            row["accept_rate"] = float(rec["status"].isin(["accepted", "accepted_unchecked"]).mean())
            row["mean_retries"] = float(rec["retries"].mean())
            row["noop_rate"] = float(rec["status"].str.startswith("noop").mean())
            row["mean_alpha"] = float(rec["alpha"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- independent judge
def judge_table(results: dict, x_all, y_all, idx, judge, tau_h: float, delta: float = 0.7
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Saliency preservation measured by an **independent judge**: a classifier of another
    architecture and seed than the guidance classifier that MedDiffuseMix's check
    (Eq. 8) enforces, trained on the same training split only
    (:func:`mdlib.runs.tasks.guidance_model` with ``section="judge"``). MedDiffuseMix
    accepts a sample by the guidance classifier's saliency, so that classifier cannot
    also be the judge of whether saliency was preserved.

    For each image ``x1`` the judge's own Grad-CAM ``J(x1)`` (for ``x1``'s label) gives its
    high-saliency region ``R_h^J(x1) = J(x1) > tau_h``; per method:

    * ``judge_kept``: mean of ``J(x_aug)`` inside ``R_h^J(x1)`` (images with an empty region
      left out), its 95% t-interval over images, and the share at or above ``delta``;
    * ``judge_label_agreement``: the judge predicts the dominant class of the augmented
      soft label.

    Returns ``(one row per method, one row per image and method)`` (the per-image values
    pair the methods on the same images, see :func:`paired_vs_reference`)."""
    from ...runs.results import mean_std_ci
    x1, y1 = x_all[idx].float(), y_all[idx].long()
    j1 = gradcam(judge, x1, y1).cpu()
    rh = j1 > tau_h
    n = rh.flatten(1).sum(1)
    has = (n > 0).numpy()
    rows, per = [], []
    for method, (xa, ya, _) in results.items():
        xa = xa.float()
        ja = gradcam(judge, xa, y1).cpu()
        kept = ((ja * rh).flatten(1).sum(1) / n.clamp(min=1)).numpy()
        agree = predict_proba(judge, xa).argmax(1) == ya.argmax(1).numpy()
        s = mean_std_ci(kept[has])
        rows.append({"method": method, "n": int(has.sum()), "judge_kept": s["mean"],
                     "judge_kept_ci95": s["ci95"],
                     f"judge_kept_ge_{delta:g}": float((kept[has] >= delta).mean()),
                     "judge_label_agreement": float(agree.mean())})
        per.append(pd.DataFrame({"method": method, "image": idx.numpy(), "has_region": has,
                                 "judge_kept": kept, "judge_agrees": agree}))
    return pd.DataFrame(rows), pd.concat(per, ignore_index=True)


def paired_vs_reference(per_image: pd.DataFrame, reference: str = "no_aug",
                        value: str = "judge_kept") -> pd.DataFrame:
    """Each method against ``reference`` on the same images: mean paired difference of
    ``value`` with its 95% t-interval, the paired t-test and Wilcoxon signed-rank p-values,
    Holm-adjusted over the methods compared (one family)."""
    from scipy import stats

    from ...runs.results import holm, mean_std_ci
    d = per_image[per_image["has_region"]] if "has_region" in per_image else per_image
    w = d.pivot_table(index="image", columns="method", values=value, aggfunc="first")
    rows = []
    for m in w.columns:
        if m == reference:
            continue
        diff = (w[m] - w[reference]).dropna().to_numpy(float)
        s = mean_std_ci(diff)
        nz = diff[diff != 0]
        rows.append({"method": m, "reference": reference, "n_images": len(diff),
                     "diff": s["mean"], "ci95": s["ci95"],
                     "t_p": float(stats.ttest_1samp(diff, 0).pvalue) if s["std"] > 0 else float("nan"),
                     "wilcoxon_p": float(stats.wilcoxon(nz).pvalue) if len(nz) >= 1 else float("nan")})
    out = pd.DataFrame(rows)
    if len(out):
        out["t_p_holm"] = holm(out["t_p"])
        out["wilcoxon_p_holm"] = holm(out["wilcoxon_p"])
    return out


def mdm_masks(aug, saliency_all, idx, partners) -> torch.Tensor:
    """MedDiffuseMix's smoothed mask ``M_s`` (Eq. 1-3) for the images ``idx`` and their
    recorded ``partners`` (from the saliency maps it used), for the figures."""
    p = aug.params
    s1, s2 = saliency_all[torch.as_tensor(idx)].float(), saliency_all[torch.as_tensor(partners)].float()
    _, _, _, m = augment.regions(s1, s2, p["tau_h"], p["tau_b"])
    return augment.smooth_mask(m, p["sigma"] if p["smooth"] else 0.0)
