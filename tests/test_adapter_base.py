"""The adapter base: options stored with the model and read back, core keys that do not apply, the scan policy."""

import dataclasses
import gzip
import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED

from mimsdk import ConfigError, DataConfig, DataError, ModelConfig, load_recipe
from mimsdk.adapter import CORE_KEYS, Adapter, ScanPolicy, get_adapter
from mimsdk.adapters.video import clip_span
from mimsdk.registry import ADAPTERS
from mimsdk.scan import fork_safe_threads

VIDEO = SHARED / "video"
MP4 = VIDEO / "mmaction2_test.mp4"  # 300 frames, 340×256
AIRPLANE = SHARED / "pointcloud" / "modelnet40_2048" / "airplane" / "airplane_0126.txt"


def trained(recipe: str, overrides: list[str]):
    """A recipe's config with the model's metadata computed as the trainer does before saving the model."""
    cfg = load_recipe(recipe, overrides)
    adapter = get_adapter(cfg.data.modality)
    cfg.model.metadata = {**adapter.metadata(cfg.data, cfg.model), **cfg.model.metadata}
    return adapter, cfg


# -- options stored with the model ---------------------------------------------------------


def test_a_video_model_trained_at_stride_2_reads_clips_at_stride_2():
    if not VIDEO.is_dir():
        pytest.fail(f"shared sample data missing at {VIDEO}: tests expect ../shared beside the checkout")
    adapter, cfg = trained("video-tiny", ["data.options.stride=2", "model.input_size=[8,32,32]"])
    stored = adapter.data_config(cfg.model)  # what embed/probe/reconstruct read with: the model alone, no recipe
    assert stored.options["stride"] == 2
    unstored = dataclasses.replace(cfg.model, metadata={})
    stride_2 = DataConfig(modality="video", options={"stride": 2})
    embedded = adapter.dataset(VIDEO, stored, cfg.model, train=False)
    explicit = get_adapter("video").dataset(VIDEO, stride_2, unstored, train=False)
    assert len(embedded) == len(explicit) == 6
    assert [embedded.indices(i) for i in range(6)] == [explicit.indices(i) for i in range(6)]
    long_enough = [i for i, v in enumerate(embedded.videos) if v.frames >= clip_span(8, 2)]
    assert len(long_enough) == 6 and all(np.all(np.diff(embedded.indices(i)) == 2) for i in long_enough)
    # the frames themselves: the same tensor as a dataset built with stride 2 explicitly
    one = adapter.dataset(MP4, stored, cfg.model, train=False)
    torch.testing.assert_close(one[0][0], adapter.dataset(MP4, stride_2, unstored, train=False)[0][0])
    # a model that stored nothing reads at the default stride 4: the stored stride is what made the difference
    plain = adapter.dataset(MP4, DataConfig(modality="video"), unstored, train=False)
    assert np.all(np.diff(plain.indices(0)) == 4) and np.all(np.diff(one.indices(0)) == 2)


def test_a_pointcloud_model_reads_its_up_axis_back():
    adapter, cfg = trained("pointcloud-tiny", ["data.options.up_axis=z", "data.options.rotate=true"])
    assert cfg.model.metadata["options"] == {"up_axis": "z"} and cfg.model.metadata["up_axis"] == "z"
    assert adapter.data_config(cfg.model).options == {"up_axis": "z"}
    assert adapter.trained_options(cfg.model).up_axis == "z"  # what pictures turn about
    # continuing from the model with a recipe that does not name the axis: the stored one, under the recipe's keys
    data = DataConfig(modality="pointcloud", options={"rotate": True})
    ds = adapter.dataset(AIRPLANE, data, cfg.model, train=True)
    assert ds.opts.up_axis == "z" and ds.opts.rotate
    # the recipe's own value wins over the stored one
    data.options["up_axis"] = "x"
    assert adapter.dataset(AIRPLANE, data, cfg.model, train=True).opts.up_axis == "x"


def test_stored_options_are_the_declared_ones_for_every_adapter():
    for name in ADAPTERS.names():
        adapter = get_adapter(name)
        assert isinstance(adapter, Adapter) and adapter.name == name
        if adapter.stored:
            fields = adapter.Options.__dataclass_fields__
            assert set(adapter.stored) <= set(fields), name
        model = ModelConfig(metadata={"options": {k: "stored" for k in adapter.stored}})
        assert adapter.stored_options(model) == {k: "stored" for k in adapter.stored}
        assert adapter.data_config(model).options == {k: "stored" for k in adapter.stored}


def test_an_adapter_without_options_refuses_them():
    with pytest.raises(ConfigError, match=r"data\.options: the images adapter takes no options, got \['dpi'\]"):
        get_adapter("images").options(DataConfig(options={"dpi": 100}), ModelConfig())


# -- core keys that do not apply ------------------------------------------------------------


def test_hflip_under_the_pointcloud_adapter_is_an_error_naming_the_key():
    cfg = load_recipe("pointcloud-tiny", ["data.hflip=true"])
    adapter = get_adapter("pointcloud")
    with pytest.raises(ConfigError, match=r"data\.hflip does not apply to the pointcloud adapter"):
        adapter.dataset(AIRPLANE, cfg.data, cfg.model, train=True)
    with pytest.raises(ConfigError, match=r"data\.hflip does not apply to the pointcloud adapter"):
        adapter.metadata(cfg.data, cfg.model)


