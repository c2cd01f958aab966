"""Multispectral shard sets (issue 15) on the real EuroSAT-MS sample and Hydro scenes.

A folder and the shards made from it train alike (the same losses to 1e-6); the manifest holds the folder's band
statistics, which training on the shards reads there; the stored pixels keep EuroSAT's uint16; nodata stays NaN
through the shards; a shard set made with another band list is refused naming the key and both lists; a big
folder is checked from headers only and its statistics read from a seeded sample.
"""

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import SHARED

import mimsdk.adapters.multispectral as multispectral
from mimsdk import DataError, pretrain
from mimsdk.adapter import get_adapter
from mimsdk.adapters.multispectral import EUROSAT_ORDER, scenes, statistics
from mimsdk.adapters.multispectral.stored import unpack_valid
from mimsdk.config import load_recipe, parse_overrides
from mimsdk.data import SeededDataset
from mimsdk.sharding import shard
from mimsdk.shards import ShardReader, read_manifest

EUROSAT = SHARED / "multispectral" / "eurosat_ms"
HYDRO = SHARED / "multispectral" / "hydro_s2_patches"
# Hydro's L2A stacks: the 12 Sentinel-2 bands without B10 (the cirrus band L2A drops), B8A after B08.
HYDRO_ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]  # sentinel2-tiny's
SMALL = ["data.batch_size=16", "train.log_every=1", "train.warmup_steps=1", "train.recon_every=1000",
         "train.ckpt_every=1000"]  # fmt: skip
ADAPTER = get_adapter("multispectral")


@pytest.fixture(scope="module", autouse=True)
def shared_data() -> None:
    if not EUROSAT.is_dir() or not HYDRO.is_dir():
        pytest.fail(f"shared sample data missing at {EUROSAT.parent}: tests expect ../shared beside the checkout")


@pytest.fixture(scope="module")
def eurosat_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 120 EuroSAT-MS scenes sharded with sentinel2-tiny's data settings."""
    return shard("sentinel2-tiny", data=EUROSAT, out=tmp_path_factory.mktemp("eurosat") / "shards", overrides=SMALL)


def losses(result) -> list[float]:
    return [row["loss"] for row in result.history if "loss" in row]


def test_three_steps_on_the_shards_equal_three_on_the_folder(eurosat_shards, tmp_path):
    folder = pretrain("sentinel2-tiny", data=EUROSAT, out=tmp_path / "folder", max_steps=3, overrides=SMALL)
    shards = pretrain("sentinel2-tiny", data=eurosat_shards, out=tmp_path / "shards", max_steps=3, overrides=SMALL)
    assert len(losses(folder)) == 3
    assert np.allclose(losses(shards), losses(folder), rtol=0, atol=1e-6), (losses(shards), losses(folder))
    meta, folder_meta = shards.model.config.metadata, folder.model.config.metadata
    for key in ("bands", "mean", "std", "spacing", "wavelengths", "read_options"):
        assert meta[key] == folder_meta[key], key


def test_the_manifest_holds_the_folders_statistics_and_training_reads_them_there(eurosat_shards, monkeypatch):
    cfg = load_recipe("sentinel2-tiny", {"data": {"path": str(EUROSAT)}})
    mean, std = ADAPTER.statistics(EUROSAT, cfg.data, cfg.model)
    facts = read_manifest(eurosat_shards).facts
    assert facts["mean"] == mean and facts["std"] == std
    assert facts["statistics"] == "measured over 120 scenes" and facts["sizes"] == [[64, 64, 120]]
    picked = [EUROSAT_ORDER.index(b) + 1 for b in BANDS]
    values = []
    for path in sorted(EUROSAT.rglob("*.tif")):
        with rasterio.open(path) as ds:
            values.append(ds.read(picked).reshape(10, -1).astype(np.float64))
    whole = np.concatenate(values, axis=1)
    assert np.allclose(mean, whole.mean(1), rtol=1e-9) and np.allclose(std, whole.std(1), rtol=1e-9)

    def no_pass(*args, **kwargs):
        raise AssertionError("a statistics pass over a shard set")

    monkeypatch.setattr(multispectral, "scene_statistics", no_pass)
    fresh = get_adapter("multispectral")
    data = load_recipe("sentinel2-tiny", {"data": {"path": str(eurosat_shards)}}).data
    dataset = fresh.dataset(eurosat_shards, data, cfg.model, train=True)
    assert len(dataset) == 480 and dataset.mean.ravel().tolist() == pytest.approx(mean)  # 4 tiles per scene
    described = fresh.describe(data, cfg.model, fresh.options(data, cfg.model))
    assert described["mean"] == mean and described["spacing"] == facts["spacing"]


def test_eurosat_is_stored_as_uint16_half_the_bytes_of_float32(eurosat_shards):
    reader = ShardReader(eurosat_shards, read_manifest(eurosat_shards))
    sample = reader[0]
    assert sample["pixels"].dtype == np.uint16 and sample["pixels"].shape == (1, 10, 64, 64)
    assert sample["valid"].size == 0  # no nodata anywhere: no mask stored
    source = bytes(sample["source"]).decode()
    with rasterio.open(source) as ds:
        assert np.array_equal(sample["pixels"][0], ds.read([EUROSAT_ORDER.index(b) + 1 for b in BANDS]))
        assert tuple(sample["transform"]) == tuple(ds.transform)[:6] and sample["crs"] == ds.crs.to_string()
    chunks = json.loads((eurosat_shards / "index.json").read_text())["chunks"]
    stored = sum(c["chunk_bytes"] for c in chunks)
    as_float32 = 120 * 10 * 64 * 64 * 4
    assert stored < 0.52 * as_float32, stored  # uint16 and a few hundred bytes of metadata per sample


