"""Tests of mdlib.saliency: agreement with pytorch-grad-cam, batching, restoring the
model's state, the per-split cache, CAM variants, and a guidance classifier that never
sees the test split. Small random inputs; every test takes a few seconds at most."""
from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn as nn

from mdlib import saliency
from mdlib.data import ImageDataset, check_file
from mdlib.models import build_model, cam_layer, reshape_transform
from mdlib.saliency import (cam_variant, compute_split_saliency, gradcam, saliency_key)
from mdlib.train import train_guidance_classifier



@pytest.fixture(autouse=True)
def _one_thread():
    # on a shared 2-core machine, two OpenMP threads make small-tensor ops of the deep
    # backbones up to ~100x slower than one (barrier waits under contention)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine parameters and running statistics, so a random-init network in
    eval mode gives non-degenerate, image-dependent maps."""
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


#: ViT-B/16 at reduced width (12 blocks, same patching, CLS token and CAM layer
#: ``blocks.11.norm1``) so the tests stay fast: full width costs ~9 GFLOPs per 28 px image
SMALL_KW = {"vit_b16": dict(embed_dim=96, num_heads=3)}


def make(name: str, in_chans: int = 1, num_classes: int = 3, size: int = 28, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(name, in_chans, num_classes, size, **SMALL_KW.get(name, {}))
    return randomise_bn(model, seed).eval()


def reference(model, x, targets):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    with GradCAM(model, [cam_layer(model)], reshape_transform(model)) as cam:
        out = cam(x, [ClassifierOutputTarget(int(t)) for t in targets])
    model.zero_grad(set_to_none=True)
    return torch.from_numpy(out)


def check_maps(s: torch.Tensor, b: int, h: int, w: int) -> None:
    assert s.shape == (b, h, w)
    assert s.dtype == torch.float32
    assert torch.isfinite(s).all()
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0


# --------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("name,batch", [("small_cnn", 4), ("resnet18", 4),
                                        ("densenet121", 3), ("efficientnet_b4", 2)])
def test_agrees_with_pytorch_grad_cam(name, batch):
    model = make(name)
    torch.manual_seed(1)
    x = torch.rand(batch, 1, 28, 28)
    targets = torch.arange(batch) % 3
    ours = gradcam(model, x, targets)
    ref = reference(model, x, targets)
    check_maps(ours, batch, 28, 28)
    assert float((ours - ref).abs().max()) <= 1e-3
    # non-trivial maps. With random weights, ReLU(sum_c w_c A_c) can be all-zero for some
    # (image, class) pairs (the class's evidence is negative everywhere): legitimate, and
    # pytorch-grad-cam agrees; but most maps must be non-constant, reaching ~1.
    peak = ours.amax(dim=(1, 2))
    assert ((peak == 0) | (peak > 0.99)).all()
    assert int((peak > 0.99).sum()) >= (batch + 1) // 2
    assert float(ours.std()) > 0.05


@pytest.mark.parametrize("name", ["vit_b16", "swin_t"])
def test_transformers_give_maps(name):
    model = make(name)
    torch.manual_seed(2)
    x = torch.rand(2, 1, 28, 28)
    targets = torch.tensor([0, 2])
    ours = gradcam(model, x, targets)
    check_maps(ours, 2, 28, 28)
    assert float(ours.abs().sum()) > 0
    assert float((ours - reference(model, x, targets)).abs().max()) <= 1e-3


def test_rgb_64px_and_default_targets():
    model = make("small_cnn", in_chans=3, num_classes=4, size=64)
    torch.manual_seed(3)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        pred = model(x).argmax(1)
    s = gradcam(model, x)
    check_maps(s, 3, 64, 64)
    assert torch.equal(s, gradcam(model, x, pred))
    assert float((s - reference(model, x, pred)).abs().max()) <= 1e-3


# --------------------------------------------------------------------------- behaviour
def test_per_image_targets_and_chunks():
    model = make("small_cnn")
    torch.manual_seed(4)
    x = torch.rand(4, 1, 28, 28)
    a = gradcam(model, x, torch.tensor([0, 1, 2, 0]))
    b = gradcam(model, x, torch.tensor([0, 2, 2, 0]))
    assert float((a[1] - b[1]).abs().max()) > 0.05
    keep = [0, 2, 3]
    torch.testing.assert_close(a[keep], b[keep], atol=1e-6, rtol=0)
    # chunks give the same maps as one pass; a list of ints works as targets
    c = gradcam(model, x, [0, 1, 2, 0], batch_size=3)
    torch.testing.assert_close(a, c, atol=1e-6, rtol=0)


def test_restores_model_state():
    model = make("small_cnn")
    model.train()
    model.stage2.eval()  # a mixed-mode model
    model.fc.bias.requires_grad_(False)
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():  # works under no_grad as well
        s = gradcam(model, x, torch.tensor([0, 1]))
    with torch.inference_mode():  # and under inference_mode, even with inference tensors
        xi = x.clone()
        torch.testing.assert_close(gradcam(model, xi, torch.tensor([0, 1])), s, atol=0, rtol=0)
    check_maps(s, 2, 28, 28)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # BN stats
    assert not model._forward_hooks and not cam_layer(model)._forward_hooks
    # eval mode was used: the train-mode (dropout, batch-stat BN) maps would differ
    model.eval()
    torch.testing.assert_close(s, gradcam(model, x, torch.tensor([0, 1])), atol=1e-6, rtol=0)


def test_constant_map_gives_zeros():
    model = make("small_cnn")
    with torch.no_grad():
        for m in model.stage3.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
                m.bias.fill_(0.3)
    x = torch.rand(3, 1, 28, 28)
    s = gradcam(model, x, torch.tensor([0, 1, 2]))
    assert torch.isfinite(s).all()
    assert torch.equal(s, torch.zeros(3, 28, 28))


def test_bad_inputs():
    model = make("small_cnn")
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match="4-D"):
        gradcam(model, x[0])
    with pytest.raises(ValueError, match="4-D"):
        gradcam(model, x[None])
    with pytest.raises(ValueError, match="empty"):
        gradcam(model, x[:0])
    with pytest.raises(ValueError, match="dtype"):
        gradcam(model, (x * 255).to(torch.uint8))
    with pytest.raises(TypeError):
        gradcam(model, x.numpy())
    with pytest.raises(ValueError, match="3 targets"):
        gradcam(model, x, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="out of range"):
        gradcam(model, x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="negative"):
        gradcam(model, x, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="dtype"):
        gradcam(model, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        gradcam(model, x, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="batch_size"):
        gradcam(model, x, batch_size=0)
    with pytest.raises(ValueError, match="unknown CAM method"):
        cam_variant(model, x, None, method="not-a-cam")
    # a failed call leaves no hook behind and the model state intact
    assert not cam_layer(model)._forward_hooks
    assert all(p.requires_grad for p in model.parameters())


def test_explicit_layer_and_token_layer_needs_reshape():
    model = make("small_cnn")
    x = torch.rand(2, 1, 28, 28)
    a = gradcam(model, x, [0, 1])
    torch.testing.assert_close(a, gradcam(model, x, [0, 1], layer="stage3"), atol=0, rtol=0)
    s2 = gradcam(model, x, [0, 1], layer=model.stage2)
    check_maps(s2, 2, 28, 28)
    vit = make("vit_b16")
    # the model's own CAM layer passed explicitly still gets the model's reshape
    check_maps(gradcam(vit, x, [0, 1], layer=cam_layer(vit)), 2, 28, 28)
    with pytest.raises(ValueError, match="reshape"):
        gradcam(vit, x, [0, 1], layer=vit.blocks[10].norm1)


# --------------------------------------------------------------------------- variants
def test_cam_variants():
    model = make("small_cnn")
    model.train()
    x = torch.rand(3, 1, 28, 28)
    t = torch.tensor([0, 1, 2])
    g = cam_variant(model, x, t, method="GradCAM")
    assert float((g - gradcam(model, x, t)).abs().max()) <= 1e-3
    for method in ("gradcam++", "eigencam", "layercam", "hirescam", "xgradcam"):
        s = cam_variant(model, x, t, method=method)
        check_maps(s, 3, 28, 28)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert "gradcam++" in saliency.available_cams()


# --------------------------------------------------------------------------- cache
def test_split_cache(tmp_path, monkeypatch):
    tmp_path = tmp_path / "saliency_cache"  # a folder of its own (created on write)
    model = make("small_cnn")
    torch.manual_seed(5)
    x = torch.rand(10, 1, 28, 28)
    y = torch.randint(0, 3, (10,))
    s1 = compute_split_saliency(model, x, y, batch_size=4, cache_path=tmp_path)
    check_maps(s1, 10, 28, 28)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary file left
    with np.load(files[0], allow_pickle=False) as z:
        assert z["maps"].dtype == np.float16 and z["maps"].shape == (10, 28, 28)
        assert str(z["key"]) == saliency_key(model, x, y)
    # float16 storage: close to the direct computation
    assert float((s1 - gradcam(model, x, y)).abs().max()) <= 1e-3

    def boom(*a, **k):
        raise AssertionError("gradcam called although the maps are cached")
    monkeypatch.setattr(saliency, "gradcam", boom)
    s2 = compute_split_saliency(model, x, y, batch_size=4, cache_path=tmp_path)
    assert torch.equal(s1, s2)

    # a changed model, changed images or changed labels give another key -> recompute
    other = make("small_cnn")
    with torch.no_grad():
        other.fc.weight[0, 0] += 1e-3
    k = saliency_key(model, x, y)
    assert saliency_key(other, x, y) != k
    assert saliency_key(model, x.flip(-1), y) != k
    assert saliency_key(model, x, (y + 1) % 3) != k
    with pytest.raises(AssertionError, match="cached"):
        compute_split_saliency(other, x, y, batch_size=4, cache_path=tmp_path)


def test_split_cache_file_path_and_uint8(tmp_path):
    model = make("small_cnn")
    rng = np.random.default_rng(0)
    x_u8 = rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)  # ImageDataset layout
    y = np.array([0, 1, 2, 0, 1, 2])
    f = tmp_path / "maps.npz"
    s1 = compute_split_saliency(model, x_u8, y, cache_path=f)
    check_maps(s1, 6, 28, 28)
    assert f.is_file()
    # a different model reuses the same file name but not its content
    other = make("small_cnn", seed=1)
    s2 = compute_split_saliency(other, x_u8, y, cache_path=f)
    assert not torch.equal(s1, s2)
    with np.load(f, allow_pickle=False) as z:
        assert str(z["key"]) == saliency_key(other, torch.from_numpy(x_u8).permute(0, 3, 1, 2)
                                             .float().div(255), torch.from_numpy(y))
    # a corrupt file is recomputed and overwritten
    f.write_bytes(b"not an npz")
    torch.testing.assert_close(compute_split_saliency(other, x_u8, y, cache_path=f), s2)


# --------------------------------------------------------------------------- guidance model
def _tiny_breast(path, noise_test: bool) -> ImageDataset:
    full = check_file(path)
    splits = {}
    for s, per_class in (("train", 12), ("val", 6), ("test", 6)):
        x, y = full.splits[s]
        idx = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(2)])
        xs, ys = x[idx].copy(), y[idx].copy()
        if s == "test" and noise_test:
            xs = np.random.default_rng(123).integers(0, 256, xs.shape, dtype=np.uint8)
        splits[s] = (xs, ys)
    return ImageDataset(full.name, full.size, full.n_classes, full.channels, full.modality,
                        full.class_names, splits, full.source, {})


def test_guidance_classifier_never_sees_test(breast_npz):
    from mdlib.train import TrainConfig
    cfg = TrainConfig(model="small_cnn", epochs=1, batch_size=8, seed=0, device="cpu",
                      model_kwargs={"width": 8})
    m1, res = train_guidance_classifier(_tiny_breast(breast_npz, False), cfg, return_result=True)
    m2 = train_guidance_classifier(_tiny_breast(breast_npz, True), cfg.to_dict())
    assert not m1.training and not m2.training
    assert res.test == {} and len(res.test_probs) == 0
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    with pytest.raises(ValueError, match="fixed"):
        train_guidance_classifier(_tiny_breast(breast_npz, False), cfg, evaluate_test=True)
