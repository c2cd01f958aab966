"""Point-cloud shard sets on the shared ModelNet clouds and OFF meshes: the stored half is the normalised cloud
(float32, every point), so a folder and its shards train alike; another mesh sampling is refused; a big folder's
scan reads headers only. The loader's read rate, folder and shards, is printed (``pytest -s``)."""

import warnings

import numpy as np
import open3d as o3d
import pytest
import torch
from conftest import SHARED

import mimsdk.adapters.pointcloud.scan as scan
from mimsdk import DataConfig, DataError, load_recipe, pretrain
from mimsdk.adapter import get_adapter
from mimsdk.adapters.pointcloud import normalise, read_points
from mimsdk.pretraining import measure_data
from mimsdk.sharding import shard
from mimsdk.shards import ShardReader, read_manifest

POINTS = SHARED / "pointcloud"
MODELNET = POINTS / "modelnet40_2048"  # 87 clouds of 2048 points, 39 classes
MESHES = POINTS / "modelnet10_off_meshes"  # 3 OFF meshes
SMALL = ["model.depth=1", "train.log_every=1", "train.ckpt_every=1000000", "train.recon_every=1000000"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    if not MODELNET.is_dir():
        pytest.fail(f"shared sample data missing at {MODELNET}: tests expect ../shared beside the checkout")
    return shard("pointcloud-tiny", data=MODELNET, out=tmp_path_factory.mktemp("shards") / "modelnet", workers=1)


def losses(result) -> list[float]:
    return [row["loss"] for row in result.history]


def test_stored_clouds_are_the_normalised_files_in_float32_with_labels(shards):
    manifest = read_manifest(shards)
    assert manifest.count == 87 and len(manifest.classes) == 39
    assert manifest.preparation == {"normalisation": "unit_sphere", "mesh_samples": 8192, "mesh_seed": 0}
    model = load_recipe("pointcloud-tiny").model
    folder = get_adapter("pointcloud").dataset(MODELNET, DataConfig(modality="pointcloud"), model, train=False)
    stored = ShardReader(shards, manifest)
    for i in (0, 40, 86):
        sample = stored[i]
        assert sample["points"].dtype == np.float32 and sample["points"].shape == (2048, 3)  # every point kept
        expected = normalise(read_points(folder.files[i])).astype(np.float32)
        np.testing.assert_array_equal(sample["points"], expected)
        assert sample["label"] == folder.labels[i]
        assert bytes(sample["source"]).decode() == str(folder.files[i].relative_to(MODELNET))  # litdata: a memoryview


def test_training_on_shards_equals_training_on_the_folder(shards, tmp_path):
    on_folder = pretrain("pointcloud-tiny", data=MODELNET, out=tmp_path / "folder", max_steps=2, overrides=SMALL)
    on_shards = pretrain("pointcloud-tiny", data=shards, out=tmp_path / "shards", max_steps=2, overrides=SMALL)
    assert len(losses(on_shards)) == 2
    assert max(abs(a - b) for a, b in zip(losses(on_folder), losses(on_shards))) < 1e-6


def test_shards_made_with_another_mesh_sampling_are_refused_naming_both_values(tmp_path):
    options = ["data.options.mesh_samples=2048", "data.batch_size=2"]
    other = shard("pointcloud-tiny", data=MESHES, out=tmp_path / "meshes", workers=1, overrides=options)
    stored = ShardReader(other, read_manifest(other))[0]["points"]
    assert stored.shape == (2048, 3) and stored.dtype == np.float32  # a mesh sampled once, at shard time
    with pytest.raises(DataError, match=r"prepared with mesh_samples = 2048, the recipe asks for 8192"):
        pretrain("pointcloud-tiny", data=other, out=tmp_path / "run", max_steps=2, overrides=["data.batch_size=2"])
    # What acts after the stored half (N, augmentation, up axis) may change freely.
    result = pretrain("pointcloud-tiny", data=other, out=tmp_path / "ok", max_steps=1, overrides=options + SMALL,
                      options={"up_axis": "z", "rotate": True})  # fmt: skip
    assert len(result.history) == 1


def test_a_big_folder_is_checked_by_headers_and_a_bad_cloud_skipped_when_read(tmp_path, monkeypatch):
    root = tmp_path / "clouds"
    root.mkdir()
    texts = sorted((MODELNET / "airplane").glob("*.txt"))
    for i, text in enumerate(texts[:3]):
        (root / f"good{i}.txt").write_text(text.read_text())
    rows = texts[0].read_text().splitlines()
    rows[10] = "nan,nan,nan,0,0,1"  # the header (first row) is fine: found only when the points are read
    (root / "nan.txt").write_text("\n".join(rows) + "\n")
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.loadtxt(texts[1], delimiter=",")[:, :3]))
    o3d.io.write_point_cloud(str(root / "cut.ply"), cloud)
    (root / "cut.ply").write_bytes((root / "cut.ply").read_bytes()[:5000])  # its header proves it truncated
    (root / "few.npy").write_bytes(b"")
    np.save(root / "few.npy", np.zeros((20, 3), np.float32))  # 20 points: the header says too few
    monkeypatch.setattr(scan, "FULL_CHECK_LIMIT", 3)  # as if 6 files were 100,000

    def no_reading(*args, **kwargs):
        raise AssertionError("the scan of a big folder read a cloud whole")

    model = load_recipe("pointcloud-tiny").model
    with monkeypatch.context() as patch, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        patch.setattr(scan, "read_points", no_reading)
        ds = get_adapter("pointcloud").dataset(root, DataConfig(modality="pointcloud"), model, train=True)
    said = [str(w.message) for w in caught]
    assert any("cut.ply: truncated" in m for m in said) and any("few.npy: 20 points, fewer" in m for m in said)
    assert [f.name for f in ds.files] == ["good0.txt", "good1.txt", "good2.txt", "nan.txt"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, _ = ds[3]  # nan.txt, replaced by the next good cloud
    assert x.shape == (512, 3) and torch.isfinite(x).all() and ds.skipped == 1
    (message,) = [str(w.message) for w in caught]
    assert "nan.txt" in message and "NaN or infinite" in message and "replaced by the next good sample" in message


def test_a_folder_scanned_before_is_read_again_only_where_files_changed(tmp_path, monkeypatch):
    root = tmp_path / "clouds"
    root.mkdir()
    for text in sorted((MODELNET / "chair").glob("*.txt"))[:3]:
        (root / text.name).write_text(text.read_text())
    model = load_recipe("pointcloud-tiny").model
    get_adapter("pointcloud").dataset(root, DataConfig(modality="pointcloud"), model, train=False)
    read = []
    monkeypatch.setattr(scan, "read_points", lambda path, *args: read.append(path.name) or read_points(path, *args))
    changed = sorted(root.iterdir())[1]
    changed.write_text(changed.read_text() + "0.1,0.2,0.3,0,0,1\n")
    ds = get_adapter("pointcloud").dataset(root, DataConfig(modality="pointcloud"), model, train=False)
    assert read == [changed.name] and len(ds) == 3


def test_read_rate_folder_and_shards_with_one_worker(shards):
    rates = {}
    for kind, path in (("folder", MODELNET), ("shards", shards)):
        rates[kind] = measure_data("pointcloud-tiny", data=path, batches=10, num_workers=1)
    for kind, rate in rates.items():
        print(f"pointcloud-tiny {kind}: {rate}")
        assert rate.samples_per_s > 0 and rate.workers == 1
