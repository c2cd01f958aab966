"""Bad input in every adapter (issue 18, items 2-5): real files from ../shared/data made broken on purpose.

Each broken file must be named in exactly one line (the file and the reason, no traceback), then skipped with a
count, or stop a ``data.strict`` run with a DataError naming it. A file that breaks only when training reads it
is named once, replaced by the next good sample (the same one whatever the DataLoader workers) and counted.
"""

import gzip
import os
import struct
import time
import warnings
import zlib
from pathlib import Path

import av
import nibabel as nib
import numpy as np
import open3d as o3d
import pytest
import rasterio
import torch
from conftest import SHARED
from PIL import Image
from rasterio.transform import from_origin
from torch.utils.data import DataLoader

from mimsdk import DataConfig, DataError, ModelConfig, create_model
from mimsdk.adapter import ScanPolicy, get_adapter
from mimsdk.adapters.multispectral import EUROSAT_ORDER
from mimsdk.data import ResumableSampler, SampleDataset, SeededDataset, failure_reason

CIFAR = SHARED / "images" / "cifar10" / "train" / "airplane"
NIFTI = SHARED / "medical3d" / "nifti"
B0 = NIFTI / "sub-01_ses-01_dwi_desc-b0_dwi.nii.gz"  # 81×106×76 at 2 mm, float64
PNEUMONIA = SHARED / "medical2d" / "pneumoniamnist_balanced_trainval.npz"
CT_DICOM = SHARED / "medical2d" / "dicom" / "CT_small.dcm"
EUROSAT = SHARED / "multispectral" / "eurosat_ms"
VIDEO = SHARED / "video"
MP4 = VIDEO / "mmaction2_test.mp4"  # 300 frames, 340×256
AVI = VIDEO / "mmaction2_test.avi"  # 164 frames, 320×240
AIRPLANE = SHARED / "pointcloud" / "modelnet40_2048" / "airplane"
SCANS = SHARED / "documents" / "ocrmypdf_scans"

IMAGE_MODEL = ModelConfig(size="tiny", input_size=[16, 16], patch_size=8, in_chans=3)
VOLUME = ModelConfig(size="tiny", input_size=[16, 16, 16], patch_size=8, in_chans=1)
XRAY = ModelConfig(size="tiny", input_size=[16, 16], patch_size=8, in_chans=1)
BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]
VIDEO_MODEL = ModelConfig(size="tiny", input_size=[4, 32, 32], patch_size=[2, 8, 8], modality="video")
PAGE_MODEL = ModelConfig(size="tiny", input_size=[32, 32], patch_size=8, in_chans=1)


@pytest.fixture(scope="module", autouse=True)
def shared_data() -> None:
    if not SHARED.is_dir():
        pytest.fail(f"shared sample data missing at {SHARED}: tests expect ../shared beside the checkout")


# -- helpers ---------------------------------------------------------------------------------------


def copy(src: Path, dst: Path) -> Path:
    """A writable copy (the shared files are read-only)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


def empty(dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(b"")
    return dst


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def latin1_name(folder: Path, stem: bytes, suffix: str) -> Path:
    """A path whose name is not UTF-8 (Latin-1 bytes), as an old archive unpacks; skipped where the file
    system refuses such names."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / os.fsdecode(stem + b"\xe9" + suffix.encode())
    try:
        path.write_bytes(b"")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    return path


def run(fn):
    """``fn()`` (or the DataError it raised) and the text of every warning on the way."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        try:
            result = fn()
        except DataError as err:
            result = err
    return result, [str(w.message) for w in record]


def plain(text: str) -> str:
    """What a user reads is one line: no traceback, no nested library dump."""
    assert "\n" not in text and "Traceback" not in text and 'File "' not in text, text
    return text


def named_once(messages: list[str], path: Path, *words: str) -> str:
    """The one message naming ``path``; it holds each of ``words``."""
    hits = [m for m in messages if str(path) in m]
    assert len(hits) == 1, (str(path), messages)
    for word in words:
        assert word in hits[0], (word, hits[0])
    return plain(hits[0])


def stopped(result, path: Path, *words: str) -> None:
    """A strict run's outcome: a DataError naming ``path``, one line."""
    assert isinstance(result, DataError), result
    text = plain(str(result))
    assert str(path) in text and all(w in text for w in words), text


def load_all(dataset, workers: int = 0, epochs: int = 1, batch: int = 2) -> tuple[torch.Tensor, SeededDataset]:
    """Every batch of ``epochs`` through the trainer's own sampling (SeededDataset, ResumableSampler)."""
    seeded = SeededDataset(dataset, seed=0)
    loader = DataLoader(
        seeded, batch_size=batch, sampler=ResumableSampler(len(seeded), batch, seed=0), num_workers=workers
    )
    batches = iter(loader)
    steps = epochs * ResumableSampler.batches_per_epoch(len(seeded), batch)
    return torch.cat([next(batches)[0] for _ in range(steps)]), seeded


