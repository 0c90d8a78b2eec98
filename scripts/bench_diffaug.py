"""Throughput of the DiffAug study's segmenters and generator, side by side in one run
(Table 4 of paper 001), on this machine:

* images/s on the test frames, batched, of the plain U-Net, the single-step latent
  segmenter and the same segmenter run iteratively (``bench.iterative_steps`` DDIM steps,
  50 on cpu / gpu), autoencoder encoding and decoding included, with each one's test Dice;
  repetitions interleaved (A B C A B C ...) and medians taken, since the machine is shared;
* where a single-step image's time goes (encoder, vision encoder + fusion, one denoiser
  call, decoder);
* generator samples/s (the profile's DDIM steps and guidance).

Writes ``figures/<profile>/bench_diffaug.csv`` and ``bench_diffaug_breakdown.csv`` and
prints the ratios against the issue's targets (single-step >= 20x iterative, within 3x of
the U-Net). The models are the study's (notebook 15 trains them: the real-only U-Net and
latent segmenter of seed ``gate.seed``, and the generator); missing ones are an error.

    python scripts/bench_diffaug.py --profile cpu
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--reps", type=int, default=None, help="override bench.reps")
    ap.add_argument("--batch", type=int, default=None, help="override bench.batch")
    a = ap.parse_args(argv)
    from mdlib import paths, profiles
    from mdlib.runs.store import Run
    from mdlib.studies.diffaug import bench, study
    over = {k: v for k, v in (("reps", a.reps), ("batch", a.batch)) if v}
    prof = profiles.load(a.profile, overrides={"diffaug": {"bench": over}} if over else None)
    s = study.settings(prof)
    seed = int(s["gate"]["seed"])
    need = {"judge U-Net": Run("diffaug_seg", prof["name"], study.segmenter_config(prof, study.arm("unet"), seed)),
            "gate": Run("diffaug_seg", prof["name"], study.segmenter_config(prof, study.gate_arm(), seed)),
            "generator": Run("diffaug_gen", prof["name"], study.gen_config(prof)[0])}
    missing = [f"{k} ({r.dir})" for k, r in need.items() if not r.done]
    if missing:
        print(f"not trained yet: {', '.join(missing)}; run notebook 15 with PROFILE={a.profile} first",
              file=sys.stderr)
        return 2
    tab, br = bench.run(prof)
    out = paths.figures_dir(prof["name"])
    tab.to_csv(out / "bench_diffaug.csv", index=False)
    br.to_csv(out / "bench_diffaug_breakdown.csv", index=False)
    print(tab.to_string(index=False))
    print(br.to_string(index=False))
    single = tab[tab.method.str.contains("single")].iloc[0]
    print(f"single-step vs iterative: {single.speedup_vs_iterative:.1f}x (target >= 20x); "
          f"U-Net / single-step: {single.slowdown_vs_unet:.2f}x (target <= 3x)")
    print(f"written: {out / 'bench_diffaug.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
