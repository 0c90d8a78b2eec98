"""mdlib.studies.lossfid's evaluation (notebook 13) with stand-ins for the trained models:
what evaluate_model samples and compares, the real-vs-real floor, and the InceptionV3
status that evaluate_all reports per dataset. Seconds, no training."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mdlib import profiles
from mdlib.data import ImageDataset, to_tensor
from mdlib.diffusion import fid
from mdlib.models import build_model
from mdlib.runs import tasks
from mdlib.studies.lossfid import study as lossfid

pytestmark = pytest.mark.usefixtures("one_thread")


def toy_data() -> ImageDataset:
    rng = np.random.default_rng(0)

    def split(n0, n1, shift):
        y = np.repeat([0, 1], [n0, n1])
        x = rng.integers(0, 200, (len(y), 28, 28, 1)).astype(np.uint8)
        x[y == 1] += np.uint8(shift)
        return x, y
    return ImageDataset("breastmnist", 28, 2, 1, "ultrasound", ("a", "b"),
                        {"train": split(10, 10, 40), "val": split(24, 12, 40),
                         "test": split(6, 18, 40)})


class FakeRun:
    def __init__(self, h):
        self.hash = h


class StubDiffusion:
    """A 'generator' whose samples are known: the test images, darkened by a factor that
    identifies the model."""

    def __init__(self, data, tag):
        self.data, self.tag, self.sampled, self.denoised = data, tag, [], []

    def sample(self, labels, seed, steps, batch_size, progress):
        labels = np.asarray(labels)
        self.sampled.append((labels.copy(), seed, steps))
        assert np.array_equal(labels, self.data.y("test"))
        return to_tensor(self.data.x("test")) * (0.5 + 0.1 * self.tag), torch.as_tensor(labels)

    def denoising_error(self, x, y, seed):
        self.denoised.append((x.shape, np.asarray(y).copy(), seed))
        return {"mse": 0.1 + self.tag, "huber": 0.05 + self.tag}


@pytest.fixture
def stubs(monkeypatch):
    data = toy_data()
    torch.manual_seed(0)
    g = build_model("small_cnn", 1, 2, 28, width=4).eval()
    models = {}

    def diffusion_for(prof, dataset, loss, seed, progress=True):
        return FakeRun(f"d-{dataset}-{loss}-{seed}"), 1.0

    def load_diffusion(run, w):
        _, _, loss, seed = run.hash.split("-")
        return models.setdefault(run.hash, StubDiffusion(data, int(seed) + (loss == "huber") * 2))

    monkeypatch.setattr(lossfid, "diffusion_for", diffusion_for)
    monkeypatch.setattr(tasks, "guidance_model", lambda p, ds, seed, progress=True: (g, FakeRun("g")))
    monkeypatch.setattr(tasks, "load_diffusion", load_diffusion)
    monkeypatch.setattr(tasks, "load_data", lambda p, ds, seed=0: (data, None))
    unavailable = set()

    def fake_fd(real, fake, dim, weights_path=None, download=False):
        key = float(fake.mean())
        if key in unavailable:
            raise fid.InceptionUnavailable("weights not found at /nowhere")
        return 100.0 * dim + key
    monkeypatch.setattr(fid, "torchmetrics_fd", fake_fd)
    return {"data": data, "g": g, "models": models, "unavailable": unavailable}


def test_evaluate_model_compares_samples_of_the_test_labels_with_the_test_images(stubs):
    prof = profiles.load("smoke")
    data, g = stubs["data"], stubs["g"]
    run = lossfid.evaluate_model(prof, "breastmnist", "l2", 1, progress=False)
    model = stubs["models"]["d-breastmnist-l2-1"]
    (labels, seed, steps), = model.sampled
    np.testing.assert_array_equal(labels, data.y("test"))  # same size and class balance
    assert seed == 1001 and steps == prof["diffusion"]["sample_steps"]
    x_fake = to_tensor(data.x("test")) * 0.6
    with np.load(run.path("samples.npz"), allow_pickle=False) as z:
        np.testing.assert_array_equal(z["y"], data.y("test"))
        np.testing.assert_array_equal(z["x"], (x_fake.numpy() * 255).round().astype(np.uint8))
    fd = run.read_csv("fd.csv")
    ff, fr = fid.stage_features(g, x_fake), fid.stage_features(g, to_tensor(data.x("test")))
    guid = fd[fd.extractor == "guidance"].set_index("feature")
    assert sorted(guid.index) == sorted(ff)
    for k in ff:
        assert guid.loc[k, "fd"] == pytest.approx(fid.frechet_distance(ff[k], fr[k]), rel=1e-9)
        assert guid.loc[k, "dim"] == ff[k].shape[1]
    inc = fd[fd.extractor == "inception"]
    assert inc.dim.tolist() == lossfid.settings(prof)["inception_dims"]
    np.testing.assert_allclose(inc.fd, 100.0 * inc.dim + float(x_fake.mean()), rtol=1e-6)
    assert run.read_json("inception.json") == {"available": True, "message": ""}
    (shape, y_val, dseed), = model.denoised  # held-out error on the validation split
    assert shape == (36, 1, 28, 28) and np.array_equal(y_val, data.y("val")) and dseed == 0
    assert run.read_csv("denoising.csv").iloc[0].to_dict() == pytest.approx({"mse": 1.1, "huber": 1.05})
    # finished: not sampled again
    again = lossfid.evaluate_model(prof, "breastmnist", "l2", 1, progress=False)
    assert again.hash == run.hash and len(model.sampled) == 1


def test_real_floor_uses_validation_images_with_the_test_class_mix(stubs):
    data, g = stubs["data"], stubs["g"]
    floor = lossfid.real_floor(profiles.load("smoke"), "breastmnist")
    idx = lossfid.matched_subset(data.y("val"), data.y("test"))
    assert np.bincount(data.y("val")[idx]).tolist() == [4, 12]  # test: 6 / 18 -> 1 : 3
    fv = fid.stage_features(g, to_tensor(data.x("val")[idx]))
    ft = fid.stage_features(g, to_tensor(data.x("test")))
    assert (floor.n_real == 16).all() and sorted(floor.feature) == sorted(fv)
    for _, row in floor.iterrows():
        assert row.fd_real_floor == pytest.approx(fid.frechet_distance(fv[row.feature], ft[row.feature]))
        assert row.dataset == "breastmnist" and row.extractor == "guidance"


def test_evaluate_all_reports_inception_for_every_model_not_the_last(stubs):
    """A dataset's InceptionV3 status covers all its models: one model without the
    weights (not the last one evaluated) makes it unavailable, with that model's reason
    and the count, instead of the last model's status overwriting the others."""
    prof = profiles.load("smoke")  # breastmnist, seeds 0 and 1, losses l2 and huber
    data = stubs["data"]
    x_test = to_tensor(data.x("test"))
    first = float((x_test * 0.5).mean())  # the fake samples of (seed 0, l2), evaluated first
    stubs["unavailable"].add(first)
    fd, den, status = lossfid.evaluate_all(prof, progress=False)
    assert len(den) == 4 and set(zip(den.loss, den.seed)) == {(l, s) for l in ("l2", "huber")
                                                               for s in (0, 1)}
    st = status["breastmnist"]
    assert st["available"] is False and "weights not found" in st["message"]
    assert st["n_models"] == 4 and st["n_available"] == 3
    inc = fd[fd.extractor == "inception"]
    assert len(inc) == 3 * 4 and not ((inc.loss == "l2") & (inc.seed == 0)).any()
    # every model with the weights: available, no message
    stubs["unavailable"].clear()
    _, _, status = lossfid.evaluate_all(profiles.load("smoke", {"loss_study": {"seeds": [2, 3]}}),
                                        progress=False)
    assert status["breastmnist"] == {"available": True, "message": "", "n_models": 4,
                                     "n_available": 4}