def png_bomb(src: Path, dst: Path) -> Path:
    """``src`` as a PNG whose header claims 100000×100000 pixels (a decompression bomb)."""
    Image.open(src).save(dst)
    data = bytearray(dst.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    dst.write_bytes(bytes(data))
    return dst


def nan_tiff(src: Path, dst: Path) -> Path:
    """A float (mode F) TIFF of ``src``'s size, every pixel NaN."""
    gray = np.asarray(Image.open(src).convert("L"), dtype=np.float32)
    Image.fromarray(np.full_like(gray, np.nan)).save(dst)
    return dst


# -- the mechanism ---------------------------------------------------------------------------------


def test_a_nested_library_error_becomes_one_line_naming_the_file():
    try:
        try:
            try:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
            except EOFError as inner:
                raise RuntimeError("applying transform <LoadImaged>\n  File 'x.py', line 3\n  ...") from inner
        except RuntimeError as middle:
            raise RuntimeError("applying transform <Compose>") from middle
    except RuntimeError as outer:
        reason = failure_reason(outer, "/data/a.nii.gz")
    assert reason == "/data/a.nii.gz: EOFError: Compressed file ended before the end-of-stream marker was reached"


def test_a_library_error_the_scan_did_not_expect_is_one_warning_naming_the_file(tmp_path):
    files = [tmp_path / "a.bin", tmp_path / "b.bin"]

    def probe(path: Path) -> Path:
        if path.name == "b.bin":
            raise Image.DecompressionBombError("Image size (10000000000 pixels) exceeds limit")  # not an OSError
        return path

    good, messages = run(lambda: ScanPolicy().check(tmp_path, files, probe, strict=False))
    assert [unit for unit, _ in good] == files[:1]
    named_once(messages, files[1], "DecompressionBombError: Image size (10000000000 pixels) exceeds limit")
    strict, _ = run(lambda: ScanPolicy().check(tmp_path, files, probe, strict=True))
    stopped(strict, files[1], "strict mode")


class Flaky(SampleDataset):
    """Items 0..7, item 3 failing as a broken file does, item 5 failing as a bug in the program does."""

    def __init__(self, bug: bool = False) -> None:
        self.bug = bug

    def __len__(self) -> int:
        return 8

    def source(self, index: int) -> str:
        return f"/data/{index}.bin"

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        if index == 3:
            raise OSError("unexpected end of file")
        if index == 5 and self.bug:
            raise TypeError("a bug, not bad data")
        return torch.rand(2) + index, index


def test_a_sample_failing_at_load_is_named_once_replaced_by_the_next_and_counted():
    ds = Flaky().guard(strict=False)
    (x, label), messages = run(lambda: ds[3])
    assert label == 4 and ds.skipped == 1 and ds.failed_files == 1
    named_once(messages, Path("/data/3.bin"), "unexpected end of file", "replaced by the next good sample")
    torch.manual_seed(7)
    direct = ds[4][0]
    torch.manual_seed(7)
    (replaced, _), messages = run(lambda: ds[3])
    assert torch.equal(replaced, direct) and messages == []  # drawn as item 3 would have been; warned once only
    with pytest.raises(TypeError, match="a bug"):  # the program's errors are not taken for bad data
        Flaky(bug=True).guard(strict=False)[5]
    with pytest.raises(DataError, match=r"/data/3\.bin: OSError: unexpected end of file \(strict mode") as err:
        Flaky().guard(strict=True)[3]
    plain(str(err.value))


# -- images ----------------------------------------------------------------------------------------


def image_folder(tmp_path: Path) -> tuple[Path, list[Path]]:
    root = tmp_path / "imgs"
    sources = sorted(CIFAR.glob("*.jpg"))[:4]
    return root, [copy(s, root / s.name) for s in sources]


IMAGE_BREAKS = {
    "bomb.png": (lambda src, dst: png_bomb(src, dst), "claims 10,000,000,000 pixels"),
    "nan.tif": (lambda src, dst: nan_tiff(src, dst), "1024 of 1024 pixels are NaN or infinite"),
    "truncated.jpg": (lambda src, dst: truncate(src, dst), "cannot be decoded"),
    "empty.jpg": (lambda src, dst: empty(dst), "not an image Pillow can read"),
    "misnamed.jpg": (lambda src, dst: copy(SCANS.parent / "SOURCES.md", dst), "not an image Pillow can read"),
}


@pytest.mark.parametrize("name", IMAGE_BREAKS)
def test_a_broken_image_is_named_once_and_skipped_or_stops_a_strict_run(tmp_path, name):
    root, good = image_folder(tmp_path)
    make, reason = IMAGE_BREAKS[name]
    bad = make(good[0], root / name)
    started = time.perf_counter()
    ds, messages = run(lambda: get_adapter("images").dataset(root, DataConfig(), IMAGE_MODEL, train=True))
    assert time.perf_counter() - started < 10  # a bomb is refused from its header, never decoded
    named_once(messages, bad, reason)
    assert f"skipped 1 of 5 files in {root}; using 4" in messages and ds.prepared.files == good
    strict, _ = run(lambda: get_adapter("images").dataset(root, DataConfig(strict=True), IMAGE_MODEL, train=True))
    stopped(strict, bad, reason, "strict mode")


def test_an_image_breaking_after_the_scan_is_replaced_the_same_way_by_any_number_of_workers(tmp_path):
    root, good = image_folder(tmp_path)
    one = get_adapter("images").dataset(root, DataConfig(), IMAGE_MODEL, train=True)
    two = get_adapter("images").dataset(root, DataConfig(), IMAGE_MODEL, train=True)
    strict = get_adapter("images").dataset(root, DataConfig(strict=True), IMAGE_MODEL, train=True)
    truncate(CIFAR / good[1].name, good[1], 0.3)  # the scan saw it whole
    (alone, seeded), messages = run(lambda: load_all(one, workers=0, epochs=2))
    named_once(messages, good[1], "cannot be decoded", "replaced by the next good sample")
    assert seeded.skipped_in(0) == 1 and seeded.skipped_in(1) == 1 and seeded.skipped == 2
    together, seeded_two = load_all(two, workers=2, epochs=2)
    assert torch.equal(alone, together)  # the replacement depends on (epoch, index), not on the workers
    assert seeded_two.skipped_in(0) == 1 and seeded_two.skipped_in(1) == 1 and two.failed_files == 1
    with pytest.raises(DataError, match="strict mode") as err:
        load_all(strict)
    assert str(good[1]) in plain(str(err.value))


def test_an_image_with_a_name_that_is_not_utf8_is_read_and_labelled(tmp_path):
    root, good = image_folder(tmp_path)
    odd = copy(sorted(CIFAR.glob("*.jpg"))[5], latin1_name(root, b"caf", ".jpg"))
    rows = b"path,label\nimgs/caf\xe9.jpg,odd\n" + b"".join(f"imgs/{g.name},plain\n".encode() for g in good)
    (tmp_path / "labels.csv").write_bytes(rows)  # the CSV lists the name as its bytes, not UTF-8 either
    data = DataConfig(labels=str(tmp_path / "labels.csv"))
    ds, messages = run(lambda: get_adapter("images").dataset(root, data, IMAGE_MODEL, train=False))
    assert odd in ds.prepared.files and messages == [] and ds.classes == ["odd", "plain"]
    x, label = ds[ds.prepared.files.index(odd)]
    assert x.shape == (3, 16, 16) and ds.classes[label] == "odd"


# -- medical ---------------------------------------------------------------------------------------


def write_like(dst: Path, data: np.ndarray) -> Path:
    """``data`` as a NIfTI with the shared b0 volume's header (affine, 2 mm voxels)."""
    ref = nib.load(B0)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), ref.affine), str(dst))
    return dst


