"""The study's generators are reproducible (issue: a wall-clock cap made them depend on the
machine): a step budget and a fixed thread count give the same weights bit for bit,
through the profile-driven path the study uses (mdlib.runs.tasks.diffusion_run)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from mdlib import profiles
from mdlib.runs import tasks


def _weights_digest(model_dir: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(model_dir.rglob("*.safetensors")):
        h.update(f.relative_to(model_dir).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture
def tiny_prof():
    prof = profiles.load("smoke", overrides={"diffusion": {"train_steps": 6, "checkpoint_every": 3,
                                                            "batch_size": 4}})
    assert prof["diffusion"].get("max_seconds") is None  # no wall-clock cap
    assert prof["diffusion"]["threads"] == 1
    return prof


def test_profiles_train_generators_on_a_step_budget():
    for name in ("smoke", "cpu", "gpu"):
        d = profiles.load(name)["diffusion"]
        assert d.get("max_seconds") is None, f"profile {name}: a wall-clock cap makes generators machine-dependent"
        assert int(d["train_steps"]) >= 1


def test_the_same_generator_twice(tiny_prof, data_root, tmp_path, monkeypatch):
    digests, steps = [], []
    n_threads = torch.get_num_threads()
    for k in range(2):
        monkeypatch.setenv("MDLIB_RUNS_ROOT", str(tmp_path / f"root{k}"))
        run, _ = tasks.diffusion_run(tiny_prof, "breastmnist", 0, progress=False)
        assert run.done and run.config["threads"] == 1 and run.config["max_seconds"] is None
        steps.append(run.info()["steps"])
        digests.append(_weights_digest(run.path("model")))
    assert torch.get_num_threads() == n_threads  # the thread setting is restored
    assert steps == [6, 6]
    assert digests[0] == digests[1], "two trainings of one configuration gave different weights"


def test_per_size_overrides_apply(tiny_prof, data_root):
    prof = dict(tiny_prof, image_size=64, diffusion_by_size={64: {"block_out_channels": [8, 16, 16]}})
    data, _ = tasks.load_data(prof, "breastmnist", 0)
    cfg, keys = tasks.diffusion_config(prof, data, 0)
    assert tuple(cfg.block_out_channels) == (8, 16, 16) and cfg.image_size == 64
    cfg28, _ = tasks.diffusion_config(tiny_prof, tasks.load_data(tiny_prof, "breastmnist", 0)[0], 0)
    assert tuple(cfg28.block_out_channels) == tuple(tiny_prof["diffusion"]["block_out_channels"])


def test_per_dataset_overrides_apply_after_the_per_size_ones(tiny_prof, data_root):
    prof = dict(tiny_prof, image_size=64, diffusion_by_size={64: {"block_out_channels": [8, 16, 16]}},
                diffusion_by_dataset={"breastmnist": {"block_out_channels": [16, 16, 16]},
                                      "pneumoniamnist": {"train_steps": 1}})
    data, _ = tasks.load_data(prof, "breastmnist", 0)
    cfg, _ = tasks.diffusion_config(prof, data, 0)
    assert tuple(cfg.block_out_channels) == (16, 16, 16)
    assert cfg.train_steps == tiny_prof["diffusion"]["train_steps"]  # another dataset's entry
    with pytest.raises(ValueError, match="diffusion_by_dataset"):
        tasks.diffusion_config(dict(prof, diffusion_by_dataset=[1]), data, 0)


def test_a_dataset_at_size_entry_sets_that_size_only(tiny_prof, data_root):
    """``<dataset>@<size>`` applies after ``<dataset>``, at that image size only."""
    by_ds = {"breastmnist": {"train_steps": 3}, "breastmnist@64": {"prediction_type": "v_prediction",
                                                                  "zero_terminal_snr": True}}
    prof = dict(tiny_prof, diffusion_by_dataset=by_ds)
    cfg28, _ = tasks.diffusion_config(prof, tasks.load_data(prof, "breastmnist", 0)[0], 0)
    assert (cfg28.train_steps, cfg28.prediction_type, cfg28.zero_terminal_snr) == (3, "epsilon", False)
    prof64 = dict(prof, image_size=64)
    cfg64, _ = tasks.diffusion_config(prof64, tasks.load_data(prof64, "breastmnist", 0)[0], 0)
    assert (cfg64.train_steps, cfg64.prediction_type, cfg64.zero_terminal_snr) == (3, "v_prediction", True)



def test_diagnose_generator_measures_the_study_generators(tiny_prof, data_root, tmp_path, monkeypatch):
    """scripts/diagnose_generator.py: one row per noise level with a finite relative x0 error,
    and per channel the real test images' colour statistics recomputed here; `plain` drops
    the per-dataset overrides, `profile` keeps them."""
    import importlib.util

    import numpy as np

    from mdlib.data import to_tensor
    monkeypatch.setenv("MDLIB_RUNS_ROOT", str(tmp_path))
    spec = importlib.util.spec_from_file_location(
        "diagnose_generator", Path(__file__).resolve().parents[1] / "scripts" / "diagnose_generator.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    prof = dict(tiny_prof, diffusion_by_dataset={"breastmnist": {"prediction_type": "v_prediction",
                                                                 "zero_terminal_snr": True}})
    rows, summ = mod.diagnose(prof, "breastmnist", "plain", n=8)
    rows_v, summ_v = mod.diagnose(prof, "breastmnist", "profile", n=8)
    assert [r["t"] for r in rows] == list(mod.T_LIST)
    assert all(np.isfinite(r["x0_err_over_var"]) and r["x0_err_over_var"] >= 0 for r in rows + rows_v)
    assert {r["prediction_type"] for r in rows} == {"epsilon"}
    assert {r["prediction_type"] for r in rows_v} == {"v_prediction"}
    assert rows[0]["generator"] != rows_v[0]["generator"]
    p, _ = tasks.study_setup(tiny_prof, "breastmnist")
    data, _ = tasks.load_data(p, "breastmnist", 0)
    yt = np.asarray(data.y("test"))
    idx = torch.randperm(len(yt), generator=torch.Generator().manual_seed(0))[:8].numpy()
    x = to_tensor(data.x("test")[idx])
    assert len(summ) == 1 and abs(summ[0]["real_mean"] - float(x.mean())) < 1e-6
    assert abs(summ[0]["real_image_mean_std"] - float(x.mean(dim=(1, 2, 3)).std())) < 1e-6
    assert 0.0 <= summ[0]["guidance_agreement"] <= 1.0
    with pytest.raises(ValueError, match="variant"):
        mod.diagnose(prof, "breastmnist", "other")
