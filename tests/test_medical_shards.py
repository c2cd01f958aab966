"""Medical shard sets and big folders (issue 15, items 1, 3, 4 and 5), on the real samples in ../shared/data.

A folder and the shards made from it train alike (the same stored samples, the same losses); a shard set made
with another spacing or window is refused naming the key and both values; scaled intensities are stored as
uint16. The memory cache keeps to data.options.memory_limit and spills the rest to the disk cache; a folder of
more than BIG_FOLDER files is checked by headers only, and a corrupt volume is skipped when training reads it.
"""

import gzip
import time
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import SHARED
from monai.data import CacheDataset, NibabelReader, PersistentDataset

from mimsdk import ConfigError, DataConfig, DataError, ModelConfig, load_recipe, pretrain
from mimsdk.adapters.medical import MedicalAdapter
from mimsdk.adapters.medical.headers import BIG_FOLDER
from mimsdk.config import parse_overrides
from mimsdk.data import SeededDataset
from mimsdk.sharding import shard
from mimsdk.shards import ShardReader, read_manifest

NIFTI = SHARED / "medical3d" / "nifti"
DICOM_2D = SHARED / "medical2d" / "dicom"  # two single-slice DICOM files: a CT (128²) and an MR (64²)
TINY = [
    "model.depth=1", "model.embed_dim=48", "model.num_heads=3", "model.decoder_dim=32", "model.decoder_depth=1",
    "model.decoder_heads=2", "data.batch_size=2", "data.num_workers=0", "train.warmup_steps=1",
    "train.log_every=1", "train.ckpt_every=1000", "train.recon_every=1000",
]  # fmt: skip
CT = ("radiology-ct-tiny", NIFTI, [*TINY, "model.input_size=[16,16,16]"])
MRI = ("radiology-mri-tiny", NIFTI, [*TINY, "model.input_size=[16,16,16]"])
XRAY = ("chest-xray-tiny", DICOM_2D, TINY)
VOLUME = ModelConfig(size="tiny", input_size=[16, 16, 16], patch_size=8, in_chans=1)


@pytest.fixture(scope="module", autouse=True)
def quiet():
    if not NIFTI.is_dir():
        pytest.fail(f"shared sample data missing at {NIFTI}: tests expect ../shared beside the checkout")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's reader registry and the loader-bound notes of tiny runs
        yield


@pytest.fixture(scope="module")
def ct_shards(tmp_path_factory):
    recipe, data, overrides = CT
    return shard(recipe, data=data, out=tmp_path_factory.mktemp("ct") / "shards", overrides=overrides)


def losses(result) -> list[float]:
    return [row["loss"] for row in result.history]


def folder_samples(recipe, data, overrides):
    """The folder's stored samples (the stored half through MONAI's cache), as the recipe prepares them."""
    cfg = load_recipe(recipe, parse_overrides(overrides))
    return MedicalAdapter().scan(data, cfg.data, cfg.model)


@pytest.mark.parametrize("case", [CT, MRI, XRAY], ids=["ct-window", "mri-percentiles", "xray-dicom"])
def test_a_folder_and_its_shards_store_the_same_samples_and_train_alike(tmp_path, ct_shards, case):
    recipe, data, overrides = case
    shards = ct_shards if case is CT else shard(recipe, data=data, out=tmp_path / "shards", overrides=overrides)
    manifest = read_manifest(shards)
    stored, folder = ShardReader(shards, manifest), folder_samples(*case)
    assert manifest.adapter == "medical" and manifest.version == 1 and len(stored) == len(folder) == manifest.count
    assert manifest.preparation["channels"] == ["image"]
    for i in range(len(folder)):
        ours, theirs = stored[i], folder[i]
        assert ours["image"].dtype == np.uint16  # window and percentiles end in [0, 1]: 1/65535 steps
        np.testing.assert_array_equal(ours["image"], theirs["image"])
        np.testing.assert_array_equal(ours["spacing"], theirs["spacing"])
        assert ours["label"] == theirs["label"] == -1
    if case is not XRAY:
        assert manifest.preparation["spacing"] == [2.0, 2.0, 2.0]
        assert all(stored[i]["spacing"].tolist() == [2.0, 2.0, 2.0] for i in range(len(stored)))
    on_folder = pretrain(recipe, data=data, out=tmp_path / "folder", max_steps=3, overrides=overrides)
    on_shards = pretrain(recipe, data=str(shards), out=tmp_path / "on_shards", max_steps=3, overrides=overrides)
    assert len(losses(on_folder)) == 3
    np.testing.assert_allclose(losses(on_shards), losses(on_folder), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("change", "key", "theirs", "ours"),
    [
        ("data.options.spacing=[3.0,3.0,3.0]", "spacing", "[2.0, 2.0, 2.0]", "[3.0, 3.0, 3.0]"),
        ("data.options.window=[-160,240]", "window", "[-1000.0, 1000.0]", "[-160.0, 240.0]"),
    ],
)
def test_shards_prepared_otherwise_are_refused_naming_the_key_and_both_values(
    tmp_path, ct_shards, change, key, theirs, ours
):
    recipe, _, overrides = CT
    with pytest.raises(DataError) as err:
        pretrain(recipe, data=str(ct_shards), out=tmp_path / "run", max_steps=1, overrides=[*overrides, change])
    assert f"prepared with {key} = {theirs}, the recipe asks for {ours}" in str(err.value)