def nifti_bomb(dst: Path) -> Path:
    """The shared b0 volume with its header's dimensions rewritten to 100000×100000×1000 (data unchanged)."""
    raw = bytearray(gzip.decompress(B0.read_bytes()))
    assert struct.unpack("<i", raw[:4])[0] == 348
    raw[40:56] = struct.pack("<8h", 3, 10000, 10000, 1000, 1, 1, 1, 1)
    dst.write_bytes(gzip.compress(bytes(raw[:4096])))
    return dst


MEDICAL_BREAKS = {
    "one_voxel.nii.gz": (lambda p: write_like(p, np.full((1, 1, 1), 7.0)), "a one-voxel image"),
    "empty.nii.gz": (empty, "empty file (0 bytes)"),
    "dicom.nii.gz": (lambda p: copy(CT_DICOM, p), "named .nii.gz but not gzip-compressed"),
    "notes.nii": (lambda p: copy(NIFTI.parent / "SOURCES.md", p), "not a NIfTI file"),
    "bomb.nii.gz": (nifti_bomb, "claims a volume of 10000×10000×1000 (100,000,000,000 voxels)"),
    "truncated.nii.gz": (lambda p: truncate(B0, p), "truncated or incomplete file (EOFError: "),
}


@pytest.mark.parametrize("name", MEDICAL_BREAKS)
def test_a_broken_volume_is_named_in_one_line_and_skipped_or_stops_a_strict_run(tmp_path, name):
    root = tmp_path / "volumes"
    good = copy(B0, root / "b0.nii.gz")
    make, reason = MEDICAL_BREAKS[name]
    bad = make(root / name)
    data = DataConfig(options={"spacing": [4.0, 4.0, 4.0]})
    started = time.perf_counter()
    ds, messages = run(lambda: get_adapter("medical").dataset(root, data, VOLUME, train=True))
    assert time.perf_counter() - started < 20
    named_once(messages, bad, reason)
    assert f"skipped 1 of 2 items in {root}; using 1" in messages and ds.files == [str(good)]
    assert not any("Divide by zero" in m for m in messages)  # MONAI's nameless warning never reaches the user
    data.strict = True
    strict, _ = run(lambda: get_adapter("medical").dataset(root, data, VOLUME, train=True))
    stopped(strict, bad, reason, "strict mode")


