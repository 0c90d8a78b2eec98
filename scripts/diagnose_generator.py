"""Where a study generator loses the image (notebook 04 says *whether* it renders its class;
this says *where* it fails): for each dataset, its generator as the profile sets it up
(``profile``) and the plain generator of the profile's ``diffusion`` section (``plain``: no
per-dataset overrides),

* ``04_generator_diagnosis_t.csv``: the one-step estimate of x0 from real test images noised
  to timestep t, its mean squared error relative to the data variance (1 = no better than the
  per-channel mean image; the ideal at high noise), and the error of the UNet's prediction
  against its training target (noise or velocity), per t;
* ``04_generator_diagnosis.csv``: per channel, the mean and std of DDIM samples (drawn with
  the test split's labels) next to the real test images', in [0, 1]; the spread over images
  of each image's mean colour (``*_image_mean_std``: one stain colour per image varies from
  image to image) and the spread within an image (``*_within_std``); and the guidance
  classifier's agreement with the samples' conditioning class (notebook 04's check).

The generators are the study's (``mdlib.runs.tasks.diffusion_run``: trained on the study's
training subset only, found or trained). Usage::

    python scripts/diagnose_generator.py --profile cpu --dataset lc25000_lung --variant plain profile
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mdlib import paths, profiles  # noqa: E402
from mdlib.data import to_tensor  # noqa: E402
from mdlib.diffusion.ddpm import _crop, _from_work, _pad, _to_work  # noqa: E402
from mdlib.io import write_csv  # noqa: E402
from mdlib.runs import tasks  # noqa: E402
from mdlib.train import predict_proba  # noqa: E402

T_LIST = (20, 50, 100, 200, 300, 500, 700, 900)
VARIANTS = ("plain", "profile")


def diagnose(prof: dict, dataset: str, variant: str, n: int = 256, seed: int = 0):
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: expected one of {VARIANTS}")
    p, _ = tasks.study_setup(prof, dataset)
    if variant == "plain":
        p = dict(p, diffusion_by_dataset=None)
    model, run = tasks.diffusion_model(p, dataset, 0, progress=False)  # found or trained
    g_model, _ = tasks.guidance_model(p, dataset, 0, progress=False)
    with torch.no_grad():
        return _measure(model, run, g_model, p, dataset, variant, n, seed)


def _measure(model, run, g_model, p, dataset, variant, n, seed):
    normalize = model.cfg.normalize
    data, _ = tasks.load_data(p, dataset, 0)
    g = torch.Generator().manual_seed(seed)
    yt = np.asarray(data.y("test"))
    idx = torch.randperm(len(yt), generator=g)[:n].numpy()
    x = to_tensor(data.x("test")[idx])
    y = torch.as_tensor(yt[idx], dtype=torch.long)
    n = len(x)  # a test split smaller than n
    x0 = _pad(_to_work(x, model._norm), model.cfg)
    xr = x * 2 - 1
    var = float(((xr - xr.mean(dim=(0, 2, 3), keepdim=True)) ** 2).mean())
    rows = []
    for t in T_LIST:
        a = float(model.alphas_cumprod[t])
        eps = torch.randn(x0.shape, generator=g)
        xt = model._noised(x0, eps, t)
        pred = model.unet(xt, torch.full((n,), t), class_labels=y).sample
        target = eps if model.cfg.prediction_type == "epsilon" else a ** 0.5 * eps - (1 - a) ** 0.5 * x0
        est = model._ddim_step(xt, pred, t, -1)  # the clipped x0 estimate (alpha_prev = 1)
        x0_hat = _crop(_from_work(est, model._norm), model.cfg).clamp(0, 1) * 2 - 1
        rows.append({"dataset": dataset, "variant": variant, "attention": model.cfg.attention,
                     "normalize": normalize, "generator": run.dir.name, "t": t,
                     "sqrt_alpha_bar": a ** 0.5, "x0_err_over_var": float(((x0_hat - xr) ** 2).mean()) / var,
                     "prediction_type": model.cfg.prediction_type,
                     "pred_mse": float(((pred - target) ** 2).mean())})
    s, _ = model.sample(labels=y, seed=seed, progress=False)
    agree = float((np.asarray(predict_proba(g_model, s)).argmax(1) == y.numpy()).mean())
    summ = []
    for c in range(x.shape[1]):
        summ.append({"dataset": dataset, "variant": variant, "attention": model.cfg.attention,
                     "normalize": normalize, "generator": run.dir.name,
                     "channel": c, "real_mean": float(x[:, c].mean()), "sample_mean": float(s[:, c].mean()),
                     "real_std": float(x[:, c].std()), "sample_std": float(s[:, c].std()),
                     "real_image_mean_std": float(x[:, c].mean(dim=(1, 2)).std()),
                     "sample_image_mean_std": float(s[:, c].mean(dim=(1, 2)).std()),
                     "real_within_std": float(x[:, c].std(dim=(1, 2)).mean()),
                     "sample_within_std": float(s[:, c].std(dim=(1, 2)).mean()),
                     "guidance_agreement": agree, "n": n, "train_steps": model.step})
    return rows, summ


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--dataset", nargs="+", default=["lc25000_lung"])
    ap.add_argument("--variant", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    prof = profiles.load(a.profile)
    rows, summ = [], []
    for d in a.dataset:
        for v in a.variant:
            r, s = diagnose(prof, d, v)
            rows += r
            summ += s
            print(pd.DataFrame(r).round(3).to_string(index=False))
            print(pd.DataFrame(s).round(3).to_string(index=False))
    out = paths.figures_dir(prof["name"])
    write_csv(out / "04_generator_diagnosis_t.csv", pd.DataFrame(rows))
    write_csv(out / "04_generator_diagnosis.csv", pd.DataFrame(summ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
