"""Every backbone builds at 28 and 64 px, grey and RGB, and runs forward + backward."""
import pytest
import torch

from mdlib.models import BACKBONES, build_model, cam_layer, embed, reshape_transform


@pytest.mark.parametrize("name", BACKBONES)
def test_backbones_forward_backward(name):
    """One forward + backward per (size, channels); the CAM layer's activation is caught on
    the same forward pass (batch of 1 keeps the 86M-parameter ViT affordable on 2 cores)."""
    torch.manual_seed(0)
    for size in (28, 64):
        for chans in (1, 3):
            m = build_model(name, chans, 3, size)
            x = torch.randn(1, chans, size, size)
            acts = {}
            h = cam_layer(m).register_forward_hook(lambda mod, i, o: acts.__setitem__("a", o))
            y = m(x)
            h.remove()
            assert y.shape == (1, 3) and torch.isfinite(y).all()
            y.sum().backward()
            assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
            rt = reshape_transform(m)
            a = rt(acts["a"]) if rt else acts["a"]
            assert a.ndim == 4 and a.shape[0] == 1 and min(a.shape[2:]) >= 2, (name, size, a.shape)
    f = embed(m, x)
    assert f.ndim == 2 and f.shape[0] == 1 and f.shape[1] == m.num_features


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet9000", 1, 2)
    with pytest.raises(ValueError, match="in_chans"):
        build_model("small_cnn", 2, 2)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("small_cnn", 1, 1)