def test_a_constant_volume_is_named_and_kept_blank_or_stops_a_strict_run(tmp_path):
    root = tmp_path / "volumes"
    copy(B0, root / "b0.nii.gz")
    flat = write_like(root / "flat.nii.gz", np.full((40, 40, 40), 5.0))
    ds, messages = run(lambda: get_adapter("medical").dataset(root, DataConfig(), VOLUME, train=True))
    named_once(messages, flat, "every voxel is 5 (a constant image", "kept")
    assert not any("Divide by zero" in m for m in messages) and len(ds) == 2
    assert ds[ds.files.index(str(flat))][0].abs().max() == 0  # blank, not unscaled raw values
    strict, _ = run(lambda: get_adapter("medical").dataset(root, DataConfig(strict=True), VOLUME, train=True))
    stopped(strict, flat, "constant image", "strict mode")


def test_a_truncated_npz_is_named_and_skipped_not_a_traceback(tmp_path):
    root = tmp_path / "arrays"
    copy(PNEUMONIA, root / "pneumonia.npz")
    bad = truncate(PNEUMONIA, root / "truncated.npz")
    ds, messages = run(lambda: get_adapter("medical").dataset(root, DataConfig(), XRAY, train=True))
    named_once(messages, bad, "not a readable .npz", "BadZipFile")
    assert len(ds) == 2428 and any(f"skipped 1 of 2429 items in {root}" in m for m in messages)
    alone, _ = run(lambda: get_adapter("medical").dataset(bad, DataConfig(), XRAY, train=True))
    assert isinstance(alone, DataError) and "holds no usable items" in plain(str(alone))
    strict, _ = run(lambda: get_adapter("medical").dataset(root, DataConfig(strict=True), XRAY, train=True))
    stopped(strict, bad, "not a readable .npz", "strict mode")


def test_a_volume_with_a_name_that_is_not_utf8_is_read_and_cached_on_disk(tmp_path):
    root = tmp_path / "volumes"
    odd = copy(B0, latin1_name(root, b"sujet", ".nii.gz"))
    data = DataConfig(options={"spacing": [4.0, 4.0, 4.0], "cache": "disk", "cache_dir": str(tmp_path / "cache")})
    ds, messages = run(lambda: get_adapter("medical").dataset(root, data, VOLUME, train=True))
    assert ds.files == [str(odd)] and messages == [] and ds[0][0].shape == (1, 16, 16, 16)


def test_a_volume_breaking_after_the_scan_is_named_once_and_replaced(tmp_path):
    root = tmp_path / "volumes"
    first, second = copy(B0, root / "a.nii.gz"), copy(B0, root / "b.nii.gz")
    data = DataConfig(options={"spacing": [4.0, 4.0, 4.0], "cache": "none"})
    ds = get_adapter("medical").dataset(root, data, VOLUME, train=True)
    first.write_bytes(b"")  # prepared again when read: the cache is off
    (x, seeded), messages = run(lambda: load_all(ds, epochs=2))
    named_once(messages, first, "empty file (0 bytes)", "replaced by the next good sample")
    assert seeded.skipped == 2 and x.shape == (4, 1, 16, 16, 16)
    assert second.exists()


# -- multispectral ---------------------------------------------------------------------------------


def ms_model(size=(32, 32)) -> ModelConfig:
    return ModelConfig(
        size="tiny", embed_dim=48, depth=1, num_heads=3, input_size=list(size), patch_size=[8, 8], in_chans=10,
        decoder_dim=32, decoder_depth=1, decoder_heads=2, modality="multispectral", tokenizer="channel_groups",
        tokenizer_options={"groups": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], "spacing": 10.0},
    )  # fmt: skip


def ms_data(root: Path, strict: bool = False, **fields) -> DataConfig:
    options = {"bands": BANDS, "file_bands": EUROSAT_ORDER, "select_bands": True}
    return DataConfig(modality="multispectral", path=str(root), strict=strict, options=options, **fields)


