"""The medical adapter on real NIfTI, DICOM and MedMNIST files, and on broken ones written here with nibabel."""

import gzip
import shutil
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import SHARED
from monai.data import NibabelReader
from PIL import Image

from mimsdk import ConfigError, DataConfig, DataError, ModelConfig, create_model, load_recipe
from mimsdk.adapters.medical import MedicalAdapter
from mimsdk.adapters.medical.stored import UNIT_STEPS, unpack
from mimsdk.data import SeededDataset

NIFTI = SHARED / "medical3d" / "nifti"
ADRENAL = SHARED / "medical3d" / "adrenalmnist3d_64_trainval.npz"
PNEUMONIA = SHARED / "medical2d" / "pneumoniamnist_balanced_trainval.npz"
SERIES = SHARED / "medical2d" / "dicom_vs_seg_mr"
VOLUME = ModelConfig(size="tiny", input_size=[16, 16, 16], patch_size=8, in_chans=1)
XRAY = ModelConfig(size="tiny", input_size=[32, 32], patch_size=8, in_chans=1)
HALF_STEP = 0.5 / UNIT_STEPS + 1e-7  # scaled volumes are stored as uint16: rounded to the nearest 1/65535


@pytest.fixture(autouse=True)
def shared_data():
    if not NIFTI.is_dir():
        pytest.fail(f"shared sample data missing at {NIFTI}: tests expect ../shared beside the checkout")


def prepared(path, model=VOLUME, **options):
    """The stored, deterministic output (before crops) of every usable item, unpacked: {file: C×S float32}."""
    stored = MedicalAdapter().scan(path, DataConfig(options=options), model)
    return {stored.files[i].split("/")[-1]: unpack(stored[i]["image"]) for i in range(len(stored))}


def caught(fn):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in record if "skipp" in str(w.message)]


def write_nifti(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def test_spacing_resamples_to_physical_size():
    out = prepared(NIFTI, spacing=[2.0, 2.0, 2.0], orientation="none")
    for name, image in out.items():
        img = nib.load(NIFTI / name)
        # MONAI keeps the first and last voxel centres: (n - 1) steps of the old spacing, plus one voxel.
        expected = (np.array(img.shape) - 1) * np.array(img.header.get_zooms()[:3]) / 2.0 + 1
        assert image.shape[0] == 1 and image.dtype == torch.float32
        if name != "shear.nii.gz":  # gantry tilt: a sheared grid has no box of its size along the axes
            assert np.abs(np.array(image.shape[1:]) - expected).max() <= 1.0, (name, image.shape, expected)
    assert tuple(out["FLAIR.nii.gz"].shape) == (1, 63, 81, 71)  # 124×160×140 at 1 mm


def test_dataset_items_match_the_model():
    ds = MedicalAdapter().dataset(NIFTI, DataConfig(options={"kind": "mri"}), VOLUME, train=True)
    assert len(ds) == 4 and ds.classes == []
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (1, 16, 16, 16) and x.dtype == torch.float32 and y == -1
        assert 0.0 <= x.min() and x.max() <= 1.0


def test_non_ras_volumes_are_reoriented(tmp_path):
    # strokez.nii.gz is stored left-to-right (LAS): RAS flips its first axis.
    stroke = nib.load(NIFTI / "strokez.nii.gz")
    assert nib.aff2axcodes(stroke.affine) == ("L", "A", "S")
    raw = np.asarray(stroke.dataobj, dtype=np.float32)
    out = prepared(NIFTI / "strokez.nii.gz", intensity="none")["strokez.nii.gz"][0].numpy()
    np.testing.assert_array_equal(out, raw[::-1])
    kept = prepared(NIFTI / "strokez.nii.gz", intensity="none", orientation="none")["strokez.nii.gz"][0].numpy()
    np.testing.assert_array_equal(kept, raw)

    # Axis i runs posterior, j right, k superior: RAS order is (j, reversed i, k).
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = np.array([[0, 2, 0, 0], [-1, 0, 0, 0], [0, 0, 3, 0], [0, 0, 0, 1]], dtype=float)
    path = write_nifti(tmp_path / "pir.nii.gz", data, affine)
    assert nib.aff2axcodes(affine) == ("P", "R", "S")
    out = prepared(path, intensity="none", pad=True)["pir.nii.gz"][0].numpy()
    np.testing.assert_array_equal(out, data[::-1].transpose(1, 0, 2))


def test_ct_window_maps_hounsfield_units_to_unit_range():
    hu = np.asarray(nib.load(NIFTI / "shear.nii.gz").dataobj, dtype=np.float32)  # RAS already
    assert hu.min() < -1000 and hu.max() > 500
    out = prepared(NIFTI / "shear.nii.gz", kind="ct", window=[-1000, 1000])["shear.nii.gz"][0].numpy()
    assert out.min() == 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out, np.clip((hu + 1000) / 2000, 0, 1), atol=HALF_STEP)
    narrow = prepared(NIFTI / "shear.nii.gz", kind="ct", window=[0, 80])["shear.nii.gz"][0].numpy()
    np.testing.assert_allclose(narrow, np.clip(hu / 80, 0, 1), atol=HALF_STEP)