@pytest.mark.parametrize("key", CORE_KEYS)
def test_every_adapter_refuses_the_core_keys_it_does_not_use(key):
    value = {"crop_scale": [0.5, 1.0], "hflip": False, "mean": [0.5], "std": [0.5]}[key]
    for name in ADAPTERS.names():
        adapter = get_adapter(name)
        data = DataConfig(modality=name, **{key: value})
        if key in adapter.uses:
            adapter.check_core_keys(data)
        else:
            with pytest.raises(ConfigError, match=rf"data\.{key} does not apply to the {name} adapter \(it uses: "):
                adapter.check_core_keys(data)
        adapter.check_core_keys(DataConfig(modality=name))  # unset keys are the adapter's defaults


# -- the scan policy --------------------------------------------------------------------------


def read_all(path: Path) -> int:
    """Bytes of a gzip file once decompressed; DataError naming it if it cannot be."""
    try:
        with gzip.open(path) as f:
            return len(f.read())
    except (EOFError, OSError) as err:
        raise DataError(f"{path}: truncated or not gzip ({err})") from err


class Archives(Adapter):
    """The smallest adapter: gzip files, one item each (its size)."""

    name = "archives"
    policy = ScanPolicy(unit="archives")

    def build(self, path, data, model, opts, train):
        def scan():
            files = self.policy.walk(path, "gzip files (.gz)", lambda p: p.suffix == ".gz")
            return self.policy.check(path, files, read_all, data.strict)

        return self.remember(path, data, None, scan)


def archives(tmp_path: Path) -> Path:
    root = tmp_path / "archives"
    root.mkdir()
    whole = gzip.compress(bytes(range(256)) * 400)
    for name in ("a.gz", "c.gz", "e.gz"):
        (root / name).write_bytes(whole)
    (root / "b.gz").write_bytes(whole[: len(whole) // 2])  # a real truncated file
    (root / "d.gz").write_bytes(b"plain text, not gzip")
    (root / "notes.txt").write_text("left out by the walk")
    (root / ".hidden.gz").write_bytes(b"skipped: hidden")
    return root


def recorded(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in caught]


def test_scan_warns_once_per_bad_file_and_once_per_scan(tmp_path):
    root = archives(tmp_path)
    adapter = Archives()
    found, messages = recorded(lambda: adapter.dataset(root, DataConfig(), ModelConfig(), train=True))
    assert [p.name for p, _ in found] == ["a.gz", "c.gz", "e.gz"] and {n for _, n in found} == {256 * 400}
    for name in ("b.gz", "d.gz"):
        named = [m for m in messages if name in m]
        assert len(named) == 1 and named[0].startswith(f"skipping {root / name}: truncated or not gzip"), named
    assert messages[-1] == f"skipped 2 of 5 archives in {root}; using 3"
    assert len(messages) == 3  # notes.txt and the hidden file are not archives to report
    # the evaluation view of the same folder: the cached scan, no second round of warnings
    again, messages = recorded(lambda: adapter.dataset(root, DataConfig(), ModelConfig(), train=False))
    assert again is found and messages == []


def test_strict_scan_stops_at_the_first_bad_file(tmp_path):
    root = archives(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match=r"b\.gz: truncated or not gzip .*\(strict mode; 2 unusable archives in "):
            Archives().dataset(root, DataConfig(strict=True), ModelConfig(), train=True)
    assert caught == []  # an error instead of the warnings, not both


def test_scan_errors_for_nothing_usable(tmp_path):
    root = archives(tmp_path)
    for name in ("a.gz", "c.gz", "e.gz"):
        (root / name).unlink()
    with pytest.raises(DataError, match=r"archives holds no usable archives \(2 unusable\)"):
        recorded(lambda: Archives().dataset(root, DataConfig(), ModelConfig(), train=True))
    with pytest.raises(DataError, match=r"data path .*nowhere does not exist"):
        Archives().dataset(tmp_path / "nowhere", DataConfig(), ModelConfig(), train=True)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no archives here")
    with pytest.raises(DataError, match=r"data folder .*empty holds no gzip files \(\.gz\)"):
        Archives().dataset(tmp_path / "empty", DataConfig(), ModelConfig(), train=True)


def test_one_problem_shared_by_several_units_is_one_warning(tmp_path):
    problem = "x.npz[train_images]: cannot be read (all 2 images of x.npz[train_images])"
    good, messages = recorded(lambda: ScanPolicy(unit="items").settle(tmp_path, [None, problem, problem], False))
    assert good == [0] and messages == [f"skipping {problem}", f"skipped 2 of 3 items in {tmp_path}; using 1"]


def test_a_process_forked_after_a_threaded_scan_can_read_geotiffs():
    """GDAL closes a thread's PROJ database in the thread's C-level destructors, holding SQLite's lock, after
    ``join`` has returned; a process forked then (a DataLoader or shard worker) hung at its first ``rasterio.open``.
    With a plain ThreadPoolExecutor about one fork in four hung here; the scan's pool waits for its threads."""
    rasterio = pytest.importorskip("rasterio")
    scenes = sorted((SHARED / "multispectral" / "hydro_s2_patches").glob("*.tif"))
    if not scenes:
        pytest.fail("shared sample data missing: tests expect ../shared beside the checkout")

    def crs(path: Path) -> str:
        with rasterio.open(path) as dataset:
            return str(dataset.crs)

    hung = 0
    for _ in range(20):
        with fork_safe_threads(2) as pool:
            expected = list(pool.map(crs, scenes))
        child = os.fork()
        if child == 0:  # the child: read a scene (its CRS needs PROJ's database) or be stopped by the alarm
            signal.alarm(10)
            os._exit(0 if crs(scenes[0]) == expected[0] else 1)
        hung += os.waitpid(child, 0)[1] != 0
    assert hung == 0, f"{hung} of 20 processes forked after a threaded scan could not read a GeoTIFF"