def scenes(tmp_path: Path, count: int = 5) -> tuple[Path, list[Path]]:
    root = tmp_path / "scenes"
    sources = sorted((EUROSAT / "Forest").glob("*.tif"))[:count]
    return root, [copy(s, root / s.name) for s in sources]


def rewrite(src: Path, dst: Path, fn=lambda a: a, **profile) -> Path:
    """``src``'s pixels through ``fn``, written to ``dst`` with ``profile`` changes."""
    with rasterio.open(src) as ds:
        meta, array = ds.profile, ds.read()
    array = fn(array)
    meta.update(dtype=array.dtype.name, **profile)
    with rasterio.open(dst, "w", **meta) as out:
        out.write(array)
    return dst


def band_values(paths: list[Path]) -> np.ndarray:
    """The 10 recipe bands of ``paths``, C×N float64."""
    picked = [EUROSAT_ORDER.index(b) + 1 for b in BANDS]
    arrays = []
    for path in paths:
        with rasterio.open(path) as ds:
            arrays.append(ds.read(picked).reshape(10, -1).astype(np.float64))
    return np.concatenate(arrays, axis=1)


def test_one_inf_pixel_is_counted_for_its_file_and_never_reaches_the_statistics(tmp_path):
    root, files = scenes(tmp_path)
    for f in files:  # float32 scenes, as reflectance products ship
        rewrite(f, f, lambda a: a.astype(np.float32))
    inf = rewrite(files[2], files[2], lambda a: np.where(np.arange(a.size).reshape(a.shape) == 64 * 64 + 5, np.inf, a))
    (mean, std), messages = run(lambda: get_adapter("multispectral").statistics(root, ms_data(root), ms_model()))
    named_once(messages, inf, "1 values are NaN or ±inf", "left out of the band statistics")
    values = band_values(files)
    finite = np.where(np.isfinite(values), values, np.nan)
    assert np.all(np.isfinite(mean)) and np.allclose(mean, np.nanmean(finite, axis=1))
    assert np.allclose(std, np.nanstd(finite, axis=1))
    ds = get_adapter("multispectral").dataset(root, ms_data(root), ms_model((64, 64)), train=False)
    x = ds[ds.files.index(inf)][0]
    assert not torch.isinf(x).any() and torch.isnan(x).sum() == 1  # read as no data, like nodata


def test_a_scene_scaled_by_1e30_is_named_and_left_out_of_the_statistics(tmp_path):
    root, files = scenes(tmp_path)
    clean, _ = run(lambda: get_adapter("multispectral").statistics(root, ms_data(root), ms_model()))
    huge = rewrite(files[0], root / "huge.tif", lambda a: a.astype(np.float64) * 1e30)
    (mean, std), messages = run(lambda: get_adapter("multispectral").statistics(root, ms_data(root), ms_model()))
    named_once(messages, huge, "values up to", "another scale", "left out of the band statistics")
    assert any(f"skipped 1 of 6 scenes in {root}; using 5" in m for m in messages)
    assert np.allclose(mean, clean[0]) and np.allclose(std, clean[1])
    ds, _ = run(lambda: get_adapter("multispectral").dataset(root, ms_data(root), ms_model(), train=True))
    assert huge not in ds.files and len(ds) == 5
    strict, _ = run(lambda: get_adapter("multispectral").dataset(root, ms_data(root, True), ms_model(), train=True))
    stopped(strict, huge, "float64", "strict mode")


def geographic(src: Path, dst: Path) -> Path:
    return rewrite(src, dst, crs="EPSG:4326", transform=from_origin(10.0, 50.0, 0.0001, 0.0001))


def two_by_two(src: Path, dst: Path) -> Path:
    return rewrite(src, dst, lambda a: a[:, :2, :2].copy(), width=2, height=2)


def sparse_bomb(src: Path, dst: Path) -> Path:
    """A sparse tiled GeoTIFF with ``src``'s bands and georeference claiming 100000×100000 pixels (1.8 MB)."""
    with rasterio.open(src) as ds:
        meta = ds.profile
    meta.update(width=100_000, height=100_000, tiled=True, blockxsize=256, blockysize=256, sparse_ok=True)
    with rasterio.open(dst, "w", **meta):
        pass
    return dst


MS_BREAKS = {
    "geographic.tif": (geographic, "geographic (degrees), where 5 of 6 scenes are projected (metre)"),
    "tiny.tif": (two_by_two, "2×2 pixels, smaller than the 32×32 tile"),
    "truncated.tif": (lambda src, dst: truncate(src, dst), "truncated or corrupt"),
    "empty.tif": (lambda src, dst: empty(dst), "cannot be read by rasterio"),
    "sparse.tif": (sparse_bomb, "claims 100000×100000 pixels (10,000,000,000)"),
}


