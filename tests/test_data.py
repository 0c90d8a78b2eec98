"""Data registry, validation (every bad-input case), loaders and subsampling."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mdlib import data
from mdlib.data import DataError


def _arrays(n=(20, 6, 8), h=28, c=None, k=2, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for s, m in zip(data.SPLITS, n):
        shape = (m, h, h) if c is None else (m, h, h, c)
        out[f"{s}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        out[f"{s}_labels"] = (np.arange(m) % k).astype(np.uint8).reshape(m, 1)
    return out


def _write(tmp_path, arrays, name="toy.npz"):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def test_valid_file_and_label_shapes(tmp_path):
    a = _arrays()
    ds = data.check_file(_write(tmp_path, a))
    assert ds.x("train").shape == (20, 28, 28, 1) and ds.y("train").dtype == np.int64
    a["val_labels"] = a["val_labels"].reshape(-1)  # (N,) accepted as well as (N, 1)
    ds = data.check_file(_write(tmp_path, a, "toy2.npz"))
    assert ds.y("val").shape == (6,)


def test_rgb_and_sizes(tmp_path):
    for h in (28, 64):
        ds = data.check_file(_write(tmp_path, _arrays(h=h, c=3), f"rgb{h}.npz"))
        assert ds.channels == 3 and ds.size == h


@pytest.mark.parametrize("case, message", [
    ("missing_array", "missing array 'val_labels'"),
    ("wrong_dtype", "dtype int32"),
    ("wrong_label_dtype", "expected an integer type"),
    ("wrong_rank", "expected rank 3"),
    ("count_mismatch", "images but"),
    ("labels_out_of_range", "outside"),
    ("negative_label", "outside"),
    ("single_class", "single class"),
    ("empty_split", "is empty"),
    ("nonfinite", "non-finite"),
    ("float_out_of_range", "expected [0, 1]"),
    ("label_shape", "expected (N,) or (N, 1)"),
    ("mixed_shapes", "an earlier split"),
])
def test_bad_arrays(tmp_path, case, message):
    a = _arrays()
    if case == "missing_array":
        del a["val_labels"]
    elif case == "wrong_dtype":
        a["train_images"] = a["train_images"].astype(np.int32)
    elif case == "wrong_label_dtype":
        a["test_labels"] = a["test_labels"].astype(np.float32)
    elif case == "wrong_rank":
        a["train_images"] = a["train_images"][:, :, 0]
    elif case == "count_mismatch":
        a["train_labels"] = a["train_labels"][:-1]
    elif case == "labels_out_of_range":
        a["test_labels"][0] = 7
    elif case == "negative_label":
        a["test_labels"] = a["test_labels"].astype(np.int64)
        a["test_labels"][0] = -1
    elif case == "single_class":
        a["val_labels"][:] = 1
    elif case == "empty_split":
        a["val_images"], a["val_labels"] = a["val_images"][:0], a["val_labels"][:0]
    elif case == "nonfinite":
        x = a["train_images"].astype(np.float32) / 255
        x[0, 0, 0] = np.nan
        a["train_images"] = x
    elif case == "float_out_of_range":
        a["train_images"] = a["train_images"].astype(np.float32)
    elif case == "label_shape":
        a["train_labels"] = np.zeros((20, 2), np.uint8)
    elif case == "mixed_shapes":
        a["test_images"] = np.zeros((8, 32, 32), np.uint8)
    # pneumoniamnist has 2 classes: a registered name checks the label range
    p = _write(tmp_path, a, "pneumoniamnist.npz" if case == "labels_out_of_range" else "toy.npz")
    with pytest.raises(DataError) as e:
        data.check_file(p, verify=False)
    assert str(p) in str(e.value) and message in str(e.value)


def test_missing_truncated_corrupt_and_pickle(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        data.check_file(tmp_path / "nope.npz")
    good = _write(tmp_path, _arrays())
    blob = good.read_bytes()
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        data.check_file(trunc)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"this is not a zip archive at all" * 10)
    with pytest.raises(DataError, match="truncated or corrupt"):
        data.check_file(corrupt)
    a = _arrays()
    a["train_labels"] = np.array([{"x": 1}] * 20, dtype=object)
    pick = tmp_path / "pickled.npz"
    np.savez(pick, **a)
    with pytest.raises(DataError, match="pickled"):
        data.check_file(pick)


def test_official_md5_and_verification_by_counts(data_root, tmp_path, caplog):
    retina = data.check_file(data_root / "medmnist" / "retinamnist.npz")
    assert retina.meta["md5_status"] == "official" and retina.n_classes == 5
    # the shared pneumoniamnist differs in md5 but has the official sizes and counts
    with caplog.at_level("INFO"):
        pn = data.check_file(data_root / "medmnist" / "pneumoniamnist.npz")
    assert pn.meta["md5_status"] == "verified-by-counts"
    assert "accepted" in caplog.text
    # a copy with one label flipped has neither the md5 nor the counts: refused
    a = dict(np.load(data_root / "medmnist" / "breastmnist.npz", allow_pickle=False))
    a["train_labels"] = a["train_labels"].copy()
    a["train_labels"][0] = 1 - a["train_labels"][0]
    bad = tmp_path / "breastmnist.npz"
    np.savez(bad, **a)
    with pytest.raises(DataError, match="label counts"):
        data.check_file(bad)
    # dropping an image changes the split sizes
    a = dict(np.load(data_root / "medmnist" / "breastmnist.npz", allow_pickle=False))
    a["test_images"], a["test_labels"] = a["test_images"][1:], a["test_labels"][1:]
    np.savez(bad, **a)
    with pytest.raises(DataError, match="split sizes"):
        data.check_file(bad)


def test_registry_loads_every_shared_file(data_root):
    for flag, size in [("pneumoniamnist", 28), ("breastmnist", 28), ("breastmnist", 64),
                       ("retinamnist", 28)]:
        ds = data.load_dataset(flag, size, root=data_root, download=False)
        spec = data.MEDMNIST[flag]
        assert tuple(len(ds.y(s)) for s in data.SPLITS) == spec.split_sizes
        assert ds.size == size and ds.channels == spec.channels


def test_missing_registered_file_without_download(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        data.load_dataset("breastmnist", 28, root=tmp_path, download=False)
    with pytest.raises(DataError, match="unknown dataset"):
        data.load_dataset("nosuchmnist", 28, root=tmp_path)


def test_cli_check(tmp_path, data_root):
    ok = subprocess.run([sys.executable, "-m", "mdlib.data", "check",
                         str(data_root / "medmnist" / "breastmnist.npz")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK breastmnist 28px") and "train=546 [147, 399]" in ok.stdout
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    r = subprocess.run([sys.executable, "-m", "mdlib.data", "check", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and str(bad) in r.stderr


def test_labels_must_be_contiguous_when_classes_are_unknown(tmp_path):
    """An unregistered file whose labels skip classes (0, 1 and one stray 9) is refused,
    naming the empty classes; by the API, by the CLI and by the image-folder loader."""
    a = _arrays()
    a["train_labels"] = a["train_labels"].copy()
    a["train_labels"][0] = 9
    p = _write(tmp_path, a, "stray.npz")
    with pytest.raises(DataError) as e:
        data.check_file(p, verify=False)
    msg = str(e.value)
    assert str(p) in msg and "0..9" in msg and "class(es) 2-8 have no image" in msg
    r = subprocess.run([sys.executable, "-m", "mdlib.data", "check", str(p)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "class(es) 2-8 have no image" in r.stderr, r.stderr
    # gaps in several places are all named; a contiguous 3-class file is accepted
    a["val_labels"] = a["val_labels"].copy()
    a["val_labels"][0] = 4
    with pytest.raises(DataError, match=r"class\(es\) 2-3, 5-8 have"):
        data.check_file(_write(tmp_path, a, "stray2.npz"), verify=False)
    ok = _arrays(k=3)
    assert data.check_file(_write(tmp_path, ok, "three.npz"), verify=False).n_classes == 3
    # the folder loader without class names: the same rule
    root = _tiny_folder(tmp_path)
    df = pd.read_csv(root / "labels.csv")
    df.loc[df.label == 1, "label"] = 3
    df.to_csv(root / "gap.csv", index=False)
    with pytest.raises(DataError, match=r"class\(es\) 1-2 have no image"):
        data.load_image_folder(root, "gap.csv", size=28, cache=False)


def test_subsample_per_class_is_stratified_and_seeded():
    y = np.array([0] * 100 + [1] * 300 + [2] * 10)
    a = data.subsample_per_class(y, fraction=0.1, seed=3)
    b = data.subsample_per_class(y, fraction=0.1, seed=3)
    c = data.subsample_per_class(y, fraction=0.1, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.bincount(y[a]).tolist() == [10, 30, 2]
    assert np.bincount(y[data.subsample_per_class(y, per_class=20, seed=0)]).tolist() == [20, 20, 10]
    with pytest.raises(ValueError):
        data.subsample_per_class(y, fraction=1.5)
    with pytest.raises(ValueError):
        data.subsample_per_class(y)


def _tiny_folder(tmp_path, mode="RGB", n_groups=30, per_group=3):
    root = tmp_path / "folder"
    rows = []
    rng = np.random.default_rng(0)
    for g in range(n_groups):
        label = g % 2
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        for j in range(per_group):
            arr = rng.integers(0, 256, (40, 36, 3) if mode == "RGB" else (40, 36), dtype=np.uint8)
            rel = f"c{label}/g{g}_{j}.png"
            Image.fromarray(arr, mode).save(root / rel)
            rows.append({"path": rel, "label": label, "group": f"g{g}"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def test_image_folder_loader_grouped_split(tmp_path):
    root = _tiny_folder(tmp_path)
    ds = data.load_image_folder(root, "labels.csv", group_col="group", size=28, seed=1,
                                val_frac=0.2, test_frac=0.2)
    assert ds.channels == 3 and ds.x("train").shape[1:] == (28, 28, 3)
    split = pd.read_csv(ds.meta["split_file"])
    assert len(split) == 90
    assert split.groupby("group")["split"].nunique().max() == 1  # no group crosses splits
    assert set(split["split"]) == {"train", "val", "test"}
    again = data.load_image_folder(root, "labels.csv", group_col="group", size=28, seed=1,
                                   val_frac=0.2, test_frac=0.2)
    assert np.array_equal(again.x("test"), ds.x("test"))  # same seed, same split (cached)
    grey = data.load_image_folder(_tiny_folder(tmp_path / "g", "L"), size=32)
    assert grey.channels == 1 and grey.size == 32


def test_image_folder_errors(tmp_path):
    root = _tiny_folder(tmp_path)
    with pytest.raises(DataError, match="column 'diagnosis' not found"):
        data.load_image_folder(root, label_col="diagnosis")
    with pytest.raises(DataError, match="label CSV not found"):
        data.load_image_folder(root, "other.csv")
    df = pd.read_csv(root / "labels.csv")
    df.loc[0, "path"] = "c0/missing.png"
    df.to_csv(root / "broken.csv", index=False)
    with pytest.raises(DataError, match="not found, e.g."):
        data.load_image_folder(root, "broken.csv")
    with pytest.raises(DataError, match="size=30"):
        data.load_image_folder(root, size=30)
    (root / "c0" / "g0_0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot be read as an image"):
        data.load_image_folder(root, size=28, cache=False)


def test_lc25000_split_by_group(data_root):
    ds = data.load_dataset("lc25000_lung", 28, root=data_root)
    split = pd.read_csv(ds.meta["split_file"])
    assert split.groupby("group_id")["split"].nunique().max() == 1
    assert sum(len(ds.y(s)) for s in data.SPLITS) == 3703
    # the fractions (val 0.15, test 0.2) in both classes, as the pinned first grouped split
    # (split_version 1) draws them: its val share is 0.161 (the v2 split's own fractions
    # are tested in test_grouped_split_*; the pinned split's digest below)
    for s, f in (("val", 0.15), ("test", 0.2)):
        for c in (0, 1):
            assert (split.split[split.binary_label == c] == s).mean() == pytest.approx(f, abs=0.015)
    assert ds.modality == "histopathology" and ds.channels == 3


# ------------------------------------------------------------------ require (issue 12 item 17)
def test_profile_datasets_cover_notebooks_and_grids():
    from mdlib import profiles
    repo = Path(__file__).resolve().parent.parent
    smoke = data.profile_datasets(profiles.load("smoke"))
    # the MedMNIST notebooks, DiffMIC-v2's BreastMNIST and DiffAug's CVC-ClinicDB
    assert set(smoke) == {("pneumoniamnist", 28), ("breastmnist", 28), ("retinamnist", 28),
                          ("cvc_clinicdb", None)}
    cpu = data.profile_datasets(profiles.load("cpu"), [repo / "studies" / "main_cpu.yaml"])
    assert ("lc25000_lung", 28) in cpu and len(cpu) == len(set(cpu))
    # the 64 px sub-grid is BreastMNIST's only: no other dataset is asked for at 64 px
    assert [d for d in cpu if d[1] == 64] == [("breastmnist", 64)]
    gpu = data.profile_datasets(profiles.load("gpu"))
    assert ("breastmnist", 64) in gpu and ("cvc_clinicdb", None) in gpu
    # the main study's sections at 64 px; DiffMIC-v2 at the paper's 224 px
    dm = set(profiles.load("gpu")["diffmic"]["datasets"])
    assert all(s == 64 for n, s in gpu if n not in dm and n != "cvc_clinicdb")
    assert {(n, 224) for n in dm} <= set(gpu)
    with pytest.raises(DataError, match="sweep grid not found"):
        data.profile_datasets(profiles.load("cpu"), [repo / "studies" / "nope.yaml"])


def test_profile_datasets_read_each_sub_grid_with_its_own_fixed_values(tmp_path):
    from mdlib import profiles
    g = tmp_path / "g.yaml"
    g.write_text("fixed: {TASK: study, IMAGE_SIZE: 64}\n"
                 "grids:\n"
                 "  - grid: {DATASET: [pneumoniamnist], SEED: [0]}\n"
                 "  - fixed: {DATASET: retinamnist, IMAGE_SIZE: 128}\n"
                 "    grid: {SEED: [0, 1]}\n"
                 "    extra: [{DATASET: breastmnist, IMAGE_SIZE: 224}, {SEED: 5}]\n"
                 "  - grid: {DATASET: [lc25000_lung], IMAGE_SIZE: [28, 32]}\n")
    prof = dict(profiles.load("smoke"), datasets=[], diffusion={}, loss_study={}, synthetic={},
                diffmic={}, diffaug={})
    assert data.profile_datasets(prof, [g]) == [
        ("pneumoniamnist", 64), ("retinamnist", 128), ("breastmnist", 224),
        ("lc25000_lung", 28), ("lc25000_lung", 32)]


def test_require_refuses_an_empty_root_naming_files_sources_and_places(tmp_path):
    with pytest.raises(DataError) as e:
        data.require(["breastmnist", "retinamnist:64", "lc25000_lung"], root=tmp_path,
                     download=False)
    msg = str(e.value)
    assert "3 dataset(s) missing" in msg
    # which file, from where, where to put it
    assert str(tmp_path / "medmnist" / "breastmnist.npz") in msg
    assert "retinamnist_64.npz" in msg and "zenodo.org/records/10519652" in msg
    lc = msg[msg.index("- lc25000_lung"):]
    assert str(tmp_path / "histopathology" / "lc25000_lung") in lc
    assert "cannot be fetched by code" in lc and "labels.csv" in lc
    assert "loser564/Lung-Cancer-Prediction-Model" in lc and "LC25000-clean" in lc
    with pytest.raises(DataError, match="unknown dataset 'nosuch'"):
        data.require(["nosuch"], root=tmp_path)
    with pytest.raises(DataError, match="no 32 px version"):
        data.require(["breastmnist:32"], root=tmp_path)


def test_require_fetches_missing_medmnist_and_verifies_it(data_root, tmp_path, monkeypatch):
    from mdlib.data import sources
    fetched = []

    def fake_download(flag, size, target):  # the medmnist package, without the network
        fetched.append((flag, size))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data_root / "medmnist" / "breastmnist.npz", target)

    monkeypatch.setattr(sources, "_download_medmnist", fake_download)
    rows = data.require(["breastmnist"], root=tmp_path)
    assert fetched == [("breastmnist", 28)]
    assert rows == [{"dataset": "breastmnist", "size": 28,
                     "status": "downloaded, verified-by-counts"}]
    rows = data.require(["breastmnist"], root=tmp_path)  # present now: not fetched again
    assert len(fetched) == 1 and rows[0]["status"] == "verified-by-counts"
    # a download that is not the official data is refused, not used
    monkeypatch.setattr(sources, "_download_medmnist",
                        lambda f, s, t: np.savez(t, **_arrays()))
    with pytest.raises(DataError, match="split sizes"):
        data.require(["pneumoniamnist"], root=tmp_path)


def test_require_checks_the_lc25000_subset(data_root, tmp_path):
    src = data_root / "histopathology" / "lc25000_lung"
    rows = data.require(["lc25000_lung", "lc25000_lung:64"], root=data_root)
    assert rows == [{"dataset": "lc25000_lung", "size": 28,
                     "status": "verified (md5 of labels.csv and of every image)"}]
    # another selection (a labels.csv that is not the project's) is refused
    fake = tmp_path / "histopathology" / "lc25000_lung"
    fake.parent.mkdir()
    _tiny_folder(tmp_path).rename(fake)
    with pytest.raises(DataError, match="is not the project's lc25000_lung subset"):
        data.require(["lc25000_lung"], root=tmp_path)
    # the project's labels.csv with an image missing or altered
    shutil.rmtree(fake)
    fake.mkdir()
    shutil.copy(src / "labels.csv", fake / "labels.csv")
    with pytest.raises(DataError, match="3703 of the 3703 images listed"):
        data.require(["lc25000_lung"], root=tmp_path)
    df = pd.read_csv(src / "labels.csv")
    for rel in df.path:
        (fake / rel).parent.mkdir(exist_ok=True)
        (fake / rel).symlink_to(src / rel)
    assert data.require(["lc25000_lung"], root=tmp_path, verify=False)[0]["status"] == "present"
    (fake / df.path[5]).unlink()
    (fake / df.path[5]).write_bytes(b"not the image")
    with pytest.raises(DataError, match="1 image\\(s\\) differ from the md5"):
        data.require(["lc25000_lung"], root=tmp_path)


def test_require_cli(tmp_path, data_root):
    env = dict(os.environ, MDLIB_DATA_ROOT=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "mdlib.data", "require", "--profile", "smoke",
                        "--no-download"], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and r.stdout == ""
    # the smoke profile's three MedMNIST files and DiffAug's CVC-ClinicDB
    assert r.stderr.startswith(f"ERROR data root {tmp_path}: 4 dataset(s) missing")
    assert "- cvc_clinicdb: " in r.stderr and "Nothing was run" in r.stderr
    r = subprocess.run([sys.executable, "-m", "mdlib.data", "require", "--dataset",
                        "retinamnist", "--root", str(data_root)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "OK retinamnist 28px: official", r.stderr
    r = subprocess.run([sys.executable, "-m", "mdlib.data", "require"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "give --profile" in r.stderr


def test_make_study_and_test_check_the_data_before_anything_runs():
    """Both make targets call ``python -m mdlib.data require`` before their first notebook
    or test, so a missing dataset stops them with its message, not part-way."""
    repo = Path(__file__).resolve().parent.parent
    mk = (repo / "Makefile").read_text()
    for target, first_work in (("study", "papermill"), ("test", "pytest")):
        recipe = mk[mk.index(f"\n{target}: "):]
        recipe = recipe[:recipe.index("\n\n")]
        assert "-m mdlib.data require" in recipe, target
        assert recipe.index("-m mdlib.data require") < recipe.index(first_work), target


def test_make_test_checks_every_dataset_the_tests_read():
    from conftest import TEST_DATASETS
    from mdlib import profiles
    repo = Path(__file__).resolve().parent.parent
    line = next(l for l in (repo / "Makefile").read_text().splitlines()
                if l.startswith("TEST_DATA :="))
    args = line.split(":=", 1)[1].split()
    checked = {a for flag, a in zip(args, args[1:]) if flag == "--dataset"}
    assert args[:2] == ["--profile", "smoke"]
    checked |= {f"{n}:{s}" if s != 28 else n for n, s in
                data.profile_datasets(profiles.load("smoke"))}
    assert set(TEST_DATASETS) <= checked


def test_missing_data_stops_the_session_when_required_and_skips_loudly_otherwise(
        tmp_path, monkeypatch):
    """conftest's rule: with MDLIB_REQUIRE_DATA=1 (make test, CI) an empty data root stops
    the session before any test, with require()'s message; without it the header says
    that the tests reading real data will skip."""
    import conftest
    repo = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
           "tests/test_data.py::test_cli_check", "tests/test_data.py::test_rgb_and_sizes"]
    env = dict(os.environ, MDLIB_DATA_ROOT=str(tmp_path), MDLIB_REQUIRE_DATA="1")
    r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "no test was run" in out and "lc25000_lung" in out and "passed" not in out
    # not required: the header says it, and the fixture skips (in this process)
    monkeypatch.setenv("MDLIB_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("MDLIB_REQUIRE_DATA", "0")
    conftest._PROBLEM.clear()
    try:
        header = conftest.pytest_report_header(None)[0]
        assert header.startswith(f"mdlib data root: {tmp_path} (MDLIB_DATA_ROOT); MISSING")
        assert "SKIPPED" in header and "6 dataset(s) missing" in conftest._problem()
    finally:
        conftest._PROBLEM.clear()  # the real root's state is found again on next use


def _grouped_toy(n_groups=300, seed=0):
    """Groups of 1-7 images, one label per group (30 % class 1, like copies of a tile)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 8, n_groups)
    groups = np.repeat(np.arange(n_groups), sizes).astype(str)
    labels = np.repeat((rng.random(n_groups) < 0.3).astype(np.int64), sizes)
    return labels, groups


