"""Benchmark (Table VI of paper 003): inference cost per image of DiffMIC-v2 at 10 DDIM
steps against its plain backbone (C1) and against 100-step sampling, side by side in one
run (interleaved repetitions, medians), with FLOPs from torch's flop counter and the FLOPs
of each part (DCG branches, image feature prior, denoiser per step). The cases are the
profile's ``diffmic.bench.cases`` (the study's models at their image sizes; random
weights). Writes ``figures/<profile>/bench_diffmic.csv`` and prints whether DiffMIC-v2 at
10 steps costs at most 3x the plain backbone, and which part has the most FLOPs.

    python scripts/bench_diffmic.py                       # the cpu profile's cases
    python scripts/bench_diffmic.py --profile smoke --repeats 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--repeats", type=int, default=None, help="default: the profile's bench.repeats")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="default: figures/<profile>/bench_diffmic.csv")
    a = ap.parse_args(argv)

    import pandas as pd
    import torch

    from mdlib import paths, profiles
    from mdlib.io import write_csv
    from mdlib.studies.diffmic import bench, study

    torch.set_num_threads(a.threads)
    prof = profiles.load(a.profile)
    b = study.settings(prof).get("bench") or {}
    cases = bench.profile_cases(prof)
    if not cases:
        print(f"profile {a.profile}: diffmic.bench.cases is empty", file=sys.stderr)
        return 2
    t0 = time.time()
    table = bench.run(cases, steps=tuple(b.get("steps", (10, 100))),
                      repeats=int(a.repeats or b.get("repeats", 5)))
    table["threads"] = a.threads
    out = Path(a.out) if a.out else paths.figures_dir(a.profile) / "bench_diffmic.csv"
    write_csv(out, table)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table[table.row == "method"][["case", "batch", "method", "gflops_per_image",
                                            "ms_per_image", "flops_ratio_vs_plain",
                                            "time_ratio_vs_plain"]].round(4).to_string(index=False))
        print(bench.target_check(table).round(3).to_string(index=False))
    print(f"wrote {out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
