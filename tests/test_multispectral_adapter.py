import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import SHARED
from rasterio.transform import from_origin
from rasterio.windows import Window

from mimsdk import create_model
from mimsdk.adapter import get_adapter
from mimsdk.adapters.multispectral import EUROSAT_ORDER, RunningStats, match_bands, read_window, scene_statistics
from mimsdk.config import ConfigError, DataConfig, ModelConfig
from mimsdk.data import SeededDataset
from mimsdk.errors import DataError
from mimsdk.hub import load_model, save_pretrained
from mimsdk.probe import read_dataset
from mimsdk.serialization import save_model

DATA = SHARED / "multispectral"
EUROSAT = DATA / "eurosat_ms"
BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]
GROUPS = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
ADAPTER = get_adapter("multispectral")


@pytest.fixture(scope="module", autouse=True)
def shared_data() -> None:
    if not EUROSAT.is_dir():
        pytest.fail(f"shared sample data missing at {EUROSAT}: tests expect ../shared beside the checkout")


def model_config(bands=BANDS, size=(32, 32), **kw) -> ModelConfig:
    return ModelConfig(
        size="tiny", embed_dim=48, depth=1, num_heads=3, input_size=list(size), patch_size=[8] * len(size),
        in_chans=len(bands), decoder_dim=32, decoder_depth=1, decoder_heads=2, modality="multispectral",
        tokenizer="channel_groups", tokenizer_options={"groups": GROUPS if len(bands) == 10 else [], "spacing": 10.0},
        **kw,
    )  # fmt: skip


def eurosat_data(path=EUROSAT, **options) -> DataConfig:
    opts = {"bands": BANDS, "file_bands": EUROSAT_ORDER, "select_bands": True, **options}
    return DataConfig(modality="multispectral", path=str(path), strict=True, options=opts)


def write_tif(path: Path, array: np.ndarray, names=None, nodata=None, tiled=True, res=10.0, **profile) -> Path:
    """A GeoTIFF written with rasterio: C×H×W array, band descriptions ``names``."""
    c, h, w = array.shape
    meta = dict(driver="GTiff", width=w, height=h, count=c, dtype=array.dtype.name, crs="EPSG:32632",
                transform=from_origin(500000, 5600000, res, res), nodata=nodata, **profile)  # fmt: skip
    if tiled:
        meta.update(tiled=True, blockxsize=64, blockysize=64)
    with rasterio.open(path, "w", **meta) as ds:
        ds.write(array)
        for i, name in enumerate(names or []):
            ds.set_band_description(i + 1, name)
    return path


def test_eurosat_bands_georeferencing_and_labels():
    scenes, classes = ADAPTER.scan(EUROSAT, eurosat_data(), model_config())
    assert len(scenes) == 120 and len(classes) == 10 and classes[0] == "AnnualCrop"
    scene = scenes[0]
    with rasterio.open(scene.path) as ds:
        assert ds.count == 13 and ds.crs is not None
        assert scene.crs == ds.crs and scene.transform == ds.transform
    assert scene.crs.to_epsg() // 100 in (326, 327)  # UTM
    assert scene.spacing == pytest.approx(10.0, abs=0.01)
    # the 10 bands are taken by name: B8A is the file's 13th band, B11 its 11th
    assert scene.dates[0][0].indexes == [2, 3, 4, 8, 5, 6, 7, 13, 11, 12]
    ds = ADAPTER.dataset(EUROSAT, eurosat_data(), model_config(), train=False)
    x, label = ds[0]
    assert x.shape == (10, 32, 32) and x.dtype == torch.float32 and label == 0
    with rasterio.open(scene.path) as raw:
        b8a = raw.read(13, window=Window(16, 16, 32, 32)).astype(np.float32)
    mean, std = ADAPTER.statistics(EUROSAT, eurosat_data(), model_config())
    assert np.allclose(x[7].numpy() * std[7] + mean[7], b8a, atol=1e-2)


