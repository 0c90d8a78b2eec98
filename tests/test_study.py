"""mdlib.studies.meddiffusemix.study and mdlib.runs.tasks: per-run resolution of the study's settings (no training)."""
import pytest

from mdlib import profiles
from mdlib.runs import tasks
from mdlib.studies.meddiffusemix import study


def test_method_params_equal_budget_and_modality():
    prof = profiles.load("cpu")
    frac = prof["augment"]["fraction"]
    for m in study.ONLINE_METHODS:
        assert study.method_params(prof, "breastmnist", m)["p"] == frac
    for m in study.OFFLINE_METHODS:
        n = study.method_params(prof, "breastmnist", m)["n_per_image"]
        assert n / (1 + n) == pytest.approx(frac)  # same expected share of augmented images
    mdm = study.method_params(prof, "pneumoniamnist", "meddiffusemix")
    assert mdm["omega"] == 0.7 and mdm["sigma"] == pytest.approx(1.5)
    assert study.method_params(prof, "lc25000_lung", "meddiffusemix")["omega"] == 1.0
    big = profiles.load("cpu", overrides={"image_size": 64})
    assert study.method_params(big, "breastmnist", "meddiffusemix")["sigma"] == pytest.approx(1.5 * 64 / 28, abs=1e-3)
    assert study.method_params(prof, "lc25000_lung", "standard_aug")["hflip"] is True
    assert study.method_params(prof, "pneumoniamnist", "standard_aug")["hflip"] is False
    assert study.method_params(prof, "breastmnist", "meddiffusemix", delta=0.5)["delta"] == 0.5
    with pytest.raises(ValueError, match="unknown augmentation method"):
        study.method_params(prof, "breastmnist", "cutmix")


def test_study_setup_and_resource_seed():
    cpu = profiles.load("cpu")
    p, t = tasks.study_setup(cpu, "pneumoniamnist")
    assert p["limited_data"] == {"fraction": 0.1, "seed": 0} and t["epochs"] == 40
    assert cpu["limited_data"] is None  # the profile itself is not modified
    assert tasks.resource_seed(p, 3) == 0  # fixed subset: one generator for every seed
    p, _ = tasks.study_setup(cpu, "pneumoniamnist", limited_data="full", train={"epochs": 5})
    assert p["limited_data"] is None
    p, t = tasks.study_setup(cpu, "breastmnist", train={"epochs": 5})
    assert p["limited_data"] is None and t == {"epochs": 5, "batch_size": 64}
    smoke = profiles.load("smoke")
    p, t = tasks.study_setup(smoke, "pneumoniamnist")
    assert p["limited_data"] == {"per_class": 40} and t == {}
    assert tasks.resource_seed(p, 1) == 1  # per-seed subsets: per-seed resources
    assert tasks.resource_seed(cpu, 4) == 0


def test_limited_data_rejects_unknown_keys(data_root):
    prof = profiles.load("smoke", overrides={"limited_data": {"fraction": 0.5, "sede": 0}})
    with pytest.raises(ValueError, match="unknown key"):
        tasks.load_data(prof, "breastmnist", 0)
