import shutil
import warnings
from pathlib import Path

import pytest
import torch

from mimsdk import DataConfig, DataError, ModelConfig, pretrain
from mimsdk.adapter import get_adapter
from mimsdk.adapters.images import scan_folder
from mimsdk.labels import read_label_csv

MODEL = ModelConfig(size="tiny", input_size=[32, 32], patch_size=8, in_chans=3)


def broken_folder(tmp_path, cifar):
    root = tmp_path / "imgs"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for src in sorted((cifar / "train" / cls).glob("*.jpg"))[:6]:
            shutil.copy(src, root / cls / src.name)
    good = (root / "cat" / "0000.jpg").read_bytes()
    (root / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "dog" / "notes.txt").write_text("not a picture")
    return root


def test_cifar_folder_with_class_labels(cifar):
    ds = get_adapter("images").dataset(cifar / "test", DataConfig(), MODEL, train=False)
    assert len(ds) == 200 and len(ds.classes) == 10
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == ds.classes.index("airplane")


def test_grayscale_and_csv_labels(tmp_path, cifar):
    csv = cifar.parent / "labels.csv"
    model = ModelConfig(size="tiny", input_size=[16, 16], patch_size=8, in_chans=1)
    ds = get_adapter("images").dataset(cifar / "test" / "cat", DataConfig(labels=str(csv)), model, train=True)
    # class indices come from the whole CSV, so any folder it labels agrees with every other
    assert ds.classes == sorted(set(read_label_csv(csv).values())) and ds[3][0].shape == (1, 16, 16)
    assert set(ds.prepared.labels) == {ds.classes.index("cat")}


def test_unreadable_files_warn_once_each_and_are_counted(tmp_path, cifar):
    root = broken_folder(tmp_path, cifar)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files, labels, classes = scan_folder(root)
    messages = [str(w.message) for w in caught]
    assert sum("truncated.jpg" in m for m in messages) == 1
    assert sum("notes.txt" in m and "not an image" in m for m in messages) == 1
    assert any("skipped 2 of 14 files" in m for m in messages)
    assert len(files) == 12 and classes == ["cat", "dog"]


def test_training_goes_on_over_the_readable_rest(tmp_path, cifar):
    root = broken_folder(tmp_path, cifar)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pretrain("quickstart", data=root, out=tmp_path / "run", max_steps=2, batch_size=4,
                          num_workers=0, depth=1, input_size=[32, 32])  # fmt: skip
    assert sum("truncated.jpg" in str(w.message) for w in caught) == 1  # once, though two views are built
    assert len(result.history) == 2


def test_strict_mode_stops_naming_the_file(tmp_path, cifar):
    root = broken_folder(tmp_path, cifar)
    with pytest.raises(DataError, match=r"truncated\.jpg: cannot be decoded.*strict mode; 2 unreadable"):
        scan_folder(root, strict=True)


def test_empty_and_missing_paths_fail_before_training(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"data folder .*empty holds no files"):
        pretrain("quickstart", data=tmp_path / "empty", out=tmp_path / "run")
    with pytest.raises(DataError, match=r"data path .*nowhere does not exist"):
        pretrain("quickstart", data=tmp_path / "nowhere", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_picture_has_three_columns(tmp_path, cifar):
    from mimsdk import create_model

    adapter = get_adapter("images")
    model = create_model(MODEL, depth=1, decoder_dim=32, decoder_depth=1, decoder_heads=2,
                         metadata=adapter.metadata(DataConfig(), MODEL))  # fmt: skip
    ds = adapter.dataset(cifar / "test", DataConfig(), MODEL, train=False)
    x = torch.stack([ds[i][0] for i in range(3)])
    with torch.no_grad():
        picture = adapter.picture(model.reconstruct(x, generator=torch.Generator().manual_seed(0)), model.config)
    assert picture.width > 3 * 96 and picture.height > 3 * 96


def copy_images(cifar: Path, root: Path, count: int) -> list[Path]:
    root.mkdir(parents=True)
    return [Path(shutil.copy(src, root / src.name)) for src in sorted((cifar / "test" / "cat").glob("*"))[:count]]


def test_scans_are_cached_by_path_size_and_mtime(tmp_path, cifar, monkeypatch):
    import mimsdk.adapters.images as images

    monkeypatch.setenv("MIMSDK_CACHE", str(tmp_path / "cache"))
    files = copy_images(cifar, tmp_path / "imgs", 6)
    probed = []
    check = images.check_image
    monkeypatch.setattr(images, "check_image", lambda path, decode=True: probed.append(path) or check(path, decode))
    images.scan_folder(tmp_path / "imgs")
    assert sorted(probed) == files
    probed.clear()
    images.scan_folder(tmp_path / "imgs")  # a new run: nothing changed, nothing probed
    assert probed == []
    files[2].write_bytes(files[2].read_bytes()[:-50])  # changed (and truncated): probed again, and refused
    with pytest.warns(UserWarning, match=f"{files[2].name}: cannot be decoded"):
        good, _, _ = images.scan_folder(tmp_path / "imgs")
    assert probed == [files[2]] and files[2] not in good


def test_a_big_folder_is_checked_by_headers_and_a_bad_file_is_skipped_when_read(tmp_path, cifar, monkeypatch):
    import mimsdk.adapters.images as images

    monkeypatch.setattr(images, "FULL_CHECK_LIMIT", 4)  # as if 6 files were 100,000
    files = copy_images(cifar, tmp_path / "imgs", 6)
    files[3].write_bytes(files[3].read_bytes()[:-50])  # a whole header, truncated pixels
    decoded = []
    load = images.Image.Image.load
    monkeypatch.setattr(images.Image.Image, "load", lambda img: decoded.append(1) or load(img))
    ds = get_adapter("images").dataset(tmp_path / "imgs", DataConfig(), MODEL, train=False)
    assert len(ds) == 6 and not decoded  # headers only before training
    with pytest.warns(UserWarning, match=f"skipping {files[3]}: cannot be decoded"):
        x, _ = ds[3]
    assert torch.equal(x, ds[4][0]) and ds.skipped == 1  # replaced by the next good one
