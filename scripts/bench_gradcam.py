"""Benchmark: this project's batched Grad-CAM (:func:`mdlib.saliency.gradcam`) against
pytorch-grad-cam's ``GradCAM``, side by side in one run, on the CPU.

For each case (model, image size) both are run on the same model, batch and targets: a
warm-up call each, then ``--repeats`` alternating timed calls; the medians are printed
with the speed-up ratio and the maximum absolute difference between the two maps.

Random-initialised weights, with random BatchNorm statistics so the maps are not
degenerate. The default of one thread gives stable timings on a shared machine: there,
two OpenMP threads can make the small-tensor ops of deep backbones many times slower
(``--threads``).

    python scripts/bench_gradcam.py                      # small_cnn@28, resnet18@28
    python scripts/bench_gradcam.py --cases small_cnn:28 resnet50:64 --repeats 7
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return model


def bench_case(name: str, size: int, batch: int, repeats: int, in_chans: int,
               num_classes: int, seed: int) -> dict:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from mdlib.models import build_model, cam_layer, reshape_transform
    from mdlib.saliency import gradcam

    torch.manual_seed(seed)
    model = randomise_bn(build_model(name, in_chans, num_classes, size), seed).eval()
    x = torch.rand(batch, in_chans, size, size)
    t = torch.randint(0, num_classes, (batch,))

    def ours():
        return gradcam(model, x, t)

    def ref():
        with GradCAM(model, [cam_layer(model)], reshape_transform(model)) as cam:
            out = cam(x, [ClassifierOutputTarget(int(c)) for c in t])
        model.zero_grad(set_to_none=True)
        return torch.from_numpy(out)

    a, b = ours(), ref()  # warm-up
    diff = float((a - b).abs().max())
    times: dict[str, list[float]] = {"ours": [], "ref": []}
    for _ in range(repeats):
        for key, fn in (("ours", ours), ("ref", ref)):
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(case=f"{name}@{size}px", ours=med["ours"], ref=med["ref"],
                ratio=med["ref"] / med["ours"], max_abs_diff=diff,
                nonzero=float(a.abs().sum()) > 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["small_cnn:28", "resnet18:28"],
                    help="model:size pairs (default: small_cnn:28 resnet18:28)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--in-chans", type=int, default=1)
    ap.add_argument("--num-classes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the table as CSV to this file")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, "
          f"median of {args.repeats} after a warm-up")
    print(f"{'case':<18} {'mdlib (s)':>10} {'pytorch-grad-cam (s)':>21} {'speed-up':>9} "
          f"{'max|diff|':>10}")
    ok, rows = True, []
    for case in args.cases:
        name, _, size = case.partition(":")
        r = bench_case(name, int(size or 28), args.batch, args.repeats, args.in_chans,
                       args.num_classes, args.seed)
        agree = r["max_abs_diff"] <= 1e-3 and r["nonzero"]
        ok &= agree
        print(f"{r['case']:<18} {r['ours']:>10.4f} {r['ref']:>21.4f} {r['ratio']:>8.2f}x "
              f"{r['max_abs_diff']:>10.2e}{'' if agree else '  DISAGREE'}", flush=True)
        rows.append({**r, "batch": args.batch, "threads": args.threads, "repeats": args.repeats})
    if args.out:
        import pandas as pd
        from mdlib.io import write_csv
        write_csv(args.out, pd.DataFrame(rows))
        print("written", args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
