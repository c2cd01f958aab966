"""Point-cloud adapter on the shared ModelNet files (comma-separated text and OFF meshes) and on files
written here with open3d: reading, normalisation, sampling, augmentation, bad input, pictures, .ply out."""

import warnings

import numpy as np
import open3d as o3d
import pytest
import torch
from conftest import SHARED

from mimsdk import create_model
from mimsdk.adapter import get_adapter
from mimsdk.adapters.pointcloud import _views, normalise, read_points, write_ply, write_reconstruction
from mimsdk.config import ConfigError, DataConfig
from mimsdk.data import SeededDataset
from mimsdk.errors import DataError
from mimsdk.variants.point_groups import farthest_point_sample

POINTS = SHARED / "pointcloud"
MODELNET = POINTS / "modelnet40_2048"
MESHES = POINTS / "modelnet10_off_meshes"
AIRPLANE = MODELNET / "airplane" / "airplane_0126.txt"
ADAPTER = get_adapter("pointcloud")


@pytest.fixture(scope="module")
def model_config():
    if not MODELNET.is_dir():
        pytest.fail(f"shared sample data missing at {MODELNET}: tests expect ../shared beside the checkout")
    return create_model(
        size="tiny", depth=1, input_size=[512, 3], tokenizer="point_groups", target="chamfer", mask_ratio=0.6,
        tokenizer_options={"groups": 32, "group_size": 16, "pointnet_width": 32},
        decoder_dim=32, decoder_depth=1, decoder_heads=2, modality="pointcloud",
    ).config  # fmt: skip


def data(**fields) -> DataConfig:
    return DataConfig(modality="pointcloud", **fields)


def test_modelnet_text_files_read_with_labels(model_config):
    points = read_points(AIRPLANE)
    assert points.shape == (2048, 3)
    np.testing.assert_allclose(points[0], [-0.06851, -0.08752, 0.1879])  # first row's x,y,z; normals dropped
    ds = ADAPTER.dataset(MODELNET, data(labels=str(POINTS / "labels.csv")), model_config, train=False)
    assert len(ds) == 87 and len(ds.classes) == 39
    x, label = ds[0]
    assert x.shape == (512, 3) and x.dtype == torch.float32
    assert ds.classes[label] == ds.files[0].parent.name
    # Without the CSV the class sub-folders give the same labels.
    by_folder = ADAPTER.dataset(MODELNET, data(), model_config, train=False)
    assert by_folder.labels == ds.labels


def test_unit_sphere_normalisation():
    cloud = normalise(read_points(AIRPLANE) * 7.0 + 3.0)
    np.testing.assert_allclose(cloud.mean(axis=0), 0.0, atol=1e-9)
    assert np.linalg.norm(cloud, axis=1).max() == pytest.approx(1.0)


def test_off_meshes_sampled_deterministically(model_config):
    mesh = MESHES / "bathtub" / "bathtub_0001.off"
    a, b = read_points(mesh, mesh_samples=3000), read_points(mesh, mesh_samples=3000)
    assert a.shape == (3000, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, read_points(mesh, mesh_samples=3000, mesh_seed=1))
    ds = ADAPTER.dataset(MESHES, data(labels=str(POINTS / "mesh_labels.csv")), model_config, train=False)
    assert len(ds) == 3 and ds.classes == ["bathtub"]
    x, _ = ds[0]
    assert x.shape == (512, 3) and x.norm(dim=1).max() <= 1.0 + 1e-6


def test_eval_view_is_farthest_point_sampling(model_config):
    ds = ADAPTER.dataset(AIRPLANE, data(), model_config, train=False)
    full = torch.from_numpy(normalise(read_points(AIRPLANE))).float()
    expected = full[farthest_point_sample(full[None], 512)[0]]
    torch.testing.assert_close(ds[0][0], expected)
    first = ADAPTER.dataset(AIRPLANE, data(options={"eval_sampling": "first"}), model_config, train=False)
    torch.testing.assert_close(first[0][0], full[:512])


