"""Throughput of the study's segmenters and generator, measured side by side in one run
(Table 4; ``scripts/bench_diffaug.py`` and notebook 16).

On the test frames, batched (``bench.batch``), with the profile's thread count (speed on
the first ``bench.timed_batches`` batches, the same images for every method; Dice on the
whole test split):

* the plain U-Net (real frames only, seed ``gate.seed``);
* the latent segmenter (the gate) with single-step inference: encode, one denoiser call
  from ``t = T - 1``, decode (Eq. 11);
* the same network run iteratively: encode, ``bench.iterative_steps`` DDIM steps, decode.

Repetitions are interleaved (A B C A B C ...; the machine is shared) and the median time of
a full pass over the test frames is reported as images/s, with each method's test Dice.
Autoencoder encoding and decoding are included in both latent rows, and their share is
measured separately (encode, fused features, one denoiser call, decode), so that the
ratio's bound is visible: with encode + decode costing ``E`` and a denoiser call ``U``, the
single-step speed-up over ``n`` steps is ``(E + n U) / (E + U)``. The generator's
samples/s (DDIM with the profile's steps and guidance, both branches batched) is measured
on one batch of planned samples.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from ...metrics import segmentation as segm
from ...train.segmentation import predict_masks
from . import study


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(prof: dict, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(throughput table, latent-segmenter breakdown)``; see the module docstring."""
    from tqdm.auto import tqdm
    s = study.settings(prof)
    b = dict(s.get("bench") or {})
    bs, reps, n_it = int(b.get("batch", 16)), int(b.get("reps", 5)), int(b.get("iterative_steps", 50))
    n_time = int(b.get("timed_batches", 2)) * bs
    threads = study.set_threads(prof)
    ds = study.dataset(prof)
    x = ds.x("test")
    gt = ds.m("test")
    xt = x[:n_time]                         # the timed images: the same for every method
    unet, _ = study.judge_model(prof, progress=False)
    codec = study.load_codec(prof)
    latent, _ = study.gate_model(prof, codec, progress=False, train=False)
    methods = {"U-Net": lambda xx: predict_masks(unet, xx, bs),
               "latent segmenter, single step": lambda xx: predict_masks(latent, xx, bs, steps=1),
               f"latent segmenter, iterative ({n_it} DDIM steps)":
                   lambda xx: predict_masks(latent, xx, bs, steps=n_it)}
    # Dice on the whole test split (once per method), speed on the timed batches
    dice = {k: float(segm.per_image(f(x) >= 0.5, gt)["dice"].mean()) for k, f in methods.items()}
    times = {k: [] for k in methods}
    for _ in tqdm(range(reps), desc="throughput (interleaved)", disable=not progress):
        for k, f in methods.items():
            times[k].append(_time(lambda: f(xt)))
    rows = []
    for k, t in times.items():
        med = float(np.median(t))
        rows.append({"method": k, "images": len(xt), "batch": bs, "reps": reps, "threads": threads,
                     "median_s": med, "images_per_s": len(xt) / med, "test_dice": dice[k]})
    tab = pd.DataFrame(rows)
    iterative = tab.loc[tab.method.str.contains("iterative"), "images_per_s"].iloc[0]
    plain = tab.loc[tab.method == "U-Net", "images_per_s"].iloc[0]
    tab["speedup_vs_iterative"] = tab.images_per_s / iterative
    tab["slowdown_vs_unet"] = plain / tab.images_per_s

    # where the single-step time goes (one batch, interleaved medians)
    xb = torch.from_numpy(x[:bs]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        z = codec.encode(xb)
        f = latent.fused(z)
        T = latent.cfg.num_train_timesteps
        tt = torch.full((len(z),), T - 1, dtype=torch.long)
        parts = {"encode (frozen AE encoder)": lambda: codec.encode(xb),
                 "vision encoder + fusion (Eq. 9, 13)": lambda: latent.fused(z),
                 "one denoiser call": lambda: latent._eps(z, tt, f),
                 "decode (frozen AE decoder)": lambda: codec.decode_mask(z)}
        pt = {k: [] for k in parts}
        for _ in range(reps):
            for k, fn in parts.items():
                pt[k].append(_time(fn))
    br = pd.DataFrame([{"part": k, "batch": len(xb), "median_ms_per_image": 1000 * float(np.median(v)) / len(xb)}
                       for k, v in pt.items()])
    br["share_of_single_step"] = br.median_ms_per_image / br.median_ms_per_image.sum()

    # generator samples/s
    from . import synthesis as S
    R = study._resources(prof)
    sy = s["synthesis"]
    plans, i = [], 0
    while len(plans) < bs and i < 20 * bs:
        p = S.plan_sample(i, ds.x("train"), ds.m("train"), R["perm"], R["donors"],
                          int(sy.get("pool_seed", 0)), tuple(sy.get("scale", (0.6, 1.3))),
                          float(sy.get("margin_px", 3.0)))
        if p["mask"] is not None:
            plans.append(p)
        i += 1
    frames = ds.x("train")[[p["record"]["target"] for p in plans]]
    placed = np.stack([p["mask"] for p in plans])
    e, mk = R["enc"].encode([p["record"]["prompt_text"] for p in plans])
    g_reps = max(1, min(3, reps))
    gt_ = [_time(lambda: study.synthesize(prof, R, frames, placed, (e, mk),
                                          [p["record"]["noise_seed"] for p in plans]))
           for _ in range(g_reps)]
    med = float(np.median(gt_))
    gen_row = {"method": f"generator ({sy['steps']} DDIM steps, guidance {sy['guidance']})",
               "images": len(plans), "batch": len(plans), "reps": g_reps, "threads": threads,
               "median_s": med, "images_per_s": len(plans) / med, "test_dice": np.nan,
               "speedup_vs_iterative": np.nan, "slowdown_vs_unet": np.nan}
    tab = pd.concat([tab, pd.DataFrame([gen_row])], ignore_index=True)
    return tab, br
