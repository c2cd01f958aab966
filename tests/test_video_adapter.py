"""The video adapter on the real clips in ../shared/data/video (mp4 and avi) and on files written with PyAV."""

import dataclasses
import math
import shutil
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import SHARED
from decord import VideoReader, cpu
from PIL import Image
from torchvision import tv_tensors

from mimsdk import ConfigError, DataConfig, DataError, ModelConfig, create_model, pretrain
from mimsdk.adapters.video import VideoAdapter, read_frames, save_gif, scan_videos, stored_count, video_options
from mimsdk.data import SeededDataset

VIDEO = SHARED / "video"
MP4 = VIDEO / "mmaction2_test.mp4"  # 300 frames, 340×256, H.264
AVI = VIDEO / "mmaction2_test.avi"  # 164 frames, 320×240, MPEG-4 with mp3 audio
NTU = VIDEO / "ntu_S001C001P001R001A001_rgb.avi"  # 103 frames, 1920×1080, H.264 in AVI
MODEL = ModelConfig(size="tiny", input_size=[8, 32, 32], patch_size=[2, 8, 8], modality="video")


@pytest.fixture(scope="module")
def video() -> Path:
    if not VIDEO.is_dir():
        pytest.fail(f"shared sample data missing at {VIDEO}: tests expect ../shared beside the checkout")
    return VIDEO


def data(**options) -> DataConfig:
    return DataConfig(modality="video", options={"short_side": 64, **options})


def caught_messages(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in caught]