@pytest.mark.parametrize("val_frac, test_frac", [(0.15, 0.2), (0.3, 0.3), (0.1, 0.4)])
def test_grouped_split_honours_fractions_strata_groups_and_seed(val_frac, test_frac):
    labels, groups = _grouped_toy()
    split = data.grouped_split(labels, groups, val_frac, test_frac, seed=0)
    assert set(split) == {"train", "val", "test"}
    df = pd.DataFrame({"g": groups, "s": split})
    assert df.groupby("g")["s"].nunique().max() == 1  # no group in two splits
    for s, f in (("val", val_frac), ("test", test_frac), ("train", 1 - val_frac - test_frac)):
        assert (split == s).mean() == pytest.approx(f, abs=0.015), s   # the fraction asked for
        for c in (0, 1):                                                # in every class
            assert (split[labels == c] == s).mean() == pytest.approx(f, abs=0.025), (s, c)
    assert np.array_equal(split, data.grouped_split(labels, groups, val_frac, test_frac, seed=0))
    other = data.grouped_split(labels, groups, val_frac, test_frac, seed=1)
    assert (other != split).mean() > 0.3  # another seed, another split
    # without groups: per image, stratified
    free = data.grouped_split(labels, None, val_frac, test_frac, seed=0)
    assert (free == "test").mean() == pytest.approx(test_frac, abs=0.01)


