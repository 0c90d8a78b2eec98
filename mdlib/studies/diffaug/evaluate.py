"""Evaluate a trained DiffAug-study segmenter on any ``images/`` + ``masks/`` folder pair
(another polyp dataset, e.g. Kvasir-SEG), without retraining::

    python -m mdlib.studies.diffaug.evaluate RUN_DIR FOLDER [--out CSV] [--allow-empty]
        [--images images] [--masks masks] [--batch-size 32]

``RUN_DIR``: a finished ``runs/diffaug_seg/<profile>/<hash>/`` (U-Net or latent segmenter);
``FOLDER``: holds ``images/`` and ``masks/`` with the same file names (validated first:
:func:`mdlib.data.segmentation.load_segmentation_folder`). The frames are resized to the
run's working size. Writes per-image metrics (``--out``, default
``<FOLDER name>_<run hash>_per_image.csv`` in the current directory) and prints the mean
and pooled metrics and the small-lesion detection.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ...data.segmentation import load_segmentation_folder
from ...metrics import segmentation as segm
from ...train.segmentation import predict_masks


def evaluate_folder(run_dir, folder, images: str = "images", masks: str = "masks",
                    require_foreground: bool = True, batch_size: int = 32,
                    small_frac: float = segm.SMALL_FRAC, detect_iou: float = segm.DETECT_IOU
                    ) -> tuple[pd.DataFrame, dict]:
    """``(per-image metrics, summary)`` of the run's segmenter on the folder pair."""
    from .study import load_segmenter
    run_dir = Path(run_dir)
    if not (run_dir / "DONE").is_file() or not (run_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"{run_dir}: not a finished segmenter run (DONE and "
                                "model.safetensors expected)")
    cfg = json.loads((run_dir / "config.json").read_text())["config"]
    size = int(cfg["image_size"])
    ds = load_segmentation_folder(folder, size, images=images, masks=masks,
                                  require_foreground=require_foreground, cache=False)
    model = load_segmenter(run_dir)
    probs = predict_masks(model, ds.images, batch_size)
    pred = probs >= 0.5
    pi = pd.DataFrame(segm.per_image(pred, ds.masks))
    pi.insert(0, "id", ds.ids)
    summ = segm.summary(pred, ds.masks)
    summ.update({f"small_{k}": v for k, v in
                 segm.small_lesion_metrics(pred, ds.masks, small_frac, detect_iou).items()})
    summ.update({"n_images": int(len(ds)), "image_size": size, "run": run_dir.name,
                 "folder": str(folder)})
    return pi, summ


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mdlib.studies.diffaug.evaluate",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("folder")
    ap.add_argument("--images", default="images")
    ap.add_argument("--masks", default="masks")
    ap.add_argument("--out", default=None)
    ap.add_argument("--allow-empty", action="store_true",
                    help="accept frames whose mask is empty (no lesion)")
    ap.add_argument("--batch-size", type=int, default=32)
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    pi, summ = evaluate_folder(a.run_dir, a.folder, a.images, a.masks,
                               require_foreground=not a.allow_empty, batch_size=a.batch_size)
    out = Path(a.out or f"{Path(a.folder).name}_{Path(a.run_dir).name}_per_image.csv")
    from ...io import write_csv
    write_csv(out, pi)
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) and np.isfinite(v) else v)
                      for k, v in summ.items()}, indent=2, default=str))
    print(f"per-image metrics: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
