"""Table VI: inference cost per image of DiffMIC-v2 against its plain backbone (C1) and
against 100-step sampling, measured side by side in one run (``scripts/bench_diffmic.py``
writes ``figures/cpu/bench_diffmic.csv``; notebook 18 on smoke calls :func:`run` on a tiny
case).

For every case (a model configuration at an image size; random weights, since the cost
does not depend on them) and a batch of random images:

* **FLOPs** with ``torch.utils.flop_counter.FlopCounterMode`` (multiply-adds counted as two
  FLOPs; element-wise ops are not counted), per image, for the whole pipeline and for
  each part: the DCG's global branch, its local branch (K ROI crops), the image feature
  prior F (raw-image and ROI encoders), and the denoiser per step;
* **wall time** per image, batched, eval mode, ``torch.no_grad``: a warm-up call each, then
  ``repeats`` rounds that time the methods in interleaved order (A B C A B C ...), medians
  reported (the machine is shared).

The plain backbone is C1 (:func:`mdlib.models.build_model` of the DCG's global encoder).
DiffMIC-v2's image encoders run once per image; only the denoiser runs at every step.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import pandas as pd
import torch

from ...models import build_model
from .model import DCG, DiffMICConfig, DiffMICv2


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return model


def flops(fn) -> int:
    """FLOPs of one call of ``fn()`` (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        fn()
    return int(fc.get_total_flops())


def build(cfg: DiffMICConfig, seed: int = 0):
    """``(plain backbone, DCG, diffusion part)`` in eval mode, random weights."""
    torch.manual_seed(seed)
    plain = _randomise_bn(build_model(cfg.backbone, cfg.in_chans, cfg.n_classes, cfg.img_size,
                                      **cfg.backbone_kwargs)).eval()
    dcg = _randomise_bn(DCG(cfg)).eval()
    diff = _randomise_bn(DiffMICv2(cfg)).eval()
    return plain, dcg, diff


def infer(dcg: DCG, diff: DiffMICv2, x: torch.Tensor, noise: dict, steps: int) -> torch.Tensor:
    """DiffMIC-v2's prediction scores for a batch: the DCG's priors and ROIs, then DDIM."""
    with torch.no_grad():
        o = dcg(x)
        return diff.sample(x, o.rois, o.p_g, o.p_l, noise, steps)


def case(name: str, cfg: DiffMICConfig, batch: int, steps=(10, 100), repeats: int = 5,
         seed: int = 0) -> pd.DataFrame:
    """One case: a row per method (plain backbone, DiffMIC-v2 at each number of steps) and
    per part, with FLOPs and wall time per image and the ratios to the plain backbone."""
    plain, dcg, diff = build(cfg, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, cfg.in_chans, cfg.img_size, cfg.img_size), generator=g)
    noise = diff.draw_noise(batch, g)
    methods = {"plain backbone (C1)": lambda: plain(x)}
    for s in steps:
        methods[f"DiffMIC-v2 ({s} steps)"] = (lambda s=s: infer(dcg, diff, x, noise, s))
    fl = {m: flops(f) for m, f in methods.items()}
    with torch.no_grad():
        for f in methods.values():  # warm-up
            f()
        times = {m: [] for m in methods}
        for _ in range(repeats):  # interleaved: A B C A B C ...
            for m, f in methods.items():
                t0 = time.perf_counter()
                f()
                times[m].append(time.perf_counter() - t0)
    rows = []
    base_f, base_t = fl["plain backbone (C1)"], statistics.median(times["plain backbone (C1)"])
    for m in methods:
        med = statistics.median(times[m])
        q1, q3 = np.percentile(times[m], [25, 75])
        rows.append({"case": name, "image_size": cfg.img_size, "batch": batch, "row": "method",
                     "method": m, "gflops_per_image": fl[m] / batch / 1e9,
                     "ms_per_image": 1e3 * med / batch, "ms_iqr_per_image": 1e3 * (q3 - q1) / batch,
                     "flops_ratio_vs_plain": fl[m] / base_f, "time_ratio_vs_plain": med / base_t,
                     "repeats": repeats})
    rows += parts(name, cfg, batch, dcg, diff, x, noise, steps)
    return pd.DataFrame(rows)


