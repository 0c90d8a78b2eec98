"""Segmentation folder pairs: every bad input refused with a clear error naming the file;
natural frame order; sequence groups (published table, similarity rule); the grouped split."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mdlib.data import DataError, md5sum
from mdlib.data import segmentation as sd


def _frame(rng, size=32, colour=None):
    c = np.asarray(colour if colour is not None else rng.integers(40, 220, 3))
    x = np.clip(c + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
    return x


def _mask(size=32, r0=8, c0=8, h=10, w=10):
    m = np.zeros((size, size), np.uint8)
    m[r0:r0 + h, c0:c0 + w] = 255
    return m


def make_folder(root, n=6, size=32, start=1, ext=".png", seed=0):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for i in range(start, start + n):
        Image.fromarray(_frame(rng, size)).save(root / "images" / f"{i}{ext}")
        Image.fromarray(_mask(size, 4 + i % 10, 6, 8, 9)).save(root / "masks" / f"{i}{ext}")
    return root


def test_loads_in_natural_order(tmp_path):
    make_folder(tmp_path, n=12)
    ds = sd.load_segmentation_folder(tmp_path, cache=False)
    assert list(ds.ids) == [str(i) for i in range(1, 13)]       # 2 before 10
    assert ds.images.shape == (12, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.masks.shape == (12, 32, 32) and set(np.unique(ds.masks)) <= {0, 1}
    assert ds.masks[0].sum() == 8 * 9


def test_resize_keeps_masks_binary_and_lesions(tmp_path):
    make_folder(tmp_path, n=3, size=64)
    ds = sd.load_segmentation_folder(tmp_path, 32, cache=False)
    assert ds.images.shape[1:] == (32, 32, 3) and set(np.unique(ds.masks)) == {0, 1}
    assert abs(int(ds.masks[0].sum()) - 8 * 9 / 4) <= 6


def test_missing_mask_names_the_image(tmp_path):
    make_folder(tmp_path, n=4)
    (tmp_path / "masks" / "3.png").unlink()
    with pytest.raises(DataError, match=r"3\.png: no mask"):
        sd.load_segmentation_folder(tmp_path, cache=False)


def test_mask_without_image(tmp_path):
    make_folder(tmp_path, n=4)
    (tmp_path / "images" / "2.png").unlink()
    with pytest.raises(DataError, match=r"masks/2\.png: no image"):
        sd.load_segmentation_folder(tmp_path, cache=False)


def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="images: folder not found"):
        sd.load_segmentation_folder(tmp_path, cache=False)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no image files"):
        sd.load_segmentation_folder(tmp_path, cache=False)


def test_unreadable_image_and_mask(tmp_path):
    make_folder(tmp_path, n=3)
    (tmp_path / "images" / "2.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"images/2\.png: cannot be read"):
        sd.load_segmentation_folder(tmp_path, cache=False)
    make_folder(tmp_path, n=3)
    (tmp_path / "masks" / "3.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"masks/3\.png: cannot be read"):
        sd.load_segmentation_folder(tmp_path, cache=False)


def test_size_mismatch(tmp_path):
    make_folder(tmp_path, n=3)
    Image.fromarray(_mask(40)).save(tmp_path / "masks" / "2.png")
    with pytest.raises(DataError, match=r"masks/2\.png: mask is 40x40 px but its image .*2\.png is 32x32"):
        sd.load_segmentation_folder(tmp_path, cache=False)


def test_frames_of_different_sizes_need_size(tmp_path):
    make_folder(tmp_path, n=3)
    rng = np.random.default_rng(1)
    Image.fromarray(_frame(rng, 48)).save(tmp_path / "images" / "3.png")
    Image.fromarray(_mask(48)).save(tmp_path / "masks" / "3.png")
    with pytest.raises(DataError, match=r"3\.png.*pass size="):
        sd.load_segmentation_folder(tmp_path, cache=False)
    assert len(sd.load_segmentation_folder(tmp_path, 32, cache=False)) == 3


def test_non_binary_mask(tmp_path):
    make_folder(tmp_path, n=3)
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    Image.fromarray(ramp).save(tmp_path / "masks" / "2.png")
    with pytest.raises(DataError, match=r"masks/2\.png: not a binary mask"):
        sd.load_segmentation_folder(tmp_path, cache=False)


def test_thin_jpeg_noise_is_accepted(tmp_path):
    make_folder(tmp_path, n=2)
    m = _mask(32)
    m[0, :5] = 128                      # 5 of 1024 pixels ambiguous: JPEG-like noise
    Image.fromarray(m).save(tmp_path / "masks" / "1.png")
    ds = sd.load_segmentation_folder(tmp_path, cache=False)
    assert ds.masks[0].sum() == 10 * 10 + 5   # 128 > 127: foreground


def test_empty_mask_when_a_lesion_is_required(tmp_path):
    make_folder(tmp_path, n=3)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "masks" / "3.png")
    with pytest.raises(DataError, match=r"masks/3\.png: empty mask"):
        sd.load_segmentation_folder(tmp_path, cache=False)
    ds = sd.load_segmentation_folder(tmp_path, cache=False, require_foreground=False)
    assert ds.masks[2].sum() == 0


def test_lesion_vanishing_at_the_working_size(tmp_path):
    make_folder(tmp_path, n=2, size=64)
    m = np.zeros((64, 64), np.uint8)
    m[10, 10] = 255
    Image.fromarray(m).save(tmp_path / "masks" / "2.png")
    with pytest.raises(DataError, match=r"masks/2\.png: the lesion vanishes"):
        sd.load_segmentation_folder(tmp_path, 16, cache=False)


def test_bad_size_parameter(tmp_path):
    make_folder(tmp_path, n=2)
    with pytest.raises(DataError, match="size=30"):
        sd.load_segmentation_folder(tmp_path, 30, cache=False)


def test_cache_reused_and_invalidated(tmp_path):
    make_folder(tmp_path / "d", n=3)
    a = sd.load_segmentation_folder(tmp_path / "d", 32)
    b = sd.load_segmentation_folder(tmp_path / "d", 32)
    assert a.meta["cache"] == b.meta["cache"] and (a.images == b.images).all()
    Image.fromarray(_mask(32, 0, 0, 4, 4)).save(tmp_path / "d" / "masks" / "1.png")
    c = sd.load_segmentation_folder(tmp_path / "d", 32)
    assert c.meta["cache"] != a.meta["cache"] and c.masks[0].sum() == 16


def test_published_sequences_table():
    ids = ["1", "25", "26", "133", "612", "419", "480"]
    assert list(sd.published_sequences(ids)) == [1, 1, 2, 7, 29, 20, 24]
    assert len(sd.CVC_CLINICDB_SEQUENCES) == 29
    ends = [b for _, b in sd.CVC_CLINICDB_SEQUENCES]
    starts = [a for a, _ in sd.CVC_CLINICDB_SEQUENCES]
    assert starts[0] == 1 and ends[-1] == 612 and all(s == e + 1 for s, e in zip(starts[1:], ends[:-1]))
    with pytest.raises(DataError, match="frame 700"):
        sd.published_sequences(["700"])


def test_similarity_rule_recovers_constant_sequences():
    rng = np.random.default_rng(0)
    colours = [(200, 60, 60), (60, 200, 60), (60, 60, 200)]
    frames = np.stack([_frame(rng, 32, c) for c in colours for _ in range(5)])
    g = sd.sequence_groups_by_similarity(frames, threshold=0.4)
    assert list(g) == [0] * 5 + [1] * 5 + [2] * 5
    a = sd.group_agreement(g, np.repeat([1, 2, 3], 5))
    assert a["ari"] == 1.0 and a["sequences_split"] == 0
    merged = sd.group_agreement(np.zeros(15, int), np.repeat([1, 2, 3], 5))
    assert merged["sequences_split"] == 0 and merged["groups_merging_sequences"] == 1
    split = sd.group_agreement(np.arange(15) // 3, np.repeat([1, 2, 3], 5))
    assert split["sequences_split"] > 0


def test_grouped_split_keeps_groups_whole_and_is_seeded():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(29), rng.integers(6, 26, 29))
    n = len(groups)
    a = sd.grouped_split(groups, n_test=n // 5, n_val=n // 10, seed=0)
    b = sd.grouped_split(groups, n_test=n // 5, n_val=n // 10, seed=0)
    c = sd.grouped_split(groups, n_test=n // 5, n_val=n // 10, seed=1)
    assert (a == b).all() and not (a == c).all()
    for g in np.unique(groups):
        assert len(set(a[groups == g])) == 1
    assert abs((a == "test").sum() - n // 5) <= 3 and abs((a == "val").sum() - n // 10) <= 3
    with pytest.raises(DataError, match="group"):
        sd.grouped_split(np.array([0, 0, 1, 1]), 1, 1)


def test_split_csv_roundtrip(tmp_path):
    make_folder(tmp_path / "d", n=80, size=16)
    ds = sd.load_segmentation_folder(tmp_path / "d", cache=False)
    ds = ds.replace(groups=sd.published_sequences(ds.ids))
    split = sd.grouped_split(ds.groups, 16, 12, seed=0)
    sd.save_split(tmp_path / "split.csv", ds, split)
    back = sd.read_split(tmp_path / "split.csv", ds)
    for s in ("train", "val", "test"):
        assert (back.index(s) == np.flatnonzero(split == s)).all()
    with pytest.raises(DataError, match="split file not found"):
        sd.read_split(tmp_path / "none.csv", ds)


def test_cvc_clinicdb_real(data_root):
    root = data_root / "segmentation" / "CVC-ClinicDB_256"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    ds = sd.cvc_clinicdb(32, root)
    assert len(ds) == 609 and len(np.unique(ds.groups)) == 29
    assert [int(i) for i in ds.ids[:3]] == [1, 2, 3] and ds.ids[-1] == "612"
    n = {s: len(ds.index(s)) for s in ("train", "val", "test")}
    assert n["test"] == 121 and n["train"] + n["val"] == 488, n
    for g in np.unique(ds.groups):
        assert len({s for s in ("train", "val", "test") if np.isin(ds.index(s), np.flatnonzero(ds.groups == g)).any()}) == 1


def _fake_cvc(root, n=3, drop_mask=False):
    """A tiny CVC-ClinicDB-shaped folder with its md5 list (the registry's frame count and
    list md5 patched to match in the test)."""
    import hashlib
    folder = root / "segmentation" / "CVC-ClinicDB_256"
    lines = []
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
        for i in range(1, n + 1):
            if sub == "masks" and drop_mask and i == n:
                continue
            p = folder / sub / f"{i}.jpg"
            p.write_bytes(f"{sub}{i}".encode())
            lines.append(f"{hashlib.md5(p.read_bytes()).hexdigest()}  ./{sub}/{i}.jpg")
    lst = root / "segmentation" / "CVC-ClinicDB_256.md5"
    lst.write_text("\n".join(lines) + "\n")
    return folder, lst


def test_require_checks_the_polyp_frames_before_any_work(tmp_path, monkeypatch):
    """``require`` (what make study / make test call first) refuses a missing folder, frames
    without masks, a wrong md5 list and a changed frame, each naming the path; a correct
    folder is verified; a profile with a diffaug section asks for CVC-ClinicDB, and
    DiffMIC-v2's datasets at their sizes."""
    from mdlib.data import sources
    from mdlib import profiles
    with pytest.raises(DataError, match=r"CVC-ClinicDB_256/images: not found.*polyp.grand-challenge"):
        sources.require(["cvc_clinicdb"], root=tmp_path)
    folder, lst = _fake_cvc(tmp_path / "a", drop_mask=True)
    monkeypatch.setitem(sources.SEGMENTATION["cvc_clinicdb"], "n_frames", 3)
    with pytest.raises(DataError, match="3 images and 2 masks"):
        sources.require(["cvc_clinicdb"], root=tmp_path / "a")
    folder, lst = _fake_cvc(tmp_path / "b")
    with pytest.raises(DataError, match="is not the project's list"):
        sources.require(["cvc_clinicdb"], root=tmp_path / "b")
    monkeypatch.setitem(sources.SEGMENTATION["cvc_clinicdb"], "md5_list_md5", md5sum(lst))
    rows = sources.require(["cvc_clinicdb"], root=tmp_path / "b")
    assert rows[0]["status"].startswith("verified")
    (folder / "masks" / "2.jpg").write_bytes(b"changed")
    with pytest.raises(DataError, match=r"1 file\(s\) differ.*masks/2.jpg"):
        sources.require(["cvc_clinicdb"], root=tmp_path / "b")
    assert sources.require(["cvc_clinicdb"], root=tmp_path / "b", verify=False)[0]["status"] == "present"
    pairs = sources.profile_datasets(profiles.load("cpu"))
    assert ("cvc_clinicdb", None) in pairs and ("breastmnist", 64) in pairs and ("retinamnist", 28) in pairs