def test_a_shard_set_made_with_another_band_list_is_refused_naming_both(eurosat_shards, tmp_path):
    other = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B01"]
    with pytest.raises(DataError) as err:
        pretrain("sentinel2-tiny", data=eurosat_shards, out=tmp_path / "run", max_steps=1,
                 overrides=[*SMALL, f"data.options.bands=[{','.join(other)}]"])  # fmt: skip
    text = str(err.value)
    assert "prepared with bands = " in text and repr(BANDS) in text and repr(other) in text, text


def hydro_with_a_swath_edge(root: Path) -> Path:
    """Hydro's two 256² scenes with nodata=0 declared and the corner below a diagonal outside the swath."""
    root.mkdir()
    rows, cols = np.mgrid[:256, :256]
    outside = rows - cols > 128
    for src in sorted(HYDRO.glob("*.tif")):
        with rasterio.open(src) as ds:
            profile, array = ds.profile, ds.read()
        array[:, outside] = 0
        profile.update(nodata=0)
        with rasterio.open(root / src.name, "w", **profile) as out:
            out.write(array)
    return root


def test_nodata_stays_nan_through_the_shards_and_chips_tile_alike(tmp_path):
    folder = hydro_with_a_swath_edge(tmp_path / "hydro")
    changes = [*SMALL, f"data.options.file_bands=[{','.join(HYDRO_ORDER)}]", "data.options.chip_size=128",
               "data.options.eval_tiles=grid"]  # fmt: skip
    out = shard("sentinel2-tiny", data=folder, out=tmp_path / "shards", overrides=changes)
    reader = ShardReader(out, read_manifest(out))
    assert len(reader) == 2 * 4  # each 256² scene cut into four 128² chips
    bottom_left = reader[2]  # scene 0, chip (128, 0)
    assert list(bottom_left["window"]) == [128, 0, 128, 128] and bottom_left["pixels"].dtype == np.uint16
    valid = unpack_valid(bottom_left["valid"], bottom_left["pixels"].shape)
    rows, cols = np.mgrid[128:256, 0:128]
    assert np.array_equal(valid[0, 0], ~(rows - cols > 128)) and valid.all(axis=1).sum() == valid[:, 0].sum()

    recipe = load_recipe("sentinel2-tiny", parse_overrides(changes))
    views = {}
    for name, path in (("folder", folder), ("shards", out)):
        adapter, data = get_adapter("multispectral"), dataclasses.replace(recipe.data, path=str(path))
        evaluation = adapter.dataset(path, data, recipe.model, train=False)
        training = SeededDataset(adapter.dataset(path, data, recipe.model, train=True), seed=0)
        tiles = [evaluation[i][0] for i in range(len(evaluation))] + [training[(0, i)][0] for i in range(8 * 4)]
        views[name] = torch.stack(tiles)
    assert views["folder"].shape == (8 * 16 + 8 * 4, 10, 32, 32)  # the grid of 32² tiles of 8 chips, then training
    assert torch.isnan(views["folder"]).any() and torch.isfinite(views["folder"]).any()
    torch.testing.assert_close(views["shards"], views["folder"], rtol=0, atol=0, equal_nan=True)


def test_a_big_folder_is_checked_from_headers_and_measured_on_a_seeded_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(scenes, "BIG_FOLDER", 4)
    monkeypatch.setattr(statistics, "BIG_FOLDER", 4)
    monkeypatch.setattr(statistics, "STATS_SAMPLE", 3)
    root = tmp_path / "big"
    root.mkdir()
    files = sorted((EUROSAT / "Forest").glob("*.tif"))[:6]
    for f in files:
        (root / f.name).write_bytes(f.read_bytes())
    cut = root / "A_cut.tif"  # first in order: outside the seeded sample of 3 of 7 (scenes 3, 4 and 6)
    cut.write_bytes(files[0].read_bytes()[: int(files[0].stat().st_size * 0.6)])
    cfg = load_recipe("sentinel2-tiny", {"data": {"path": str(root)}})
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        dataset = ADAPTER.dataset(root, cfg.data, cfg.model, train=False)
    assert cut in dataset.files and not [w for w in said if "A_cut" in str(w.message)]  # headers only: not seen
    sampled = [dataset.files[i] for i in (3, 4, 6)]
    picked = [EUROSAT_ORDER.index(b) + 1 for b in BANDS]
    values = []
    for path in sampled:
        with rasterio.open(path) as ds:
            values.append(ds.read(picked).reshape(10, -1).astype(np.float64))
    assert np.allclose(dataset.mean.ravel(), np.concatenate(values, axis=1).mean(1), rtol=1e-6)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        first = dataset[0]  # the cut file fails when read: named once, replaced by the next scene
    assert torch.equal(first[0], dataset[1][0]) and dataset.skipped == 1
    assert [str(w.message) for w in said if "A_cut" in str(w.message)][0].startswith(f"skipping {cut}")
