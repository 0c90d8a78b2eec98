"""Every backbone builds at 28 and 64 px, grey and RGB, and runs forward + backward."""
import pytest
import torch

from mdlib.models import BACKBONES, build_model, cam_layer, embed, reshape_transform


@pytest.mark.parametrize("name", BACKBONES)
def test_backbones_forward_backward(name):
    torch.manual_seed(0)
    for size in (28, 64):
        for chans in (1, 3):
            m = build_model(name, chans, 3, size)
            x = torch.randn(2, chans, size, size)
            y = m(x)
            assert y.shape == (2, 3) and torch.isfinite(y).all()
            y.sum().backward()
            grads = [p.grad for p in m.parameters() if p.requires_grad]
            assert all(g is not None for g in grads)
            acts = {}
            h = cam_layer(m).register_forward_hook(lambda mod, i, o: acts.__setitem__("a", o))
            with torch.no_grad():
                m.eval()(x)
            h.remove()
            rt = reshape_transform(m)
            a = rt(acts["a"]) if rt else acts["a"]
            assert a.ndim == 4 and a.shape[0] == 2 and min(a.shape[2:]) >= 2, (name, size, a.shape)
            f = embed(m, x)
            assert f.ndim == 2 and f.shape[0] == 2


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet9000", 1, 2)
    with pytest.raises(ValueError, match="in_chans"):
        build_model("small_cnn", 2, 2)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("small_cnn", 1, 1)
