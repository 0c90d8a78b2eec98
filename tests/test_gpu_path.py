"""The gpu profile's code path, executed on CPU with its loop counts and widths shrunk,
so that a GPU user's first `make study PROFILE=gpu` does not crash on code nobody ran.

`gpu_tiny` (written into the test's folder, found through MDLIB_PROFILE_PATH) extends the
shipped gpu profile and changes only sizes and counts: 8 training images per class, one
epoch, a ResNet-50 with narrow stages (same Bottleneck architecture from timm, the CIFAR
stem of 64 px inputs), a three-level attention UNet with narrow channels and two steps,
two sampling / refinement steps, a narrow DenseNet-121 as the independent judge. Everything else is the gpu profile: 64 px images, no
`study` subsets, the gpu training recipe, guidance and diffusion settings.

Executed: the main gpu grid's first configuration through the sweep runner (notebook 06:
MedDiffuseMix on BreastMNIST at 64 px, seed 0, ResNet-50; it trains the guidance
classifier, the diffusion model and its samples, the Grad-CAM cache and the bank), then
notebooks 03 (guidance classifiers and Grad-CAM galleries) and 05 (every augmentation at
64 px, the independent judge) on that profile, two at a time. Not executed here: notebook
04 (its final check that samples are recognised above chance is skipped only for a
profile named ``smoke``; a two-step generator cannot pass it), notebooks 12 and 13 on the
gpu profile (their evaluations scale with the full test split: minutes on CPU) and the
result notebooks 07-11 (they need the whole grid).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mdlib import profiles

REPO = Path(__file__).resolve().parent.parent

GPU_TINY = """\
extends: gpu
description: the gpu profile's code path with its loop counts and widths shrunk (tests only)
datasets: [breastmnist]
study_datasets: [breastmnist]
seeds: [0]
limited_data: {per_class: 8}
baseline: {model: resnet50, model_kwargs: {channels: [8, 16, 16, 16], stem_width: 8}, epochs: 1,
           batch_size: 8, eval_batch_size: 64}
dataset_overrides: {breastmnist: {epochs: 1, batch_size: 8}}
diffusion: {datasets: [breastmnist], block_out_channels: [8, 16, 32], train_steps: 2,
            checkpoint_every: 2, batch_size: 8, sample_steps: 2, n_eval_per_class: 4, sample_batch: 16}
meddiffusemix: {refine_steps: 2}
augment: {table_images: 8}
saliency: {batch_size: 64, gallery_per_class: 1}
figures: {examples_per_class: 2}
judge: {model: densenet121, model_kwargs: {growth_rate: 4, block_config: [1, 1, 1, 1]}, seed: 1, epochs: 1}
"""


def test_gpu_profile_builds_its_own_backbone():
    """`model_kwargs: {}` in the gpu profile clears the cpu profile's small-CNN kwargs
    (an empty mapping replaces when profiles are merged): before, every gpu run that
    built the baseline model (ResNet-50) failed with "unexpected keyword argument
    'width'"."""
    import torch

    from mdlib.models import build_model
    from mdlib.runs import tasks
    gpu = profiles.load("gpu")
    assert gpu["baseline"]["model_kwargs"] == {} and profiles.load("cpu")["baseline"]["model_kwargs"]
    for section in ("baseline", "guidance"):
        cfg = tasks.train_config(gpu, "breastmnist", 0, section=section)
        assert cfg.model == "resnet50" and cfg.model_kwargs == {}
        m = build_model(cfg.model, 1, 2, gpu["image_size"], **cfg.model_kwargs).eval()
        with torch.no_grad():
            assert m(torch.rand(1, 1, 64, 64)).shape == (1, 2)
    assert profiles.load("gpu", overrides={"baseline": {"model_kwargs": {}}})["baseline"]["model_kwargs"] == {}
    assert profiles.load("smoke")["baseline"]["model_kwargs"] == profiles.load("cpu")["baseline"]["model_kwargs"]


def _papermill(nb: str, out: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "papermill", "--log-level", "ERROR", "-p", "PROFILE",
                           "gpu_tiny", str(REPO / "notebooks" / nb), str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_gpu_path_runs_on_cpu(tmp_path, data_root):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "gpu_tiny.yaml").write_text(GPU_TINY)
    env = dict(os.environ, MDLIB_PROFILE_PATH=str(tmp_path / "profiles"), MDLIB_DATA_ROOT=str(data_root),
               MDLIB_RUNS_ROOT=str(tmp_path / "runs"), MDLIB_FIGURES=str(tmp_path / "figures"),
               MDLIB_THREADS="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "mdlib.sweep", "studies/main_gpu.yaml", "--profile", "gpu_tiny",
                        "--limit", "1", "--json", "--no-progress"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    s = json.loads(r.stdout.split("SUMMARY=", 1)[1])
    assert (s["total"], s["done"], s["failed"], s["pending"]) == (525, 1, 0, 524)
    (done,) = (tmp_path / "runs" / "sweeps" / "gpu_tiny" / "main_gpu").glob("*/DONE")
    info = json.loads(done.read_text())
    assert info["params"] == {"PROFILE": "gpu_tiny", "TASK": "study", "METHOD": "meddiffusemix",
                              "DATASET": "breastmnist", "SEED": 0, "MODEL": "resnet50"}
    run = json.loads((Path(info["run_dir"]) / "config.json").read_text())["config"]
    assert run["image_size"] == 64 and run["train"]["model"] == "resnet50"
    assert run["train"]["model_kwargs"] == {"channels": [8, 16, 16, 16], "stem_width": 8}
    assert run["augmentation"]["method"] == "meddiffusemix"
    (dconf,) = (tmp_path / "runs" / "diffusion" / "gpu_tiny").glob("*/config.json")
    diff = json.loads(dconf.read_text())["config"]["diffusion"]
    assert diff["attention"] is True and len(diff["block_out_channels"]) == 3 and diff["image_size"] == 64
    assert (Path(info["run_dir"]) / "bank_records.csv").is_file()

    with ThreadPoolExecutor(2) as ex:  # the two notebooks share the runs above (locks)
        outs = dict(zip(("03", "05"), ex.map(lambda nb: _papermill(nb, tmp_path / f"{nb[:2]}.ipynb", env),
                                             ["03_guidance_saliency.ipynb", "05_augmentation_gallery.ipynb"])))
    for nb, p in outs.items():
        assert p.returncode == 0, (nb, p.stderr[-3000:])
    figs = tmp_path / "figures" / "gpu_tiny"
    assert (figs / "03_gradcam_breastmnist.png").is_file() and (figs / "05_fig3_breastmnist.png").is_file()