def test_training_subsample_is_a_seeded_random_subset(model_config):
    ds = ADAPTER.dataset(AIRPLANE, data(options={"augment": False}), model_config, train=True)
    full = torch.from_numpy(normalise(read_points(AIRPLANE))).float()
    seeded = SeededDataset(ds, seed=0)
    x = seeded[(0, 0)][0]
    match = torch.cdist(x, full, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
    assert match.values.max() < 1e-6  # every point is one of the cloud's
    assert len(set(match.indices.tolist())) == 512  # without repetition
    torch.testing.assert_close(seeded[(0, 0)][0], x)  # a function of (seed, epoch, index)
    assert not torch.equal(seeded[(1, 0)][0], x)


def test_augmentation_stays_within_point_mae_bounds(model_config):
    plain = SeededDataset(ADAPTER.dataset(AIRPLANE, data(options={"augment": False}), model_config, True), 0)
    augmented = SeededDataset(ADAPTER.dataset(AIRPLANE, data(), model_config, True), 0)
    scales = []
    for epoch in range(5):
        p, a = plain[(epoch, 0)][0], augmented[(epoch, 0)][0]  # the same subset: drawn before the augmentation
        scale = a.std(dim=0) / p.std(dim=0)  # per axis
        shift = a.mean(dim=0) - scale * p.mean(dim=0)
        torch.testing.assert_close(a, p * scale + shift, atol=1e-5, rtol=1e-5)  # nothing but scale and shift
        assert ((scale >= 2 / 3 - 1e-5) & (scale <= 3 / 2 + 1e-5)).all(), scale
        assert (shift.abs() <= 0.2 + 1e-5).all(), shift
        scales.append(scale)
    assert torch.stack(scales).std(dim=0).min() > 0.01  # drawn anew per epoch


def test_rotation_turns_about_the_up_axis(model_config):
    opts = {"rotate": True, "scale": [1.0, 1.0], "translate": 0.0, "up_axis": "z"}
    rotated = SeededDataset(ADAPTER.dataset(AIRPLANE, data(options=opts), model_config, True), 0)[(0, 0)][0]
    opts["rotate"] = False
    plain = SeededDataset(ADAPTER.dataset(AIRPLANE, data(options=opts), model_config, True), 0)[(0, 0)][0]
    torch.testing.assert_close(rotated[:, 2], plain[:, 2])
    torch.testing.assert_close(rotated.norm(dim=1), plain.norm(dim=1))
    assert not torch.allclose(rotated, plain)


def bad_files(folder):
    """One usable cloud and every kind of unusable file, all written with real tools."""
    folder.mkdir()
    good = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.random.default_rng(0).normal(size=(600, 3))))
    o3d.io.write_point_cloud(str(folder / "good.ply"), good)
    (folder / "empty.ply").write_bytes(b"")
    nan = np.random.default_rng(1).normal(size=(600, 3))
    nan[5, 1] = np.nan
    np.savetxt(folder / "nan.txt", nan, delimiter=",")
    np.savetxt(folder / "few.txt", np.random.default_rng(2).normal(size=(20, 3)), delimiter=",")  # < 32 groups
    (folder / "cloud.las").write_bytes(b"LASF")
    np.save(folder / "good.npy", np.random.default_rng(3).normal(size=(700, 3)).astype(np.float32))
    np.save(folder / "flat.npy", np.zeros(700))
    (folder / "words.txt").write_text("not,a,number\n")
    # open3d will not write a mesh without faces: an OFF header, three vertices, no faces.
    (folder / "vertices_only.off").write_text("OFF\n3 0 0\n1 0 0\n0 1 0\n0 0 1\n")
    return {
        "empty.ply": "empty file",
        "nan.txt": "NaN",
        "few.txt": "fewer than",
        "cloud.las": "unknown extension",
        "words.txt": "not rows of numbers",
        "flat.npy": "array of shape",
        "vertices_only.off": "no triangles",
    }


def test_bad_files_warn_once_each_naming_the_file(tmp_path, model_config):
    expected = bad_files(tmp_path / "clouds")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ADAPTER.dataset(tmp_path / "clouds", data(), model_config, train=True)
    assert [f.name for f in ds.files] == ["good.npy", "good.ply"]
    messages = [str(w.message) for w in caught]
    for name, reason in expected.items():
        hits = [m for m in messages if name in m]
        assert len(hits) == 1 and reason in hits[0], (name, hits)
    assert ds[0][0].shape == (512, 3)


def test_bad_files_are_errors_in_strict_mode(tmp_path, model_config):
    for name, reason in bad_files(tmp_path / "clouds").items():
        with pytest.raises(DataError, match=reason) as err:
            ADAPTER.dataset(tmp_path / "clouds" / name, data(strict=True), model_config, train=True)
        assert name in str(err.value)


def test_options_errors_name_the_key(model_config):
    cases = [
        ({"up_axs": "y"}, "data.options.up_axs"),
        ({"up_axis": "w"}, "data.options.up_axis"),
        ({"scale": [1.5, 0.5]}, "data.options.scale"),
        ({"translate": "far"}, "data.options.translate"),
        ({"eval_sampling": "random"}, "data.options.eval_sampling"),
    ]
    for opts, key in cases:
        with pytest.raises(ConfigError, match=key):
            ADAPTER.dataset(AIRPLANE, data(options=opts), model_config, train=True)
    image_model = create_model(size="tiny", depth=1, input_size=[32, 32], patch_size=4).config
    with pytest.raises(ConfigError, match="model.tokenizer"):
        ADAPTER.dataset(AIRPLANE, data(), image_model, train=True)


def test_picture_and_ply_of_a_reconstruction(tmp_path, model_config):
    torch.manual_seed(0)
    model = create_model(model_config).eval()
    ds = ADAPTER.dataset(MODELNET, data(), model_config, train=False)
    x = torch.stack([ds[i][0] for i in range(2)])
    noise = torch.rand(2, model.num_tokens)
    recon = model.reconstruct(x, noise=noise)
    visible, pred, mask = _views(recon, model_config)
    np.testing.assert_array_equal(mask, model.masker(noise).mask.numpy())  # the mask comes back
    assert visible.shape == pred.shape == (2, 32, 16, 3)
    picture = ADAPTER.picture(recon, model_config)
    pixels = np.asarray(picture)
    assert picture.mode == "RGB" and (pixels < 250).any(axis=2).mean() > 0.01  # points drawn
    path = write_ply(x[0], tmp_path / "input.ply")
    back = np.asarray(o3d.io.read_point_cloud(str(path)).points)
    np.testing.assert_allclose(back, x[0].numpy(), atol=1e-6)
    paths = write_reconstruction(recon, model_config, tmp_path / "recon")
    cloud = o3d.io.read_point_cloud(str(paths[1]))
    assert len(cloud.points) == 32 * 16 and cloud.has_colors()
    red = np.asarray(cloud.colors)[:, 0] > 0.8
    assert red.sum() == int(mask[1].sum()) * 16  # the predicted groups
    np.testing.assert_allclose(np.asarray(cloud.points)[red], pred[1][mask[1] > 0.5].reshape(-1, 3), atol=1e-5)