def test_volumes_in_the_reader_units_are_stored_as_float32():
    data = DataConfig(options={"intensity": "none", "spacing": [4.0, 4.0, 4.0], "cache": "none"})
    stored = MedicalAdapter().scan(NIFTI / "shear.nii.gz", data, VOLUME)
    image = stored[0]["image"]
    assert image.dtype == np.float32 and image.min() < -1000  # Hounsfield units, kept whole


def test_the_memory_cache_keeps_to_its_limit_and_spills_the_rest_to_disk(tmp_path, monkeypatch):
    opts = {"kind": "ct", "spacing": [2.0, 2.0, 2.0], "cache": "memory", "cache_dir": str(tmp_path / "cache")}
    whole = MedicalAdapter().dataset(NIFTI, DataConfig(options=opts), VOLUME, train=True)
    assert isinstance(whole.prepared.records, CacheDataset)  # the default limit holds these 4 volumes
    sizes = [whole.prepared[i]["image"].nbytes for i in range(len(whole))]  # uint16: half of float32
    limit = sizes[0] + sizes[1] + sizes[2] // 2  # two volumes fit, the third does not
    bounded = MedicalAdapter().dataset(NIFTI, DataConfig(options={**opts, "memory_limit": limit}), VOLUME, True)
    memory, disk = bounded.prepared.records.datasets
    assert isinstance(memory, CacheDataset) and isinstance(disk, PersistentDataset)
    assert len(memory) == 2 and len(disk) == 2
    held = sum(memory[i]["image"].nbytes for i in range(len(memory)))  # the cached records themselves
    assert held == sizes[0] + sizes[1] <= limit
    for epoch in range(2):  # the same samples, from memory or from disk
        for i in range(len(whole)):
            torch.testing.assert_close(
                SeededDataset(bounded, 5)[(epoch, i)][0], SeededDataset(whole, 5)[(epoch, i)][0], rtol=0, atol=0
            )
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 2  # the spilled two, written once
    # without cache_dir the spilled volumes go to mimsdk's cache folder, never into the data folder
    monkeypatch.setenv("MIMSDK_CACHE", str(tmp_path / "own"))
    nothing = {key: value for key, value in opts.items() if key != "cache_dir"} | {"memory_limit": "0"}
    spilled = MedicalAdapter().dataset(NIFTI, DataConfig(options=nothing), VOLUME, train=False)
    assert isinstance(spilled.prepared.records, PersistentDataset) and len(spilled) == 4
    assert len(list((tmp_path / "own" / "medical").rglob("*.pt"))) == 4 and not (NIFTI / ".mimsdk-cache").exists()


@pytest.mark.parametrize("limit", ["lots", -1, "3 parsecs"])
def test_a_bad_memory_limit_is_named(limit):
    with pytest.raises(ConfigError, match=r"data\.options\.memory_limit"):
        MedicalAdapter().options(DataConfig(options={"memory_limit": limit}), VOLUME)


def test_a_big_folder_is_checked_by_headers_and_a_corrupt_volume_is_skipped_when_read(tmp_path, monkeypatch):
    root = tmp_path / "big"
    root.mkdir()
    volume = nib.Nifti1Image(np.random.default_rng(0).random((12, 12, 12), dtype=np.float32), np.eye(4)).to_bytes()
    for i in range(BIG_FOLDER + 1):
        (root / f"v{i:04d}.nii").write_bytes(volume)
    whole = gzip.compress(volume)  # its header decompresses; its voxels end halfway
    (root / "v0001.nii").unlink()
    corrupt = root / "v0001.nii.gz"
    corrupt.write_bytes(whole[: len(whole) * 2 // 3])
    reads, original = [], NibabelReader.read

    def read(self, data, **kwargs):  # every NIfTI decoded from now on
        reads.append(data)
        return original(self, data, **kwargs)

    monkeypatch.setattr(NibabelReader, "read", read)
    model = ModelConfig(size="tiny", input_size=[8, 8, 8], patch_size=4, in_chans=1)
    started = time.perf_counter()
    ds = MedicalAdapter().dataset(root, DataConfig(num_workers=0, options={"kind": "mri"}), model, train=True)
    built = time.perf_counter() - started
    assert reads == [] and len(ds) == BIG_FOLDER + 1  # nothing decoded, the corrupt file not yet known
    seeded = SeededDataset(ds, seed=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        batch = torch.stack([seeded[(0, i)][0] for i in range(4)])  # item 1 is the corrupt file
        again = seeded[(1, 1)][0]
    assert batch.shape == (4, 1, 8, 8, 8) and again.shape == (1, 8, 8, 8)
    named = [str(w.message) for w in record if str(corrupt) in str(w.message)]
    assert len(named) == 1 and "truncated or incomplete file" in named[0], named
    assert seeded.skipped == 2 and ds.failed_files == 1
    assert len(reads) <= 8, len(reads)  # the items read (and the corrupt one's tries), not the folder
    assert built < 30, built  # 2,001 headers; measured about 1 s on this 2-core machine
