"""Trainer: determinism, model selection (the reported and tested weights are the selected
epoch's), test isolation, checkpoints, the budget in optimizer steps, the augmentation
interface. Metrics: tests/test_metrics.py; Fréchet distance: tests/test_fid.py."""
import contextlib
import math

import numpy as np
import pytest
import torch

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


@contextlib.contextmanager
def count_optimizer_steps():
    """Counts every ``optimizer.step()`` while inside (torch's global step hook)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook
    n = [0]
    h = register_optimizer_step_post_hook(lambda opt, args, kwargs: n.__setitem__(0, n[0] + 1))
    try:
        yield n
    finally:
        h.remove()


def test_selection_on_val_and_copy_of_best_weights(small):
    r = train_classifier(small, TrainConfig(**dict(CFG, epochs=3)), progress=False, keep_model=True)
    h = r.history
    assert r.best_epoch == int(h["val_auc"].idxmax()) + 1
    # this configuration's best epoch is not the last one, so the checks below can tell the
    # selected weights from the final ones
    assert r.best_epoch < len(h) and h["val_auc"].iloc[-1] < h["val_auc"].max()
    # the reported validation AUC is the best epoch's
    assert r.val["auc"] == pytest.approx(h["val_auc"].max(), abs=1e-12)
    # the kept weights are the selected ones: they reproduce the reported validation and
    # test numbers, and the tested probabilities are theirs
    from mdlib.models import build_model
    from mdlib.train import predict_proba
    m = build_model("small_cnn", small.channels, small.n_classes, small.size, **CFG["model_kwargs"])
    m.load_state_dict(r.state_dict)
    p_val = predict_proba(m, to_tensor(small.x("val")))
    assert metrics.auc(small.y("val"), p_val) == pytest.approx(r.val["auc"], abs=1e-12)
    p_test = predict_proba(m, to_tensor(small.x("test")))
    np.testing.assert_array_equal(p_test, r.test_probs)
    assert r.test == metrics.classification_metrics(small.y("test"), p_test, small.positive())
    np.testing.assert_array_equal(r.test_labels, small.y("test"))
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
    # an offline bank plugs in; the budget in optimizer steps is unchanged: epochs x
    # ceil(n_real / batch), although the pool the batches come from is larger
    cfg = TrainConfig(**dict(CFG, epochs=2))
    with count_optimizer_steps() as n1:
        r1 = train_classifier(small, cfg, _ConstantBank(), progress=False)
    with count_optimizer_steps() as n0:
        r0 = train_classifier(small, cfg, progress=False)
    expected = 2 * math.ceil(len(small.y("train")) / CFG["batch_size"])
    assert n1[0] == n0[0] == expected
    assert not np.array_equal(r1.test_probs, r0.test_probs)
    # the cosine schedule spans exactly that budget: at its end the rate is 0
    assert r1.history["lr"].iloc[-1] == pytest.approx(0.0, abs=1e-12)
