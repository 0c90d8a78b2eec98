"""Benchmark the augmentation methods side by side in one run, on this machine's CPU.

Prints, for one batch of real training images (medians of ``--repeats`` timed calls after
a warm-up):

1. augmented images per second for every method;
2. for MedDiffuseMix, the ratio of its throughput to its own **component limit**: the
   refinement's UNet calls and the Grad-CAM passes of the preservation check, timed alone
   on the same rows and retry rounds that the method ran (1.0 = no overhead at all);
3. the speed-up of the batched MedDiffuseMix over a per-image loop over the same steps
   (same images, partners and parameters, one image per call), timed on ``--loop-images``
   images and scaled per image.

Models: by default those of a profile's study runs (``--profile cpu``: the trained
guidance classifier and diffusion model; trained first if missing, which takes minutes),
or ``--random`` for randomly initialised models of the profile's architecture (timings
only; retry counts then differ).

    python scripts/bench_augment.py --profile cpu --dataset breastmnist
    python scripts/bench_augment.py --random --batch 64 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--dataset", default="breastmnist")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-images", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--random", action="store_true", help="random-initialised models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write every printed number as CSV")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    from mdlib import augment, profiles
    from mdlib.data import to_tensor
    from mdlib.runs import tasks
    from mdlib.studies.meddiffusemix import study
    from mdlib.diffusion import DiffusionModel, build_unet
    from mdlib.models import build_model
    from mdlib.saliency import compute_split_saliency, gradcam

    prof = profiles.load(a.profile)
    ds, _ = tasks.load_data(prof, a.dataset, a.seed)
    x_all, y_all = to_tensor(ds.x("train")), torch.from_numpy(ds.y("train"))
    k = ds.n_classes
    mdm_params = study.method_params(prof, a.dataset, "meddiffusemix")
    if a.random:
        torch.manual_seed(a.seed)
        tc = tasks.train_config(prof, a.dataset, a.seed, section="guidance")
        g = build_model(tc.model, ds.channels, k, ds.size, **tc.model_kwargs).eval()
        cfg, keys = tasks.diffusion_config(prof, ds, a.seed)
        dm = DiffusionModel(build_unet(cfg), cfg)
        dm.guidance_scale = float(keys.get("guidance_scale", 1.0))
        sal = compute_split_saliency(g, x_all, y_all)
        extras = {"guidance": g, "diffusion": dm, "saliency": sal, "progress": False}
        source = "random-initialised models"
    else:
        extras = tasks.bank_resources(prof, a.dataset, a.seed,
                                      augment.get("meddiffusemix", **mdm_params))
        g, dm, sal = extras["guidance"], extras["diffusion"], extras["saliency"]
        source = f"profile '{prof['name']}' study models"
    extras["progress"] = False
    rng = np.random.default_rng(a.seed)
    idx = torch.from_numpy(np.sort(rng.choice(len(y_all), min(a.batch, len(y_all)), replace=False)))
    b = len(idx)
    x1, y1 = x_all[idx], torch.nn.functional.one_hot(y_all[idx], k).float()
    ctx = augment.BankContext(x_all, y_all, k, a.seed, None, extras)
    print(f"# {a.dataset} {ds.size}px x{ds.channels}, batch {b}, torch threads "
          f"{torch.get_num_threads()}, {source}, diffusion guidance scale {dm.guidance_scale:g}")

    rows = []

    def online(m):
        aug = augment.get(m, **{kk: v for kk, v in study.method_params(prof, a.dataset, m).items() if kk != "p"})
        return lambda: aug.mix_batch(aug.per_sample(x1, torch.Generator().manual_seed(1)), y1,
                                     torch.Generator().manual_seed(2))

    def offline(m):
        aug = augment.get(m, **study.method_params(prof, a.dataset, m))
        return lambda: aug.generate(ctx, idx, torch.Generator().manual_seed(3), 0)

    for m in study.ALL_METHODS:
        fn = online(m) if m not in study.OFFLINE_METHODS else offline(m)
        t, out = timed(fn, a.repeats)
        rows.append((m, t, b / t))
        if m == "meddiffusemix":
            mdm_time, (_, _, rec) = t, out
    print(f"\n{'method':<15}{'s / batch':>12}{'images / s':>14}")
    for m, t, ips in rows:
        print(f"{m:<15}{t:>12.4f}{ips:>14.1f}")

    # component limit: the same rounds, refinement and CAM only
    mdm = augment.get("meddiffusemix", **mdm_params)
    p = mdm.params
    active = ~rec["status"].str.startswith("noop").to_numpy()
    retries = rec["retries"].to_numpy()
    rounds = [int((active & (retries >= r)).sum()) for r in range(int(retries.max()) + 1)]
    rounds = [n for n in rounds if n > 0]
    ms = torch.rand(b, 1, ds.size, ds.size, generator=torch.Generator().manual_seed(4))
    ms = (ms > 0.5).float()
    lbl = y_all[idx]

    def components():
        for n in rounds:
            xr = dm.refine(x1[:n], ms[:n], lbl[:n], strength=p["strength"], steps=p["refine_steps"],
                           seed=5) if p["refine"] else x1[:n]
            gradcam(g, xr, lbl[:n])
    t_comp, _ = timed(components, a.repeats)
    print(f"\nMedDiffuseMix rounds (rows per retry round): {rounds}")
    print(f"component limit (refinement UNet calls + Grad-CAM passes alone): {t_comp:.4f} s")
    print(f"MedDiffuseMix batched:                                     {mdm_time:.4f} s")
    print(f"throughput / component limit = {t_comp / mdm_time:.3f}")

    # per-image loop over the same steps, same partners
    n_loop = min(a.loop_images, b)
    partners = torch.from_numpy(rec["partner"].to_numpy()[:n_loop].copy())

    def loop():
        for i in range(n_loop):
            mdm.augment(x_all, y_all, sal, idx[i:i + 1], torch.Generator().manual_seed(6), guidance=g,
                        diffusion=dm, partners=partners[i:i + 1], n_classes=k)

    def batched_same():
        mdm.augment(x_all, y_all, sal, idx[:n_loop], torch.Generator().manual_seed(6), guidance=g,
                    diffusion=dm, partners=partners, n_classes=k)
    t_loop, _ = timed(loop, a.repeats)
    t_b, _ = timed(batched_same, a.repeats)
    per_img_loop = t_loop / n_loop
    per_img_batch = mdm_time / b
    print(f"\nper-image loop: {per_img_loop * 1e3:.2f} ms / image ({n_loop} images, one call each)")
    print(f"batched ({n_loop} images in one call): {t_b / n_loop * 1e3:.2f} ms / image")
    print(f"batched ({b} images in one call): {per_img_batch * 1e3:.2f} ms / image")
    print(f"speed-up of batching over the per-image loop: {per_img_loop / per_img_batch:.1f}x "
          f"(batch {b}), {t_loop / t_b:.1f}x (same {n_loop} images)")
    if a.out:
        import pandas as pd
        from mdlib.io import write_csv
        common = {"dataset": a.dataset, "batch": b, "threads": torch.get_num_threads(),
                  "repeats": a.repeats, "models": source}
        out = [{**common, "quantity": f"images_per_s:{m}", "value": ips} for m, _, ips in rows]
        out += [{**common, "quantity": k, "value": v} for k, v in (
            ("mdm_component_limit_s", t_comp), ("mdm_batched_s", mdm_time),
            ("mdm_throughput_over_component_limit", t_comp / mdm_time),
            ("mdm_per_image_loop_ms", per_img_loop * 1e3),
            ("mdm_batched_ms_per_image", per_img_batch * 1e3),
            ("mdm_batching_speedup", per_img_loop / per_img_batch),
            (f"mdm_batching_speedup_same_{n_loop}", t_loop / t_b))]
        write_csv(a.out, pd.DataFrame(out))
        print("written", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