def parts(name, cfg, batch, dcg, diff, x, noise, steps) -> list[dict]:
    """FLOPs per image of each part of DiffMIC-v2's inference (what dominates)."""
    from .model import feature_map, pooled
    with torch.no_grad():
        o = dcg(x)
    rois = o.rois
    fp = diff.feature_prior
    cond = diff.guidance(o.p_g, o.p_l)
    f = fp(x, rois)
    n = cfg.n_points
    y = diff.initial(cond, noise)
    tt = torch.full((batch, n, n), 500, dtype=torch.long)
    items = {
        "DCG global branch": lambda: dcg.saliency(feature_map(dcg.global_enc, x)),
        "DCG local branch (K ROIs)": lambda: pooled(dcg.local_enc, rois.flatten(0, 1)),
        "feature prior F (raw + ROI encoders)": lambda: fp(x, rois),
        "denoiser, one step": lambda: diff.denoiser(y, cond, f, tt),
    }
    rows = []
    for k, fn in items.items():
        fl = flops(fn) / batch
        rows.append({"case": name, "image_size": cfg.img_size, "batch": batch, "row": "part",
                     "method": k, "gflops_per_image": fl / 1e9})
        if k.startswith("denoiser"):
            for s in steps:
                rows.append({"case": name, "image_size": cfg.img_size, "batch": batch,
                             "row": "part", "method": f"denoiser, {s} steps",
                             "gflops_per_image": s * fl / 1e9})
    return rows


def run(cases: list[dict], steps=(10, 100), repeats: int = 5, seed: int = 0,
        progress: bool = True) -> pd.DataFrame:
    """Every case (``{name, batch, config: DiffMICConfig}``); one table."""
    from tqdm.auto import tqdm
    out = [case(c["name"], c["config"], int(c["batch"]), steps, repeats, seed)
           for c in tqdm(cases, desc="bench diffmic", disable=not progress)]
    return pd.concat(out, ignore_index=True)


def profile_cases(prof: dict) -> list[dict]:
    """The benchmark cases of a profile's ``diffmic.bench`` section: ``cases: [{name,
    setting, batch, model: overrides}]`` (each a study setting's model, with overrides)."""
    from .study import model_config, settings
    b = settings(prof).get("bench") or {}
    out = []
    for c in b.get("cases", []):
        cfg = model_config(prof, c["setting"], **(c.get("model") or {}))
        out.append({"name": c["name"], "batch": int(c.get("batch", 64)), "config": cfg})
    return out


def target_check(table: pd.DataFrame, steps: int = 10, target: float = 3.0) -> pd.DataFrame:
    """Per case: DiffMIC-v2 at ``steps`` against the plain backbone (FLOPs and time ratio),
    whether it meets ``target`` x, and the part with the most FLOPs."""
    rows = []
    for name, g in table.groupby("case", sort=False):
        m = g[(g.row == "method") & (g.method == f"DiffMIC-v2 ({steps} steps)")].iloc[0]
        p = g[(g.row == "part") & ~g.method.str.startswith("denoiser, ")
              | (g.method == f"denoiser, {steps} steps")]
        p = p[p.method != "denoiser, one step"]
        top = p.sort_values("gflops_per_image", ascending=False).iloc[0]
        rows.append({"case": name, "image_size": int(m.image_size),
                     "flops_ratio": float(m.flops_ratio_vs_plain),
                     "time_ratio": float(m.time_ratio_vs_plain), "target": target,
                     "meets_target_time": bool(m.time_ratio_vs_plain <= target),
                     "meets_target_flops": bool(m.flops_ratio_vs_plain <= target),
                     "dominant_part": top.method,
                     "dominant_share": float(top.gflops_per_image / m.gflops_per_image)})
    return pd.DataFrame(rows)