def decode_all_with_pyav(path: Path, last: int) -> list[np.ndarray]:
    """Frames 0..last decoded one after another by PyAV (FFmpeg without decord's seeking)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(last + 1), container.decode(video=0))]


def write_mp4(path: Path, frames: int, size: tuple[int, int] = (48, 64)) -> Path:
    rng = np.random.default_rng(frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


# -- sampling -------------------------------------------------------------------


@pytest.mark.parametrize("path", [MP4, AVI], ids=["mp4", "avi"])
def test_evaluation_clip_is_centred_with_the_stride_and_frames_are_exact(video, path):
    ds = VideoAdapter().dataset(path, data(stride=4, short_side=None), MODEL, train=False)
    available = len(VideoReader(str(path), ctx=cpu(0)))
    indices = ds.indices(0)
    start = (stored_count(available, 4) - 8) // 2 * 4  # centred on the stored frames 0, 4, 8, ...
    assert indices == list(range(start, start + 29, 4))  # 8 frames, 4 apart, centred
    clip, label = ds[0]
    assert clip.shape == (3, 8, 32, 32) and clip.dtype == torch.float32 and label == -1
    # The decoded frames are those indices exactly: decord directly, and PyAV decoding every frame in order.
    ours = read_frames(path, indices).numpy()
    direct = VideoReader(str(path), ctx=cpu(0)).get_batch(indices).asnumpy()
    sequential = decode_all_with_pyav(path, indices[-1])
    np.testing.assert_array_equal(ours, direct)
    np.testing.assert_array_equal(ours, np.stack([sequential[i] for i in indices]))
    assert not np.array_equal(ours[0], sequential[indices[0] + 1])  # a frame off would be caught
    # The tensor is those frames through the evaluation transform (resize, centre crop, normalise).
    expected = ds.transform(tv_tensors.Video(torch.from_numpy(ours).permute(0, 3, 1, 2))).permute(1, 0, 2, 3)
    torch.testing.assert_close(clip, expected.as_subclass(torch.Tensor))


def test_training_windows_are_random_in_range_and_seeded(video):
    ds = VideoAdapter().dataset(MP4, data(stride=4, clips_per_video=3), MODEL, train=True)
    assert len(ds) == 3
    starts = set()
    for seed in range(12):
        torch.manual_seed(seed)
        indices = ds.indices(seed % 3)
        assert np.all(np.diff(indices) == 4) and 0 <= indices[0] and indices[-1] < 300
        starts.add(indices[0])
    assert len(starts) > 6  # temporal jitter
    seeded = SeededDataset(ds, seed=0)
    a, b, c = seeded[(0, 1)][0], seeded[(0, 1)][0], seeded[(1, 1)][0]
    assert torch.equal(a, b) and not torch.equal(a, c)  # same (epoch, index) same clip and crop: exact resume


def test_evaluation_clips_per_video_are_evenly_spaced(video):
    ds = VideoAdapter().dataset(AVI, data(stride=2, clips_per_video=3), MODEL, train=False)
    room = stored_count(164, 2) - 8  # in stored frames, 2 source frames apart
    assert [ds.indices(i)[0] for i in range(3)] == [0, 2 * round(room / 2), 2 * room]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("loop", [0, 16, 32, 48, 64, 80, 96, 0]), ("pad", [0, 16, 32, 48, 64, 80, 96, 96])],  # frames at the stride
)
def test_short_clip_policy_is_applied_and_named_once(video, policy, expected):
    adapter = VideoAdapter()
    cfg = data(stride=16, short_clip=policy)  # 8 frames at stride 16 span 113 > 103
    (train, view), messages = caught_messages(
        lambda: (adapter.dataset(NTU, cfg, MODEL, train=True), adapter.dataset(NTU, cfg, MODEL, train=False))
    )
    named = [m for m in messages if NTU.name in m]
    assert len(named) == 1  # one warning though two views were built
    assert "103 frames available, 113 needed" in named[0] and f"short_clip={policy}" in named[0]
    assert view.indices(0) == expected
    assert view[0][0].shape == (3, 8, 32, 32)
    torch.manual_seed(3)
    indices = train.indices(0)
    assert all(0 <= i < 103 for i in indices)
    if policy == "pad":
        assert indices == expected  # padding has a single window


# -- masking through the model -------------------------------------------------------


def real_batch(model_config: ModelConfig, count: int = 4) -> torch.Tensor:
    ds = VideoAdapter().dataset(VIDEO, data(stride=4), model_config, train=False)
    return torch.stack([ds[i][0] for i in range(count)])


def test_tube_mask_is_identical_across_time_on_real_clips(video):
    model = create_model(MODEL, depth=1, decoder_dim=32, decoder_depth=1, decoder_heads=2, masker="tube",
                         mask_ratio=0.9)  # fmt: skip
    x = real_batch(model.config)
    out = model(x, generator=torch.Generator().manual_seed(0))
    grid = out.mask.view(4, 4, 4, 4)  # B × T' × H' × W'
    assert torch.equal(grid, grid[:, :1].expand_as(grid))
    assert torch.all(out.mask.sum(1) == 4 * (16 - round(16 * 0.1)))  # T'·round(H'W'(1−r)) kept
    assert not torch.equal(grid[0], grid[1])  # one plane per clip, not one for the batch
    recon = model.reconstruct(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(recon["mask"], recon["mask"][:, :, :1].expand_as(recon["mask"]))  # every frame alike


def test_decoder_masking_cuts_decoder_tokens_and_the_loss_counts_only_those(video):
    config = dataclasses.replace(MODEL, depth=1, input_size=[8, 64, 64], masker="tube", mask_ratio=0.9,
                                 decoder_dim=32, decoder_depth=1, decoder_heads=2)  # fmt: skip
    x = real_batch(config, count=2)
    seen = {}
    for fraction in (1.0, 0.5):
        model = create_model(config, decoder_fraction=fraction, decoder_masking="running_cell")
        handle = model.decoder.blocks[0].register_forward_pre_hook(
            lambda m, a, f=fraction: seen.update({f: a[0].shape[1]})
        )
        torch.manual_seed(0)
        out = model(x, generator=torch.Generator().manual_seed(1))
        handle.remove()
    visible, masked = 4 * round(64 * 0.1), 256 - 4 * round(64 * 0.1)  # 24 visible, 232 masked tubelets
    assert seen[1.0] == 1 + 256
    assert seen[0.5] == 1 + visible + round(masked * 0.5)  # class token, visible, half the masked
    assert torch.all(out.decoded.sum(1) == round(masked * 0.5))
    assert torch.all(out.decoded <= out.mask)  # only masked tubelets are predicted
    patches = model.tokenizer.patchify(x)
    error = ((out.pred - model.target(patches)) ** 2).mean(-1)  # B×L, pred is 0 where not decoded
    expected = (error * out.decoded).sum() / out.decoded.sum()
    torch.testing.assert_close(out.loss, expected)
    assert not torch.isclose(out.loss, (error * out.mask).sum() / out.mask.sum())  # not all masked ones


# -- bad input -----------------------------------------------------------------------


def broken_folder(tmp_path: Path, video: Path) -> Path:
    root = tmp_path / "clips"
    root.mkdir()
    shutil.copy(video / "mmaction2_test.avi", root / "good.avi")
    shutil.copy(video / "kinetics400_arm_wrestling_demo.mp4", root / "good.mp4")
    (root / "empty.mp4").write_bytes(b"")
    header = bytearray((video / "mmaction2_test.mp4").read_bytes())
    header[:64] = bytes(64)  # the ftyp box and the start of the next are gone
    (root / "garbled.mp4").write_bytes(bytes(header))
    write_audio_only(root / "audio.mp4")
    (root / "notes.mp4").write_text("not a video, renamed")
    write_mp4(root / "short.mp4", frames=5)
    (root / "README.txt").write_text("not a video by extension: left out without a warning")
    return root


def test_bad_files_are_named_once_each_and_skipped(tmp_path, video):
    root = broken_folder(tmp_path, video)
    options = video_options(data(stride=4, short_clip="error"))
    scan, messages = caught_messages(lambda: scan_videos(root, 8, options))
    assert sorted(v.path.name for v in scan.videos) == ["good.avi", "good.mp4"]
    reasons = {
        "empty.mp4": "empty file (0 bytes)",
        "garbled.mp4": "corrupt or unsupported header",
        "audio.mp4": "no video stream",
        "notes.mp4": "corrupt or unsupported header",
        "short.mp4": "5 frames, fewer than the 29 a clip of 8 frames at stride 4 needs (data.options.short_clip=error)",
    }
    for name, reason in reasons.items():
        named = [m for m in messages if f"{name}:" in m]
        assert len(named) == 1 and reason in named[0], (name, named)
    assert any("skipped 5 of 7 videos" in m for m in messages)
    assert not any("README.txt" in m for m in messages)


def test_strict_mode_stops_at_the_first_bad_file(tmp_path, video):
    root = broken_folder(tmp_path, video)
    with pytest.raises(DataError, match=r"audio\.mp4: no video stream.*strict mode; 5 unusable"):
        scan_videos(root, 8, video_options(data(short_clip="error")), strict=True)


def test_a_short_clip_under_loop_is_kept_and_named(tmp_path, video):
    path = write_mp4(tmp_path / "short.mp4", frames=5)
    ds, messages = caught_messages(lambda: VideoAdapter().dataset(path, data(stride=4), MODEL, train=True))
    assert [m for m in messages if "short.mp4" in m] == [
        f"{path}: 5 frames available, 29 needed for 8 frames at stride 4; looping from the start "
        "(data.options.short_clip=loop)"
    ]
    assert ds[0][0].shape == (3, 8, 32, 32)


def test_training_goes_on_over_the_usable_rest(tmp_path, video):
    root = broken_folder(tmp_path, video)
    result, messages = caught_messages(
        lambda: pretrain(
            "video-tiny",
            data=root,
            out=tmp_path / "run",
            max_steps=1,
            batch_size=2,
            num_workers=0,
            depth=1,
            decoder_depth=1,
            input_size=[4, 32, 32],
            ckpt_every=0,
            recon_every=0,
        )  # fmt: skip
    )
    assert sum("garbled.mp4" in m for m in messages) == 1 and len(result.history) == 1


def test_empty_folder_and_missing_path_fail_before_training(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no videos here")
    with pytest.raises(DataError, match=r"empty holds no video files \(\.mp4, \.avi"):
        pretrain("video-tiny", data=tmp_path / "empty", out=tmp_path / "run")
    with pytest.raises(DataError, match=r"data path .*nowhere does not exist"):
        pretrain("video-tiny", data=tmp_path / "nowhere", out=tmp_path / "run")


def test_config_errors_name_the_key(tmp_path, video):
    adapter = VideoAdapter()
    with pytest.raises(ConfigError, match=r"data\.options\.stride: must be at least 1, got 0"):
        adapter.dataset(MP4, data(stride=0), MODEL, train=True)
    with pytest.raises(ConfigError, match=r"data\.options\.short_clip: 'wrap' is not allowed; expected one of loop"):
        adapter.dataset(MP4, data(short_clip="wrap"), MODEL, train=True)
    with pytest.raises(ConfigError, match=r"unknown key data\.options\.frame; allowed keys in data\.options: stride"):
        adapter.dataset(MP4, data(frame=8), MODEL, train=True)
    with pytest.raises(ConfigError, match=r"data\.options\.threads: expected an integer, got 'two'"):
        pretrain("video-tiny", data=MP4, out=tmp_path / "run", overrides=["data.options.threads=two"])
    with pytest.raises(DataError, match=r"model\.input_size \[32, 32\] is not 3D"):
        adapter.dataset(MP4, data(), ModelConfig(input_size=[32, 32], patch_size=8), train=True)


def test_labels_from_the_shared_csv(tmp_path, video):
    # The shared labels.csv names its path column "file", which mimsdk reads as well as "path".
    cfg = DataConfig(modality="video", labels=str(video / "labels.csv"), options={"short_side": 64})
    ds = VideoAdapter().dataset(video, cfg, MODEL, train=False)
    assert len(ds.classes) == 6 and len(ds) == 6
    names = {info.path.name: ds.classes[label] for info, label in zip(ds.videos, ds.labels)}
    assert names["kinetics400_arm_wrestling_demo.mp4"] == "arm wrestling"
    assert names["ntu_S001C001P001R001A001_rgb.avi"] == "drink water"


# -- pictures and the whole run --------------------------------------------------------


def test_picture_strip_and_gif(tmp_path, video):
    adapter = VideoAdapter()
    config = dataclasses.replace(MODEL, metadata=adapter.metadata(data(), MODEL))
    model = create_model(config, depth=1, decoder_dim=32, decoder_depth=1, decoder_heads=2, mask_ratio=0.9,
                         masker="tube")  # fmt: skip
    x = real_batch(config, count=2)
    with torch.no_grad():
        recon = model.reconstruct(x, generator=torch.Generator().manual_seed(0))
    picture = adapter.picture(recon, model.config)
    cell = 96 + 2  # 32-pixel frames enlarged ×3, plus padding
    assert picture.width == 2 + 5 * cell  # a label column and one frame per tubelet step (8 frames / 2)
    assert picture.height == 14 + 2 + 2 * 3 * cell  # two clips × original, masked, reconstruction
    pixels = np.asarray(picture)
    first = pixels[16 : 16 + 96, 2 + cell : 2 + cell + 96]  # clip 0, original, frame 0
    frame = ((x[0, :, 0] * torch.tensor([0.229, 0.224, 0.225])[:, None, None]
              + torch.tensor([0.485, 0.456, 0.406])[:, None, None]).clamp(0, 1) * 255).round()  # fmt: skip
    np.testing.assert_allclose(first[::3, ::3].astype(float), frame.permute(1, 2, 0).numpy(), atol=1)
    path = save_gif(recon, model.config, tmp_path / "recon.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 8 and gif.size == (2 + 3 * cell, 14 + 2 + 2 * cell)


def test_pretraining_runs_end_to_end_on_the_shared_clips(tmp_path, video):
    out = tmp_path / "run"
    result = pretrain("video-tiny", data=video, out=out, max_steps=3, num_workers=0, batch_size=4, log_every=1,
                      depth=2, input_size=[8, 32, 32], patch_size=[2, 8, 8],
                      overrides=["data.options.clips_per_video=1", "data.options.short_side=48"])  # fmt: skip
    assert len(result.history) == 3 and all(math.isfinite(r["loss"]) for r in result.history)
    assert (out / "checkpoint.pt").is_file() and (out / "model" / "model.safetensors").is_file()
    with Image.open(out / "recon" / "latest.png") as picture:
        assert picture.height == 14 + 2 + 4 * 3 * 98  # four clips × three rows of 32² frames shown at 96²
    assert result.model.config.metadata["stride"] == 4 and result.model.config.metadata["frames"] == 8


def test_scans_are_cached_by_path_size_and_mtime(tmp_path, video, monkeypatch):
    import mimsdk.adapters.video.scan as scan

    monkeypatch.setenv("MIMSDK_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "clips"
    root.mkdir()
    names = ("mmaction2_test.avi", "mmaction2_test.mp4")
    first, second = (Path(shutil.copy(VIDEO / name, root / name)) for name in names)
    probed = []
    probe = scan.probe_video
    monkeypatch.setattr(scan, "probe_video", lambda path: probed.append(path.name) or probe(path))
    options = video_options(data(stride=2))
    before = scan_videos(root, 8, options)
    assert sorted(probed) == [first.name, second.name]
    probed.clear()
    again = scan_videos(root, 8, options)  # a new run: nothing changed, nothing decoded; the same facts
    assert probed == [] and again.videos == before.videos
    second.write_bytes(second.read_bytes()[: second.stat().st_size // 2])  # changed (and truncated)
    with pytest.warns(UserWarning, match=f"{second.name}"):
        after = scan_videos(root, 8, options)
    assert probed == [second.name] and [v.path for v in after.videos] == [first]