@pytest.mark.parametrize("name", MS_BREAKS)
def test_a_broken_scene_is_named_once_and_skipped_not_a_stop_unless_strict(tmp_path, name):
    root, files = scenes(tmp_path)
    make, reason = MS_BREAKS[name]
    bad = make(files[0], root / name)
    started = time.perf_counter()
    ds, messages = run(lambda: get_adapter("multispectral").dataset(root, ms_data(root), ms_model(), train=True))
    assert time.perf_counter() - started < 20  # the sparse claim is refused from its header, never read
    named_once(messages, bad, reason)
    assert f"skipped 1 of 6 scenes in {root}; using 5" in messages and ds.files == files
    assert all(np.isfinite(ds.mean).ravel())
    strict, _ = run(lambda: get_adapter("multispectral").dataset(root, ms_data(root, True), ms_model(), train=True))
    stopped(strict, bad, reason, "strict mode")


def test_a_scene_with_a_name_that_is_not_utf8_is_read(tmp_path):
    root, files = scenes(tmp_path, 2)
    odd = copy(files[0], latin1_name(root, b"sc", ".tif"))
    ds, messages = run(lambda: get_adapter("multispectral").dataset(root, ms_data(root), ms_model(), train=False))
    assert odd in ds.files and messages == []
    assert torch.equal(ds[ds.files.index(odd)][0], ds[ds.files.index(files[0])][0])


def test_a_tile_failing_only_when_read_is_named_once_and_replaced(tmp_path):
    root, files = scenes(tmp_path, 3)
    # tiled and compressed, so one damaged tile fails to decode while the header and the last tile read fine
    broken = rewrite(files[1], files[1], tiled=True, blockxsize=16, blockysize=16, compress="deflate")
    with rasterio.open(broken) as ds:
        start = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))  # a tile in the middle of the centre
    data = bytearray(broken.read_bytes())
    data[start : start + 64] = b"\xff" * 64
    broken.write_bytes(bytes(data))
    stats = ms_data(root, mean=[1000.0] * 10, std=[500.0] * 10)  # given: no pass reads every block
    ds, messages = run(lambda: get_adapter("multispectral").dataset(root, stats, ms_model(), train=False))
    assert ds.files == files and messages == []  # the scan reads the header and the last pixel only
    (x, seeded), messages = run(lambda: load_all(ds, epochs=1, batch=1))
    named_once(messages, broken, "cannot be read by rasterio", "replaced by the next good sample")
    assert seeded.skipped == 1 and torch.isfinite(x).all()
    strict = get_adapter("multispectral").dataset(root, ms_data(root, True, mean=[1e3] * 10, std=[5e2] * 10),
                                                  ms_model(), train=False)  # fmt: skip
    with pytest.raises(DataError, match="strict mode") as err:
        strict[1]
    assert str(broken) in plain(str(err.value))


# -- video -----------------------------------------------------------------------------------------


def small_video(src: Path, dst: Path, size: int = 8, frames: int = 40) -> Path:
    """The first ``frames`` frames of ``src`` scaled to size×size and encoded again (H.264)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _, frame in zip(range(frames), inp.decode(video=0)):
            image = frame.to_image().resize((size, size))
            out.mux(stream.encode(av.VideoFrame.from_image(image)))
        out.mux(stream.encode())
    return dst


def frameless(src: Path, dst: Path) -> Path:
    """An MP4 with ``src``'s video stream and not one frame in it."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        out.add_stream_from_template(inp.streams.video[0])
        out.start_encoding()
    return dst


VIDEO_BREAKS = {
    "tiny.mp4": (lambda dst: small_video(MP4, dst), "decord decodes its 8×8 frames as 12 values per pixel"),
    "frameless.mp4": (lambda dst: frameless(MP4, dst), "0 frames"),
    "truncated.avi": (lambda dst: truncate(AVI, dst), "truncated: its RIFF header declares 294566 bytes"),
    "truncated.mp4": (lambda dst: truncate(MP4, dst), "truncated: its 'mdat' box runs to byte"),
    "empty.mp4": (empty, "empty file (0 bytes)"),
}


@pytest.mark.parametrize("name", VIDEO_BREAKS)
def test_a_broken_video_is_named_once_at_the_scan_and_skipped_or_stops_a_strict_run(tmp_path, name):
    root = tmp_path / "clips"
    good = copy(MP4, root / "good.mp4")
    make, reason = VIDEO_BREAKS[name]
    bad = make(root / name)
    data = DataConfig(modality="video", options={"short_side": 48, "stride": 2})
    ds, messages = run(lambda: get_adapter("video").dataset(root, data, VIDEO_MODEL, train=True))
    named_once(messages, bad, reason)
    assert f"skipped 1 of 2 videos in {root}; using 1" in messages and [v.path for v in ds.videos] == [good]
    data.strict = True
    strict, _ = run(lambda: get_adapter("video").dataset(root, data, VIDEO_MODEL, train=True))
    stopped(strict, bad, reason, "strict mode")


