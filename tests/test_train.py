"""Trainer: determinism, model selection, test isolation, checkpoints, metrics, the
augmentation interface."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mdlib import augment, data, metrics
from mdlib.data import to_tensor
from mdlib.train import TrainConfig, load_checkpoint, save_checkpoint, train_classifier


@pytest.fixture(scope="module")
def small(data_root):
    ds = data.load_dataset("breastmnist", 28, root=data_root, download=False)
    idx = data.subsample_per_class(ds.y("train"), per_class=24, seed=0)
    return ds.with_train_subset(idx)


CFG = dict(epochs=2, batch_size=16, model_kwargs={"width": 8}, seed=7, device="cpu")


def test_deterministic_bit_for_bit(small):
    a = train_classifier(small, TrainConfig(**CFG), progress=False)
    b = train_classifier(small, TrainConfig(**CFG), progress=False)
    assert a.history.equals(b.history)
    assert np.array_equal(a.test_probs, b.test_probs)
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k])
    c = train_classifier(small, TrainConfig(**dict(CFG, seed=8)), progress=False)
    assert not np.array_equal(a.test_probs, c.test_probs)


def test_selection_on_val_and_copy_of_best_weights(small):
    r = train_classifier(small, TrainConfig(**dict(CFG, epochs=3)), progress=False, keep_model=True)
    assert r.best_epoch == int(r.history["val_auc"].idxmax()) + 1
    # the kept state is a copy: changing the live model does not change it
    before = {k: v.clone() for k, v in r.state_dict.items()}
    with torch.no_grad():
        for p in r.model.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], r.state_dict[k]) for k in before)
    assert set(r.test) >= {"acc", "precision", "recall", "f1", "auc", "ece"}


def test_test_split_never_used_for_training_or_selection(small):
    cfg = TrainConfig(**CFG)
    a = train_classifier(small, cfg, progress=False, evaluate_test=False)
    splits = dict(small.splits)
    x, y = splits["test"]
    splits["test"] = (np.random.default_rng(0).integers(0, 256, x.shape, dtype=np.uint8), y)
    other = data.ImageDataset(small.name, small.size, small.n_classes, small.channels,
                              small.modality, small.class_names, splits)
    b = train_classifier(other, cfg, progress=False, evaluate_test=False)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert a.test == {} and len(a.test_probs) == 0


def test_checkpoint_roundtrip(tmp_path, small):
    r = train_classifier(small, TrainConfig(**dict(CFG, epochs=1)), progress=False)
    p = tmp_path / "m.safetensors"
    save_checkpoint(p, r.state_dict, {"model": "small_cnn"})
    state, meta = load_checkpoint(p)
    assert meta == {"model": "small_cnn"}
    assert all(torch.equal(state[k], r.state_dict[k]) for k in state)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.safetensors")


def test_bad_train_config():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)


def test_metrics_match_sklearn_and_ece():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.6 + rng.random(200) * 0.4, 0, 1)
    probs = np.stack([1 - p1, p1], 1)
    m = metrics.classification_metrics(y, probs)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p1))
    assert m["acc"] == pytest.approx(((p1 > 0.5) == y).mean())
    # ECE: perfectly calibrated constant confidence 0.75 with 75 % accuracy -> 0
    y2 = np.array([1] * 75 + [0] * 25)
    pr = np.tile([0.25, 0.75], (100, 1))
    assert metrics.expected_calibration_error(y2, pr) == pytest.approx(0.0)
    # confident and always wrong -> ECE = confidence
    assert metrics.expected_calibration_error(np.zeros(10, int), np.tile([0.1, 0.9], (10, 1))) \
        == pytest.approx(0.9)
    y5 = np.arange(100) % 5
    p5 = rng.dirichlet(np.ones(5), 100)
    assert metrics.auc(y5, p5) == pytest.approx(roc_auc_score(y5, p5, multi_class="ovr"))


class _ConstantBank(augment.Augmentation):
    name = "test_bank"

    def build_bank(self, ctx):
        assert ctx.x_train.shape[0] == len(ctx.y_train)
        x = torch.zeros(10, *ctx.x_train.shape[1:])
        y = torch.nn.functional.one_hot(torch.zeros(10, dtype=torch.long), ctx.n_classes).float()
        return x, y


def test_augmentation_interface(small):
    g = torch.Generator().manual_seed(0)
    x = to_tensor(small.x("train")[:16])
    y = torch.nn.functional.one_hot(torch.from_numpy(small.y("train")[:16]), 2).float()
    xs = augment.get("standard_aug").per_sample(x, g)
    assert xs.shape == x.shape and 0 <= xs.min() and xs.max() <= 1 and not torch.equal(xs, x)
    xm, ym = augment.get("mixup", alpha=0.2).mix_batch(x, y, g)
    assert torch.allclose(ym.sum(1), torch.ones(16)) and xm.shape == x.shape
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.get("cutmagic")
    # an offline bank plugs in; the step budget is unchanged
    r1 = train_classifier(small, TrainConfig(**dict(CFG, epochs=1)), _ConstantBank(), progress=False)
    r0 = train_classifier(small, TrainConfig(**dict(CFG, epochs=1)), progress=False)
    assert len(r1.history) == len(r0.history) == 1
    assert not np.array_equal(r1.test_probs, r0.test_probs)


def test_frechet_distance():
    from mdlib.diffusion.fid import frechet_distance
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # two Gaussians with identity covariance: FD = |mu1 - mu2|^2 (up to sampling noise)
    b = rng.normal(size=(4000, 4)) + 2.0
    c = rng.normal(size=(4000, 4))
    assert frechet_distance(b, c) == pytest.approx(16.0, rel=0.05)
    with pytest.raises(ValueError):
        frechet_distance(a, a[:, :3])