def test_streaming_statistics_equal_numpy_on_the_whole(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(1000, 300, size=(3, 300, 200)).astype(np.float32)
    array[:, :40, :50] = -9999  # nodata corner
    write_tif(tmp_path / "a.tif", array, ["B02", "B03", "B04"], nodata=-9999)
    other = np.where(array == -9999, -9999, array * 2)[:, ::-1].copy()
    write_tif(tmp_path / "b.tif", other, ["B02", "B03", "B04"], nodata=-9999)
    data = DataConfig(
        modality="multispectral", path=str(tmp_path), strict=True, options={"bands": ["B02", "B03", "B04"]}
    )
    mean, std = ADAPTER.statistics(tmp_path, data, model_config(["B02", "B03", "B04"]))
    whole = np.concatenate([array, other], axis=2).reshape(3, -1).astype(np.float64)
    whole = np.where(whole < -9000, np.nan, whole)
    assert np.allclose(mean, np.nanmean(whole, axis=1), rtol=1e-9)
    assert np.allclose(std, np.nanstd(whole, axis=1), rtol=1e-9)
    # chunking does not matter: one update or many give the same
    one, many = RunningStats(3), RunningStats(3)
    one.update(whole)
    for chunk in np.array_split(whole, 7, axis=1):
        many.update(chunk)
    assert np.allclose(one.mean, many.mean) and np.allclose(one.std, many.std)


def test_eurosat_statistics_equal_numpy():
    scenes, _ = ADAPTER.scan(EUROSAT, eurosat_data(), model_config())
    stats = scene_statistics(scenes[:12], 10)
    arrays = []
    for s in scenes[:12]:
        with rasterio.open(s.path) as ds:
            arrays.append(ds.read(s.dates[0][0].indexes).reshape(10, -1))
    whole = np.concatenate(arrays, axis=1).astype(np.float64)
    assert np.allclose(stats.mean, whole.mean(1)) and np.allclose(stats.std, whole.std(1))


@pytest.mark.parametrize("tiled", [True, False])
def test_windowed_read_equals_the_region_read_whole(tmp_path, tiled):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 10000, size=(4, 700, 500)).astype(np.uint16)
    path = write_tif(tmp_path / "scene.tif", array, ["B02", "B03", "B04", "B08"], tiled=tiled)
    bands = ["B02", "B03", "B04", "B08"]
    data = DataConfig(modality="multispectral", path=str(path), strict=True,
                      options={"bands": bands, "eval_tiles": "grid"}, mean=[0.0] * 4, std=[1.0] * 4)  # fmt: skip
    cfg = model_config(bands, (64, 96))
    ds = ADAPTER.dataset(path, data, cfg, train=False)
    assert len(ds) == (700 // 64) * (500 // 96)
    with rasterio.open(path) as whole:
        everything = whole.read().astype(np.float32)
    x, _ = ds[7]  # row 1, col 2 of the 10×5 grid
    assert torch.equal(x, torch.from_numpy(everything[:, 64:128, 192:288]))
    train = SeededDataset(ADAPTER.dataset(path, data, cfg, train=True), seed=3)
    a, b = train[(0, 0)][0], train[(0, 0)][0]
    assert torch.equal(a, b) and not torch.equal(a, train[(1, 0)][0])  # reproducible, new per epoch
    # a random training window is some 64×96 region of the scene
    window = a.numpy()
    for flip in (window, window[:, :, ::-1], window[:, ::-1], window[:, ::-1, ::-1]):
        hits = np.argwhere(everything[0] == flip[0, 0, 0])
        if any(np.array_equal(everything[:, r : r + 64, c : c + 96], flip) for r, c in hits if r + 64 <= 700):
            break
    else:
        pytest.fail("a training window is not a region of the scene")


def test_nodata_becomes_nan_and_stays_out_of_the_loss(tmp_path):
    array = np.random.default_rng(2).integers(1, 5000, size=(3, 32, 32)).astype(np.uint16)
    array[:, :8, :8] = 0
    path = write_tif(tmp_path / "n.tif", array, ["B02", "B03", "B04"], nodata=0)
    bands = ["B02", "B03", "B04"]
    data = DataConfig(modality="multispectral", path=str(path), strict=True, options={"bands": bands})
    cfg = model_config(bands)
    x, _ = ADAPTER.dataset(path, data, cfg, train=False)[0]
    assert torch.isnan(x[:, :8, :8]).all() and not torch.isnan(x[:, 8:]).any()
    cfg.metadata = ADAPTER.metadata(data, cfg)
    model = create_model(cfg).eval()
    tok = model.tokenize(x[None])
    assert tok.weights[0, 0].sum() == 0 and tok.weights[0, 1:].min() == 1  # token 0 is the nodata corner
    noise = torch.rand(1, model.num_tokens, generator=torch.Generator().manual_seed(0))
    noise[0, 0] = 2.0  # masked: its prediction would count if it were data
    loss = model(x[None], noise=noise).loss
    shifted = model.decoder.pred.register_forward_hook(
        lambda m, i, o: o + torch.nn.functional.pad(o[:, :1] * 0 + 50, (0, 0, 0, o.shape[1] - 1))
    )
    assert torch.isfinite(loss) and torch.allclose(model(x[None], noise=noise).loss, loss)
    shifted.remove()


def test_band_count_mismatch_names_file_and_expected_bands(tmp_path):
    path = write_tif(tmp_path / "twelve.tif", np.ones((12, 32, 32), np.uint16))
    with pytest.raises(DataError, match=r"twelve\.tif has 12 bands; the recipe names 13 \(B01, B02"):
        ADAPTER.dataset(path, eurosat_data(path, file_bands=[], select_bands=False, bands=EUROSAT_ORDER),
                        model_config(EUROSAT_ORDER), train=True)  # fmt: skip
    with pytest.raises(DataError, match=r"twelve\.tif has 12 bands but data.options.file_bands names 13"):
        ADAPTER.dataset(path, eurosat_data(path), model_config(), train=True)


def test_corrupt_tiff_is_named_and_skipped_unless_strict(tmp_path):
    good = write_tif(tmp_path / "good.tif", np.ones((3, 32, 32), np.uint16) * 7, ["B02", "B03", "B04"])
    bad = tmp_path / "bad.tif"
    bad.write_bytes(good.read_bytes()[:300])
    data = DataConfig(modality="multispectral", path=str(tmp_path), strict=True,
                      options={"bands": ["B02", "B03", "B04"]}, mean=[0.0] * 3, std=[1.0] * 3)  # fmt: skip
    cfg = model_config(["B02", "B03", "B04"])
    with pytest.raises(DataError, match=r"bad\.tif: cannot be read by rasterio"):
        ADAPTER.dataset(tmp_path, data, cfg, train=True)
    data.strict = False
    with pytest.warns(UserWarning, match=r"skipping .*bad\.tif: cannot be read"):
        ds = ADAPTER.dataset(tmp_path, data, cfg, train=True)
    assert [p.name for p in ds.files] == ["good.tif"]


def test_all_nodata_tile_is_an_error_naming_the_file(tmp_path):
    path = write_tif(tmp_path / "empty.tif", np.zeros((3, 32, 32), np.uint16), ["B02", "B03", "B04"], nodata=0)
    data = DataConfig(modality="multispectral", path=str(path), strict=True,
                      options={"bands": ["B02", "B03", "B04"]}, mean=[0.0] * 3, std=[1.0] * 3)  # fmt: skip
    ds = ADAPTER.dataset(path, data, model_config(["B02", "B03", "B04"]), train=True)
    with pytest.raises(DataError, match=r"empty\.tif: every pixel of the tile .* is nodata"):
        ds[0]
    data.mean = data.std = None
    with pytest.raises(DataError, match=r"bands B02, B03, B04 hold no valid pixel"):
        ADAPTER.statistics(path, data, model_config(["B02", "B03", "B04"]))


def test_bands_in_another_order_are_an_error_unless_selected_by_name(tmp_path):
    array = np.stack([np.full((32, 32), v, np.uint16) for v in (1, 2, 3)])
    path = write_tif(tmp_path / "bgr.tif", array, ["B04", "B03", "B02"])
    bands = ["B02", "B03", "B04"]
    data = DataConfig(modality="multispectral", path=str(path), strict=True,
                      options={"bands": bands}, mean=[0.0] * 3, std=[1.0] * 3)  # fmt: skip
    with pytest.raises(DataError, match=r"bgr\.tif holds bands B04, B03, B02 \(its bands in another order\); "
                       r"expected B02, B03, B04 in that order"):  # fmt: skip
        ADAPTER.dataset(path, data, model_config(bands), train=False)
    data.options["select_bands"] = True
    x, _ = ADAPTER.dataset(path, data, model_config(bands), train=False)[0]
    assert x[:, 0, 0].tolist() == [3.0, 2.0, 1.0]
    data.options["bands"] = ["B02", "B03", "B08"]
    with pytest.raises(DataError, match=r"bgr\.tif lacks bands B08"):
        ADAPTER.dataset(path, data, model_config(data.options["bands"]), train=False)


def test_match_bands_reorders_and_refuses_silent_mismatch():
    cfg = model_config(["B02", "B03", "B04"])
    cfg.metadata = {"bands": ["B02", "B03", "B04"]}
    x = torch.arange(4.0).reshape(1, 4, 1, 1).expand(2, 4, 2, 2)
    out = match_bands(x, ["B08", "B04", "B03", "B02"], cfg)
    assert out[0, :, 0, 0].tolist() == [3.0, 2.0, 1.0]
    with pytest.raises(ValueError, match=r"needs bands B02 that the data lacks"):
        match_bands(x[:, :3], ["B08", "B04", "B03"], cfg)
    subset = match_bands(x[:, :3], ["B08", "B04", "B03"], cfg, missing="nodata")
    assert torch.isnan(subset[:, 0]).all() and subset[0, 1:, 0, 0].tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match="unknown band names RED"):
        match_bands(x[:, :1], ["RED"], cfg)