def test_mri_percentiles_normalise_each_volume():
    raw = np.asarray(nib.load(NIFTI / "FLAIR.nii.gz").dataobj, dtype=np.float32)
    out = prepared(NIFTI / "FLAIR.nii.gz", kind="mri", percentiles=[1, 99])["FLAIR.nii.gz"][0].numpy()
    lo, hi = np.percentile(raw, [1, 99])
    np.testing.assert_allclose(out, np.clip((raw - lo) / (hi - lo), 0, 1), atol=1e-5)
    assert out.min() == 0.0 and out.max() == 1.0 and 0.005 < (out == 1.0).mean() < 0.02


def test_dicom_series_is_stacked_in_slice_order(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    # File names in the opposite order of the instances: the reader must not go by name.
    for src, name in zip(sorted(SERIES.glob("*.dcm")), ["c.dcm", "b.dcm", "a.dcm"]):
        shutil.copy(src, folder / name)
    model = ModelConfig(size="tiny", input_size=[16, 16, 2], patch_size=[8, 8, 1], in_chans=1)
    volume = prepared(folder, model, intensity="none")["series"][0].numpy()
    assert volume.shape == (512, 512, 3)
    headers = sorted((pydicom.dcmread(p) for p in SERIES.glob("*.dcm")), key=lambda d: d.ImagePositionPatient[2])
    assert [int(d.InstanceNumber) for d in headers] == [1, 2, 3]  # inferior to superior
    for k, header in enumerate(headers):
        pixels = header.pixel_array.astype(np.float32).T  # (column, row) = (x, y)
        views = [pixels, pixels[::-1], pixels[:, ::-1], pixels[::-1, ::-1]]  # up to the in-plane RAS flips
        assert any(np.array_equal(volume[..., k], v) for v in views), k
        assert not np.array_equal(volume[..., k], volume[..., (k + 1) % 3])
    spaced = prepared(folder, model, intensity="none", spacing=[0.8203125, 0.8203125, 1.5])["series"]
    assert tuple(spaced.shape) == (1, 256, 256, 3)


def test_dicom_files_as_2d_images_stay_upright():
    out = prepared(SHARED / "medical2d" / "dicom", XRAY, intensity="none")
    assert set(out) == {"CT_small.dcm", "MR_small.dcm"}
    pixels = pydicom.dcmread(SHARED / "medical2d" / "dicom" / "MR_small.dcm").pixel_array.astype(np.float32)
    np.testing.assert_array_equal(out["MR_small.dcm"][0].numpy(), pixels)  # rows, columns as stored
    ds = MedicalAdapter().dataset(SHARED / "medical2d" / "dicom", DataConfig(), XRAY, train=False)
    assert [tuple(ds[i][0].shape) for i in range(2)] == [(1, 32, 32), (1, 32, 32)]


def test_npz_splits_labels_and_png_agree(tmp_path):
    adapter = MedicalAdapter()
    train = adapter.dataset(PNEUMONIA, DataConfig(), XRAY, train=True)
    val = adapter.dataset(PNEUMONIA, DataConfig(options={"split": "val"}), XRAY, train=False)
    with np.load(PNEUMONIA) as z:
        images, labels = z["val_images"], z["val_labels"][:, 0]
    assert len(train) == 2428 and len(val) == 270 and val.classes == ["0", "1"]
    assert [val[i][1] for i in range(10)] == labels[:10].tolist()
    x, _ = val[3]
    assert x.shape == (1, 32, 32) and x.min() >= 0 and x.max() <= 1
    # The same X-ray as a PNG file goes through the same MONAI chain.
    Image.fromarray(images[3]).save(tmp_path / "xray.png")
    png = adapter.dataset(tmp_path / "xray.png", DataConfig(), XRAY, train=False)
    torch.testing.assert_close(png[0][0], x)


def test_labels_from_csv(tmp_path):
    for name in ("a", "b", "c"):
        write_nifti(tmp_path / f"{name}.nii.gz", np.random.default_rng(0).random((16, 16, 16), dtype=np.float32))
    (tmp_path / "labels.csv").write_text("path,label\na.nii.gz,tumour\nb.nii.gz,normal\nc.nii.gz,tumour\n")
    ds = MedicalAdapter().dataset(tmp_path, DataConfig(labels=str(tmp_path / "labels.csv")), VOLUME, train=False)
    assert ds.classes == ["normal", "tumour"] and [ds[i][1] for i in range(3)] == [1, 0, 1]
    # a held-out volume of one class keeps the index the whole CSV gives it
    (tmp_path / "held_out").mkdir()
    write_nifti(tmp_path / "held_out" / "d.nii.gz", np.zeros((16, 16, 16), dtype=np.float32))
    with (tmp_path / "labels.csv").open("a") as f:
        f.write("held_out/d.nii.gz,tumour\n")
    held_out = MedicalAdapter().dataset(
        tmp_path / "held_out", DataConfig(labels=str(tmp_path / "labels.csv")), VOLUME, train=False
    )
    assert held_out.classes == ["normal", "tumour"] and held_out[0][1] == 1


def broken_folder(tmp_path):
    root = tmp_path / "volumes"
    root.mkdir()
    rng = np.random.default_rng(0)
    write_nifti(root / "good.nii.gz", rng.random((20, 20, 20), dtype=np.float32))
    whole = gzip.compress(nib.Nifti1Image(rng.random((20, 20, 20), dtype=np.float32), np.eye(4)).to_bytes())
    (root / "truncated.nii.gz").write_bytes(whole[: len(whole) // 2])
    write_nifti(root / "four_d.nii.gz", rng.random((20, 20, 20, 3), dtype=np.float32))
    nan = rng.random((20, 20, 20), dtype=np.float32)
    nan[3, 4, 5] = np.nan
    write_nifti(root / "nan.nii.gz", nan)
    write_nifti(root / "small.nii.gz", rng.random((20, 20, 8), dtype=np.float32))
    mixed = root / "mixed_series"
    shutil.copytree(SHARED / "medical2d" / "dicom", mixed)
    return root


EXPECTED = {
    "truncated.nii.gz": "truncated",
    "four_d.nii.gz": "4D volume",
    "nan.nii.gz": "1 NaN voxel",
    "small.nii.gz": "smaller than the 16×16×16 crop",
    "mixed_series": "mixes 2 series",
}


def test_bad_volumes_warn_once_each_and_are_skipped(tmp_path):
    root = broken_folder(tmp_path)
    ds, messages = caught(lambda: MedicalAdapter().dataset(root, DataConfig(), VOLUME, train=True))
    assert ds.files == [str(root / "good.nii.gz")] and ds[0][0].shape == (1, 16, 16, 16)
    for name, problem in EXPECTED.items():
        hits = [m for m in messages if f"{root / name}:" in m]
        assert len(hits) == 1 and problem in hits[0], (name, hits)
    assert any("skipped 5 of 6 items" in m for m in messages)


def test_strict_mode_stops_at_a_bad_volume_naming_it(tmp_path):
    root = broken_folder(tmp_path)
    for name, problem in EXPECTED.items():
        folder = tmp_path / f"only_{name}"
        folder.mkdir()
        src = root / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, folder / name)
        with pytest.raises(DataError, match=problem) as err:
            MedicalAdapter().dataset(folder, DataConfig(strict=True), VOLUME, train=True)
        assert str(folder / name) in str(err.value)


def test_padding_accepts_small_volumes_and_4d_files_can_be_sequences(tmp_path):
    root = broken_folder(tmp_path)
    padded = prepared(root / "small.nii.gz", pad=True)
    ds = MedicalAdapter().dataset(root / "small.nii.gz", DataConfig(options={"pad": True}), VOLUME, train=True)
    assert padded["small.nii.gz"].shape == (1, 20, 20, 8) and ds[0][0].shape == (1, 16, 16, 16)
    model = ModelConfig(size="tiny", input_size=[16, 16, 16], patch_size=8, in_chans=3)
    opts = {"channels": ["T1", "T2", "FLAIR"]}
    ds = MedicalAdapter().dataset(root / "four_d.nii.gz", DataConfig(options=opts), model, train=False)
    assert ds[0][0].shape == (3, 16, 16, 16)


def test_sequences_in_subject_folders_become_channels(tmp_path):
    names = ["T1", "T2", "FLAIR"]
    for subject in ("sub-01", "sub-02"):
        (tmp_path / subject).mkdir()
        for c, name in enumerate(names):  # each sequence a constant, so its channel is recognisable
            write_nifti(tmp_path / subject / f"{subject}_{name}.nii.gz", np.full((16, 16, 16), 10.0 * (c + 1)))
    write_nifti(tmp_path / "sub-02" / "sub-02_T2.nii.gz", np.full((16, 16, 16), 20.0))
    model = ModelConfig(size="tiny", input_size=[16, 16, 16], patch_size=8, in_chans=3)
    data = DataConfig(options={"channels": names, "intensity": "none"})
    ds = MedicalAdapter().dataset(tmp_path, data, model, train=False)
    assert len(ds) == 2
    x, _ = ds[0]
    assert [x[c].unique().tolist() for c in range(3)] == [[10.0], [20.0], [30.0]]
    meta = MedicalAdapter().metadata(data, model)
    assert meta["channel_names"] == names and meta["options"]["channels"] == names


def count_reads(monkeypatch) -> list:
    """Files MONAI's NIfTI reader opens from now on."""
    reads, original = [], NibabelReader.read

    def read(self, data, **kwargs):
        reads.append(data)
        return original(self, data, **kwargs)

    monkeypatch.setattr(NibabelReader, "read", read)
    return reads


def test_memory_cache_decodes_each_file_once(monkeypatch):
    reads = count_reads(monkeypatch)
    adapter, data = MedicalAdapter(), DataConfig(options={"kind": "mri", "cache": "memory"})
    train = adapter.dataset(NIFTI, data, VOLUME, train=True)
    view = adapter.dataset(NIFTI, data, VOLUME, train=False)
    for _ in range(2):
        for i in range(len(train)):
            train[i], view[i]
    assert len(reads) == 4


def test_disk_cache_serves_a_new_process_without_decoding(monkeypatch, tmp_path):
    reads = count_reads(monkeypatch)
    data = DataConfig(options={"kind": "mri", "cache": "disk", "cache_dir": str(tmp_path / "cache")})
    first = MedicalAdapter().dataset(NIFTI, data, VOLUME, train=False)
    assert len(reads) == 4
    again = MedicalAdapter().dataset(NIFTI, data, VOLUME, train=False)  # a fresh adapter: nothing in memory
    for i in range(len(again)):
        torch.testing.assert_close(again[i][0], first[i][0])
    assert len(reads) == 4
    changed = DataConfig(options={**data.options, "window": [0, 100], "kind": "ct"})
    MedicalAdapter().dataset(NIFTI, changed, VOLUME, train=False)  # other settings: another cache entry
    assert len(reads) == 8


def test_random_crops_follow_torch_seed_for_exact_resume():
    ds = MedicalAdapter().dataset(NIFTI / "FLAIR.nii.gz", DataConfig(options={"kind": "mri"}), VOLUME, train=True)
    seeded = SeededDataset(ds, seed=7)
    a, b, c = seeded[(3, 0)][0], seeded[(3, 0)][0], seeded[(4, 0)][0]
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    view = MedicalAdapter().dataset(NIFTI / "FLAIR.nii.gz", DataConfig(options={"kind": "mri"}), VOLUME, train=False)
    torch.testing.assert_close(view[0][0], view[0][0])


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"kind": "pet"}, "data.options.kind"),
        ({"spacingg": [1, 1, 1]}, "data.options.spacingg"),
        ({"window": "wide"}, "data.options.window"),
        ({"cache": "gpu"}, "data.options.cache"),
        ({"orientation": "XYZ"}, "data.options.orientation"),
    ],
)
def test_bad_options_name_their_key(options, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        MedicalAdapter().dataset(NIFTI, DataConfig(options=options), VOLUME, train=False)


def test_wrong_channel_names_and_spacing_are_errors():
    with pytest.raises(DataError, match="data.options.channels"):
        MedicalAdapter().dataset(NIFTI, DataConfig(options={"channels": ["T1", "T2"]}), VOLUME, train=False)
    with pytest.raises(DataError, match="data.options.spacing"):
        MedicalAdapter().dataset(NIFTI, DataConfig(options={"spacing": [1, 1]}), VOLUME, train=False)


def test_metadata_and_three_plane_pictures():
    data = DataConfig(options={"kind": "ct", "spacing": [1.5, 1.5, 2.0]})
    model = ModelConfig(**{**VOLUME.__dict__, "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, "depth": 1})
    model.metadata = MedicalAdapter().metadata(data, model)
    assert model.metadata["window"] == [-1000.0, 1000.0] and model.metadata["orientation"] == "RAS"
    assert model.metadata["kind"] == "ct" and model.metadata["spacing"] == [1.5, 1.5, 2.0]
    mae = create_model(model)
    x = torch.stack([MedicalAdapter().dataset(NIFTI, data, model, train=False)[i][0] for i in range(2)])
    picture = MedicalAdapter().picture(mae.reconstruct(x, generator=torch.Generator().manual_seed(0)), model)
    # 2 samples × 3 planes rows of 96-pixel cells (16 voxels enlarged 6×), 3 columns.
    assert picture.size == (3 * 98 + 2, 14 + 6 * 98 + 2)
    pixels = np.asarray(picture)
    masked_cell = pixels[14 + 2 : 14 + 98, 98 + 2 : 2 * 98]
    assert (masked_cell == 128).all(axis=2).mean() > 0.5  # mask 0.75: mostly grey


@pytest.mark.parametrize(
    "name",
    ["radiology-ct", "radiology-ct-tiny", "radiology-mri", "radiology-mri-tiny", "chest-xray", "chest-xray-tiny"],
)
def test_recipes_options_are_valid(name):
    recipe = load_recipe(name)
    meta = MedicalAdapter().metadata(recipe.data, recipe.model)
    assert recipe.data.modality == "medical" and len(meta["channel_names"]) == recipe.model.in_chans
    assert meta["dims"] == len(recipe.model.input_size)