def test_grouped_split_rejects_impossible_fractions():
    labels, groups = _grouped_toy(60)
    for v, t in ((0.0, 0.2), (0.5, 0.5), (0.2, 1.2)):
        with pytest.raises(DataError, match="val_frac"):
            data.grouped_split(labels, groups, v, t, seed=0)


def test_lc25000_split_is_pinned(data_root):
    """LC25000's grouped split is the one every LC25000 result of the project used
    (``split_version=1``); a change to the split code must not move it silently (run
    hashes do not include the split). Pinned: the md5 of the per-image split letters in
    labels.csv order, and the split sizes."""
    import hashlib

    import pandas as pd

    from mdlib.data.folders import FOLDERS, _grouped_split_v1, grouped_split
    spec = FOLDERS["lc25000_lung"]
    assert spec.split_version == 1
    df = pd.read_csv(data_root / spec.subdir / spec.csv)
    labels = df[spec.label_col].to_numpy()
    groups = df[spec.group_col].astype(str).to_numpy()
    split = _grouped_split_v1(labels, groups, 0.15, 0.2, 0)
    assert hashlib.md5("".join(s[0] for s in split).encode()).hexdigest() == "cbfbd613f2c7b8d484d8744b248fb587"
    assert {s: int((split == s).sum()) for s in ("train", "val", "test")} == {"train": 2365, "val": 596, "test": 742}
    # the current algorithm (version 2) would give another split: the pin is what keeps it
    assert not (grouped_split(labels, groups, 0.15, 0.2, 0) == split).all()