def test_metadata_survives_save_and_load_and_is_checked_against_data(tmp_path):
    cfg = model_config()
    cfg.metadata = ADAPTER.metadata(eurosat_data(), cfg)
    assert cfg.metadata["bands"] == BANDS and cfg.metadata["wavelengths"][3] == 842 and cfg.metadata["gsd"][4] == 20
    model = create_model(cfg)
    save_pretrained(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config.metadata == cfg.metadata
    save_model(model, tmp_path / "m2")
    assert load_model(tmp_path / "m2").config.metadata["mean"] == cfg.metadata["mean"]
    # reading data for the loaded model: its bands and statistics, no options needed beyond the file layout
    data = DataConfig(modality="multispectral", options={"file_bands": EUROSAT_ORDER, "select_bands": True},
                      mean=loaded.config.metadata["mean"], std=loaded.config.metadata["std"])  # fmt: skip
    x, _ = ADAPTER.dataset(EUROSAT, data, loaded.config, train=False)[0]
    assert x.shape == (10, 32, 32)
    assert loaded.config.metadata["read_options"] == {
        "file_bands": EUROSAT_ORDER,
        "select_bands": True,
        "layout": "stack",
    }
    # what `mimsdk probe/embed/reconstruct` use: no recipe, only the model
    assert read_dataset(loaded, str(EUROSAT))[0][0].shape == (10, 32, 32)
    data.options["bands"] = list(reversed(BANDS))
    with pytest.raises(ConfigError, match=r"data.options.bands B12, B11, .* differ from the model's bands B02, B03"):
        ADAPTER.dataset(EUROSAT, data, loaded.config, train=False)


def test_config_errors_name_the_options_key():
    cfg = model_config()
    with pytest.raises(ConfigError, match="unknown key data.options.band;"):
        ADAPTER.dataset(EUROSAT, eurosat_data(band=["B02"]), cfg, train=True)
    with pytest.raises(ConfigError, match="data.options.bands: unknown band 'B13'"):
        ADAPTER.dataset(EUROSAT, eurosat_data(bands=BANDS[:9] + ["B13"]), cfg, train=True)
    with pytest.raises(ConfigError, match="data.options.layout: 'tiles' is not allowed"):
        ADAPTER.dataset(EUROSAT, eurosat_data(layout="tiles"), cfg, train=True)
    with pytest.raises(ConfigError, match="data.options.bands names 10 bands but model.in_chans is 13"):
        ADAPTER.dataset(EUROSAT, eurosat_data(), model_config(EUROSAT_ORDER), train=True)


def test_band_files_layout_resamples_coarse_bands_onto_the_fine_grid(tmp_path):
    scene = tmp_path / "S2A_patch_1"
    scene.mkdir()
    rng = np.random.default_rng(3)
    fine = rng.integers(0, 3000, size=(1, 64, 64)).astype(np.uint16)
    write_tif(scene / "S2A_patch_1_B02.tif", fine, tiled=False)
    write_tif(scene / "S2A_patch_1_B05.tif", np.full((1, 32, 32), 1234, np.uint16), tiled=False, res=20.0)
    opts = {"bands": ["B02", "B05"], "layout": "band_files"}
    data = DataConfig(
        modality="multispectral", path=str(tmp_path), strict=True, options=opts, mean=[0.0] * 2, std=[1.0] * 2
    )
    cfg = model_config(["B02", "B05"], (32, 32))
    ds = ADAPTER.dataset(tmp_path, data, cfg, train=False)
    assert ds.scenes[0].height == 64 and ds.scenes[0].spacing == 10.0
    x, _ = ds[0]
    assert torch.equal(x[0], torch.from_numpy(fine[0, 16:48, 16:48].astype(np.float32)))
    assert torch.allclose(x[1], torch.full((32, 32), 1234.0))
    (scene / "S2A_patch_1_B05.tif").unlink()
    ADAPTER._scans.clear()
    with pytest.raises(DataError, match=r"S2A_patch_1 has no file for bands B05"):
        ADAPTER.dataset(tmp_path, data, cfg, train=False)


def test_series_layout_stacks_dates(tmp_path):
    place = tmp_path / "place"
    place.mkdir()
    for t in range(3):
        write_tif(place / f"2020-0{t + 1}.tif", np.full((2, 32, 32), t + 1, np.uint16), ["B04", "B08"])
    data = DataConfig(modality="multispectral", path=str(tmp_path), strict=True,
                      options={"bands": ["B04", "B08"], "layout": "series"}, mean=[0.0] * 2, std=[1.0] * 2)  # fmt: skip
    cfg = model_config(["B04", "B08"], (2, 32, 32))
    x, _ = ADAPTER.dataset(tmp_path, data, cfg, train=False)[0]
    assert x.shape == (2, 2, 32, 32) and x[0, :, 0, 0].tolist() == [1.0, 2.0]
    cfg.patch_size = [1, 8, 8]
    assert create_model(cfg).tokenizer.grid_size == (1, 2, 4, 4)


def test_picture_has_composites_and_per_band_error():
    cfg = model_config()
    cfg.metadata = ADAPTER.metadata(eurosat_data(), cfg)
    model = create_model(cfg).eval()
    ds = ADAPTER.dataset(EUROSAT, eurosat_data(), cfg, train=False)
    x = torch.stack([ds[i][0] for i in (0, 30)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        picture = ADAPTER.picture(model.reconstruct(x, generator=torch.Generator().manual_seed(0)), cfg)
    cell = 96 + 2
    assert picture.size == (2 + (5 + 10) * cell, 14 + 2 + 2 * cell)
    assert np.asarray(picture).std() > 10  # not a blank canvas


def test_read_window_never_needs_the_whole_scene(tmp_path):
    array = np.arange(3 * 256 * 256, dtype=np.float32).reshape(3, 256, 256)
    path = write_tif(tmp_path / "big.tif", array, ["B02", "B03", "B04"])
    scenes, _ = ADAPTER.scan(
        path, DataConfig(options={"bands": ["B02", "B03", "B04"]}), model_config(["B02", "B03", "B04"])
    )
    out = read_window(scenes[0], Window(100, 50, 16, 8))
    assert out.shape == (1, 3, 8, 16) and np.array_equal(out[0], array[:, 50:58, 100:116])
