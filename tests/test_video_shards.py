"""Video shard sets (issue 15) on the real clips in ../shared/data/video: a folder and the shards made of it
train alike, the shards hold every stride-th frame as uint8 at the training resolution, a set made at another
resolution is refused by name, shards read faster than the folder, and a big folder is checked by headers."""

import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import SHARED

import mimsdk.adapters.video.scan as video_scan
import mimsdk.adapters.video.stored as video_stored
from mimsdk import DataConfig, DataError, ModelConfig, pretrain
from mimsdk.adapter import get_adapter
from mimsdk.adapters.video import probe_header, probe_video, read_frames, stored_count
from mimsdk.data import SeededDataset
from mimsdk.pretraining import measure_data
from mimsdk.sharding import shard
from mimsdk.shards import ShardReader, read_manifest

VIDEO = SHARED / "video"
AVI = VIDEO / "mmaction2_test.avi"  # 164 frames, 320×240, 25 fps
KINETICS = VIDEO / "kinetics400_arm_wrestling_demo.mp4"  # 280 frames, 340×256, 28 fps
SMALL = [  # a tiny video-tiny: 8 frames of 32², one block, decoded to a 48-pixel short side
    "model.depth=1", "model.decoder_depth=1", "model.input_size=[8,32,32]", "data.batch_size=2",
    "data.num_workers=0", "data.options.short_side=48", "data.options.clips_per_video=2",
    "train.ckpt_every=0", "train.recon_every=0", "train.log_every=1",
]  # fmt: skip
ONE_WORKER = ["data.num_workers=1", "data.batch_size=4"]
MODEL = ModelConfig(size="tiny", input_size=[8, 32, 32], patch_size=[2, 8, 8], modality="video")
DATA = DataConfig(modality="video", options={"short_side": 48, "clips_per_video": 2})


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three videos: two real clips and a second name for the first (a link), so windows come from several."""
    if not VIDEO.is_dir():
        pytest.fail(f"shared sample data missing at {VIDEO}: tests expect ../shared beside the checkout")
    root = tmp_path_factory.mktemp("clips")
    (root / "a.avi").symlink_to(AVI)
    (root / "b.mp4").symlink_to(KINETICS)
    (root / "c.avi").symlink_to(AVI)
    return root


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory) -> Path:
    return shard("video-tiny", data=folder, out=tmp_path_factory.mktemp("sets") / "clips", workers=1, overrides=SMALL)


def test_a_folder_and_its_shards_train_alike(folder, shards, tmp_path):
    runs = {
        name: pretrain("video-tiny", data=path, out=tmp_path / name, max_steps=2, overrides=SMALL)
        for name, path in (("folder", folder), ("shards", shards))
    }
    losses = {name: [row["loss"] for row in run.history] for name, run in runs.items()}
    assert len(losses["folder"]) == 2
    np.testing.assert_allclose(losses["shards"], losses["folder"], rtol=0, atol=1e-6)


def test_shards_store_every_stride_th_frame_once_per_video_as_uint8_at_the_training_resolution(folder, shards):
    manifest = read_manifest(shards)
    assert manifest.adapter == "video" and manifest.count == 3  # one sample per video, not per window
    assert manifest.preparation == {"short_side": 48, "stride": 4}
    sample = ShardReader(shards, manifest)[0]
    frames = sample["frames"]  # a.avi: 320×240 decoded to 64×48, frames 0, 4, ..., 160
    assert frames.dtype == np.uint8 and frames.shape == (stored_count(164, 4), 48, 64, 3)
    np.testing.assert_array_equal(frames, read_frames(AVI, list(range(0, 164, 4)), size=(48, 64)).numpy())
    assert (sample["fps"], sample["frame_count"], sample["source"]) == (25.0, 164, "a.avi")
    adapter = get_adapter("video")
    for train in (True, False):  # every item alike, windows and crops included; item i is video i % 3
        ours, theirs = (adapter.dataset(path, DATA, MODEL, train) for path in (folder, shards))
        assert len(ours) == len(theirs) == 6
        assert [theirs.prepared[i]["source"] for i in range(6)] == ["a.avi", "b.mp4", "c.avi"] * 2
        ours, theirs = SeededDataset(ours, seed=3), SeededDataset(theirs, seed=3)
        for index in range(6):
            assert torch.equal(ours[(1, index)][0], theirs[(1, index)][0]), (train, index)


def test_a_shard_set_made_at_another_resolution_or_stride_is_refused_by_name(shards, tmp_path):
    with pytest.raises(DataError, match=r"prepared with short_side = 48, the recipe asks for 64"):
        pretrain("video-tiny", data=shards, out=tmp_path / "run", overrides=[*SMALL, "data.options.short_side=64"])
    with pytest.raises(DataError, match=r"prepared with stride = 4, the recipe asks for 2"):
        pretrain("video-tiny", data=shards, out=tmp_path / "run", overrides=[*SMALL, "data.options.stride=2"])


def test_shards_read_faster_than_the_folder(folder, shards):
    rates = {
        name: measure_data("video-tiny", data=path, batches=8, overrides=[*SMALL, *ONE_WORKER])
        for name, path in (("folder", folder), ("shards", shards))
    }
    print(f"\nvideo read rate, one worker: folder {rates['folder']}\n  shards {rates['shards']}")
    assert rates["shards"].per_worker > 3 * rates["folder"].per_worker  # the target for video


def test_a_video_too_long_to_store_is_named_when_sharding(folder, monkeypatch):
    monkeypatch.setattr(video_stored, "MAX_STORED_BYTES", 500_000)  # a.avi stores 41×48×64×3 = 377,856 bytes
    adapter = get_adapter("video")
    files = adapter.prepared(folder, DATA, MODEL, adapter.options(DATA, MODEL), verify=True)
    assert files[0]["frames"].shape == (41, 48, 64, 3)
    with pytest.raises(DataError, match=r"b\.mp4: 70 frames at stride 4 of 64×48 would store 645,120 bytes"):
        files[1]


def eight_pixel_video(dst: Path) -> Path:
    """40 frames of 8×8 (H.264): a header that reads well, frames decord cannot convert to RGB."""
    with av.open(str(AVI)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = 8
        stream.pix_fmt = "yuv420p"
        for _, frame in zip(range(40), inp.decode(video=0)):
            out.mux(stream.encode(av.VideoFrame.from_image(frame.to_image().resize((8, 8)))))
        out.mux(stream.encode())
    return dst


def test_a_big_folder_reads_headers_only_and_a_clip_failing_later_is_skipped(tmp_path, monkeypatch):
    for path in sorted(VIDEO.glob("*.mp4")) + sorted(VIDEO.glob("*.avi")):  # headers say what decoding says
        assert probe_header(path) == probe_video(path), path.name
    root = tmp_path / "clips"
    root.mkdir()
    (root / "a.avi").symlink_to(AVI)
    tiny = eight_pixel_video(root / "tiny.mp4")
    monkeypatch.setattr(video_scan, "FULL_CHECK_UP_TO", 1)  # two files make a "big" folder here
    data = DataConfig(modality="video", options={"short_side": 48, "stride": 2})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = get_adapter("video").dataset(root, data, MODEL, train=True)
        assert [v.path.name for v in dataset.videos] == ["a.avi", "tiny.mp4"]  # the scan decoded nothing
        seeded = SeededDataset(dataset, seed=0)
        clips = [seeded[(0, i)][0] for i in range(len(seeded))]
    assert all(c.shape == (3, 8, 32, 32) for c in clips) and seeded.skipped == 1  # tiny's one window
    named = [str(w.message) for w in caught if str(tiny) in str(w.message)]
    assert len(named) == 1 and "cannot be decoded" in named[0] and "replaced by the next good sample" in named[0]