def test_training_reads_every_clip_once_an_8x8_video_is_named_at_the_scan(tmp_path):
    root = tmp_path / "clips"
    copy(MP4, root / "a.mp4")
    copy(AVI, root / "b.avi")
    tiny = small_video(MP4, root / "tiny.mp4")
    data = DataConfig(modality="video", options={"short_side": 48, "stride": 2})
    ds, messages = run(lambda: get_adapter("video").dataset(root, data, VIDEO_MODEL, train=True))
    named_once(messages, tiny, "8×8")
    (x, seeded), messages = run(lambda: load_all(ds, epochs=2))  # the run stopped here, at step 2
    assert x.shape == (4, 3, 4, 32, 32) and seeded.skipped == 0 and messages == []


def test_a_video_with_a_name_that_is_not_utf8_is_read(tmp_path):
    root = tmp_path / "clips"
    odd = copy(AVI, latin1_name(root, b"cl", ".avi"))
    data = DataConfig(modality="video", options={"short_side": 48})
    ds, messages = run(lambda: get_adapter("video").dataset(root, data, VIDEO_MODEL, train=False))
    assert [v.path for v in ds.videos] == [odd] and messages == []
    assert ds[0][0].shape == (3, 4, 32, 32)


# -- point clouds ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloud_model() -> ModelConfig:
    return create_model(
        size="tiny", depth=1, input_size=[256, 3], tokenizer="point_groups", target="chamfer", mask_ratio=0.6,
        tokenizer_options={"groups": 16, "group_size": 16, "pointnet_width": 32},
        decoder_dim=32, decoder_depth=1, decoder_heads=2, modality="pointcloud",
    ).config  # fmt: skip


def ply(dst: Path, ascii: bool = False, src: Path | None = None) -> Path:
    """A ModelNet airplane (comma-separated text) written as PLY by open3d."""
    points = np.loadtxt(src or sorted(AIRPLANE.glob("*.txt"))[0], delimiter=",")[:, :3]
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    assert o3d.io.write_point_cloud(str(dst), cloud, write_ascii=ascii)
    return dst


def garbled_ply(dst: Path) -> Path:
    """An ASCII PLY whose first rows are not numbers (RPly reports it on stderr, naming no file)."""
    lines = ply(dst, ascii=True).read_text().splitlines()
    body = lines.index("end_header") + 1
    lines[body : body + 3] = ["x y z"] * 3
    dst.write_text("\n".join(lines) + "\n")
    return dst


def nan_cloud(dst: Path) -> Path:
    rows = sorted(AIRPLANE.glob("*.txt"))[0].read_text().splitlines()
    rows[10] = "nan,nan,nan,0,0,1"
    dst.write_text("\n".join(rows) + "\n")
    return dst


CLOUD_BREAKS = {
    "truncated.ply": (lambda p: truncate(ply(p), p), "truncated: its header declares 2048 vertices"),
    "truncated_ascii.ply": (lambda p: truncate(ply(p, ascii=True), p), "truncated: its header declares 2048 rows"),
    "garbled.ply": (garbled_ply, "open3d cannot read it (RPly: "),
    "empty.ply": (empty, "empty file"),
    "nan.txt": (nan_cloud, "1 of 2048 points have NaN or infinite coordinates"),
}


@pytest.mark.parametrize("name", CLOUD_BREAKS)
def test_a_broken_cloud_is_named_once_and_skipped_and_open3d_prints_nothing(tmp_path, capfd, cloud_model, name):
    root = tmp_path / "clouds"
    root.mkdir()
    good = ply(root / "good.ply", src=sorted(AIRPLANE.glob("*.txt"))[1])
    make, reason = CLOUD_BREAKS[name]
    bad = make(root / name)
    data = DataConfig(modality="pointcloud")
    ds, messages = run(lambda: get_adapter("pointcloud").dataset(root, data, cloud_model, train=True))
    named_once(messages, bad, reason)
    assert f"skipped 1 of 2 files in {root}; using 1" in messages and ds.files == [good]
    data.strict = True
    strict, _ = run(lambda: get_adapter("pointcloud").dataset(root, data, cloud_model, train=True))
    stopped(strict, bad, reason, "strict mode")
    printed = capfd.readouterr().err
    assert "RPly" not in printed and "Traceback" not in printed


def test_a_cloud_breaking_after_the_scan_is_named_once_and_replaced(tmp_path, capfd, cloud_model):
    root = tmp_path / "clouds"
    root.mkdir()
    texts = sorted(AIRPLANE.glob("*.txt"))
    first, _ = ply(root / "a.ply", src=texts[0]), ply(root / "b.ply", src=texts[1])
    ds = get_adapter("pointcloud").dataset(root, DataConfig(modality="pointcloud"), cloud_model, train=True)
    truncate(first, first, 0.6)
    (x, seeded), messages = run(lambda: load_all(ds, epochs=2, batch=1))
    named_once(messages, first, "truncated", "replaced by the next good sample")
    assert seeded.skipped == 2 and x.shape == (4, 256, 3)
    assert "RPly" not in capfd.readouterr().err


def test_a_cloud_with_a_name_that_is_not_utf8_is_read(tmp_path, cloud_model):
    root = tmp_path / "clouds"
    root.mkdir()
    odd = latin1_name(root, b"avi", ".ply")
    odd.write_bytes(ply(tmp_path / "plain.ply").read_bytes())
    ds, messages = run(lambda: get_adapter("pointcloud").dataset(root, DataConfig(), cloud_model, train=False))
    assert ds.files == [odd] and messages == [] and ds[0][0].shape == (256, 3)


# -- documents -------------------------------------------------------------------------------------


def page_folder(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "docs"
    return root, copy(SCANS / "congress.jpg", root / "congress.jpg")


DOCUMENT_BREAKS = {
    "nan.tif": (lambda p: nan_tiff(SCANS / "congress.jpg", p), "pixels are NaN or infinite"),
    "bomb.png": (lambda p: png_bomb(SCANS / "congress.jpg", p), "is too large to decode safely"),
    "truncated.pdf": (lambda p: truncate(SCANS / "c02-22.pdf", p), "is damaged or truncated"),
    "empty.pdf": (empty, "is not a PDF"),
    "notes.pdf": (lambda p: copy(SCANS.parent / "SOURCES.md", p), "is not a PDF (no %PDF header)"),
}


@pytest.mark.parametrize("name", DOCUMENT_BREAKS)
def test_a_broken_document_is_named_once_and_skipped_or_stops_a_strict_run(tmp_path, name):
    root, good = page_folder(tmp_path)
    make, reason = DOCUMENT_BREAKS[name]
    bad = make(root / name)
    data = DataConfig(modality="documents", options={"dpi": 30})
    ds, messages = run(lambda: get_adapter("documents").dataset(root, data, PAGE_MODEL, train=True))
    named_once(messages, bad, reason)
    assert f"skipped 1 of 2 documents in {root}; using 1" in messages and [p.path for p in ds.pages] == [good]
    data.strict = True
    strict, _ = run(lambda: get_adapter("documents").dataset(root, data, PAGE_MODEL, train=True))
    stopped(strict, bad, reason, "strict mode")


def test_a_page_breaking_after_the_scan_is_named_once_and_replaced(tmp_path):
    root, _ = page_folder(tmp_path)
    pdf = copy(SCANS / "c02-22.pdf", root / "paper.pdf")
    data = DataConfig(modality="documents", options={"dpi": 30, "cache_mb": 0})
    ds = get_adapter("documents").dataset(root, data, PAGE_MODEL, train=True)
    pdf.write_bytes(b"%PDF-1.4 gone\n")
    (x, seeded), messages = run(lambda: load_all(ds, epochs=2, batch=1))
    named_once(messages, pdf, "cannot be read", "replaced by the next good sample")
    assert seeded.skipped == 2 and x.shape == (4, 1, 32, 32)


def test_a_document_with_a_name_that_is_not_utf8_is_read(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    odd = copy(SCANS / "c02-22.pdf", latin1_name(root, b"r\xe9sum", ".pdf"))
    data = DataConfig(modality="documents", options={"dpi": 30})
    ds, messages = run(lambda: get_adapter("documents").dataset(root, data, PAGE_MODEL, train=False))
    assert [p.path for p in ds.pages] == [odd] and messages == [] and ds[0][0].shape == (1, 32, 32)


def test_windows_of_a_truncated_scene_never_reach_training_unnamed(tmp_path):
    """Item 4's multispectral run: one truncated .tif among good ones, strict off: skipped, training data whole."""
    root, files = scenes(tmp_path, 3)
    bad = truncate(files[0], root / "cut.tif", 0.6)
    ds, messages = run(lambda: get_adapter("multispectral").dataset(root, ms_data(root), ms_model(), train=True))
    named_once(messages, bad, "truncated or corrupt")
    x, seeded = load_all(ds, epochs=1, batch=1)
    assert torch.isfinite(x).all() and seeded.skipped == 0
