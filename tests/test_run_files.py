"""What mimsdk writes to disk: a full disk named as such, the user's permissions, no leftovers from killed writes.

A full disk is made for real where the sandbox allows it: a 1 MiB tmpfs mounted in a private mount namespace
(``unshare --user --map-root-user --mount``), invisible to any other process. A kill is a real SIGKILL of a
subprocess, sent from inside its checkpoint write.
"""

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from mimsdk import create_model, load_model, pretrain, save_model
from mimsdk.atomic import WriteError, _probe, atomic_dir, atomic_write, is_temporary, remove_stale
from mimsdk.checkpoint import CHECKPOINT, read_checkpoint, remove_stale_writes, save_checkpoint
from mimsdk.config import load_recipe
from mimsdk.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(size="tiny", depth=2, input_size=[32, 32], patch_size=4, decoder_dim=64, decoder_depth=1, decoder_heads=2)
TINY = {
    "name": "tiny-test",
    "model": dict(size="tiny", depth=1, input_size=[32, 32], patch_size=8, decoder_dim=32, decoder_depth=1,
                  decoder_heads=2),
    "data": dict(batch_size=16, num_workers=0),
    "train": dict(max_steps=2, warmup_steps=1, lr=1e-3, ckpt_every=1, recon_every=2, log_every=1),
}  # fmt: skip


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def run_script(script: str, *args: str, wrap: list[str] | None = None) -> subprocess.CompletedProcess:
    code = textwrap.dedent(script)
    return subprocess.run(
        [*(wrap or []), sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )


# -- a full disk ------------------------------------------------------------------------------------------

FILL = """
    import json, sys, torch
    from pathlib import Path
    from mimsdk import create_model, save_model
    from mimsdk.atomic import WriteError
    from mimsdk.checkpoint import read_checkpoint, save_checkpoint
    from mimsdk.config import load_recipe

    run, out = Path(sys.argv[1]), {}
    recipe = load_recipe("quickstart")
    save_checkpoint(run, recipe, 1, [], model={"w": torch.zeros(10)})
    try:  # 4 MB on a 1 MiB disk: torch.save alone would say "unexpected pos"
        save_checkpoint(run, recipe, 2, [], model={"w": torch.zeros(1_000_000)})
    except WriteError as err:
        out["checkpoint"] = [err.errno, err.filename, str(err)]
    try:
        save_model(create_model(size="tiny", depth=2, input_size=[32, 32], patch_size=4, decoder_dim=64,
                                decoder_depth=1, decoder_heads=2), run / "model")
    except WriteError as err:
        out["model"] = [err.errno, err.filename, str(err)]
    out["step"] = read_checkpoint(run)["step"]
    out["files"] = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    print(json.dumps(out))
"""


def test_a_full_disk_is_named_with_the_file_and_the_last_checkpoint_stays_whole(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare: cannot mount a small tmpfs to fill")
    wrap = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
            'mount -t tmpfs -o size=1m tmpfs "$1" && shift && exec "$@"', "sh", str(tmp_path)]  # fmt: skip
    probe = subprocess.run([*wrap, "true"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {probe.stderr.strip()}")
    done = run_script(FILL, str(tmp_path), wrap=wrap)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    full = "the disk is full (No space left on device, ENOSPC)"
    assert out["checkpoint"] == [
        errno.ENOSPC,
        f"{tmp_path}/checkpoint.pt",
        f"cannot write {tmp_path}/checkpoint.pt: {full}; free space on that file system, or write somewhere else, "
        "and try again; checkpoint.pt was left as it was",
    ]
    assert out["model"][:2] == [errno.ENOSPC, f"{tmp_path}/model/model.safetensors"]  # safetensors' own error
    assert out["model"][2].startswith(f"cannot write {tmp_path}/model/model.safetensors: {full}")
    assert out["step"] == 1  # the earlier checkpoint is whole
    assert out["files"] == ["checkpoint.pt", "model"]  # no temporary left behind
    assert not any(tmp_path.iterdir())  # the tmpfs was private to the subprocess


def test_os_errors_of_a_write_are_one_error_naming_the_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")

    def no_space(p: str) -> None:
        Path(p).write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(WriteError, match=rf"cannot write {target}: the disk is full .*left as it was") as err:
        atomic_write(target, no_space)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)

    def rust_error(p: str) -> None:  # how safetensors reports it
        raise SafetensorError("Error while serializing: I/O error: Disk quota exceeded (os error 122)")

    with pytest.raises(WriteError, match=rf"cannot write {target}: the disk quota is used up"):
        atomic_write(target, rust_error)

    def unwritable(p: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", p)

    with pytest.raises(WriteError, match=rf"cannot write {target}: Permission denied \(EACCES\)"):
        atomic_write(target, unwritable)

    def bug(p: str) -> None:  # not the disk's fault, with room on the disk: passed on as it is
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    with pytest.raises(RuntimeError, match="unexpected pos") as err:
        atomic_write(target, bug)
    assert not isinstance(err.value, OSError)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_the_probe_that_tells_a_full_disk_finds_enospc_on_dev_full():
    found = _probe(Path("/dev/full"))
    assert found is not None and found.errno == errno.ENOSPC


def test_a_full_disk_inside_a_folder_write_names_the_folder(tmp_path):
    target = tmp_path / "export"
    with pytest.raises(WriteError, match=rf"cannot write {target}: the disk is full"):
        with atomic_dir(target) as staging:
            (staging / "a").write_text("x")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(FileNotFoundError):  # not the disk's: passed on as it is
        with atomic_dir(target):
            raise FileNotFoundError(errno.ENOENT, "No such file", "elsewhere")
    assert not target.exists() and leftovers(tmp_path) == []


# -- permissions ------------------------------------------------------------------------------------------


@pytest.fixture
def umask():
    def set_umask(value: int) -> None:
        os.umask(value)

    before = os.umask(0o022)
    yield set_umask
    os.umask(before)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_files_and_folders_get_the_umasks_permissions(tmp_path, umask, mask):
    umask(mask)
    file = atomic_write(tmp_path / "a.txt", lambda p: Path(p).write_text("x"))
    with atomic_dir(tmp_path / "folder") as staging:
        (staging / "inside.txt").write_text("x")
    saved = save_model(create_model(**SMALL), tmp_path / "new" / "model")
    assert mode(file) == 0o666 & ~mask
    assert mode(tmp_path / "folder") == 0o777 & ~mask
    assert mode(tmp_path / "folder" / "inside.txt") == 0o666 & ~mask
    assert {p.name: mode(p) for p in saved.iterdir()} == {
        "config.json": 0o666 & ~mask,
        "model.safetensors": 0o666 & ~mask,
    }
    assert mode(saved) == mode(saved.parent) == 0o777 & ~mask


def test_a_run_directory_is_written_with_the_users_permissions(tmp_path, umask):
    umask(0o022)
    run = pretrain(TINY, out=tmp_path / "run").run_dir
    written = ["recipe.yaml", CHECKPOINT, "metrics.csv", "model/config.json", "model/model.safetensors",
               "recon/latest.png"]  # fmt: skip
    assert {name: oct(mode(run / name)) for name in written} == {name: "0o644" for name in written}
    folders = ("", "model", "recon")
    assert {name: oct(mode(run / name)) for name in folders} == {name: "0o755" for name in folders}


# -- leftovers of killed writes ---------------------------------------------------------------------------

KILL = """
    import os, signal, sys, torch
    from pathlib import Path
    import mimsdk.checkpoint as checkpoint
    from mimsdk.config import load_recipe

    def killed_while_writing(obj, path):  # half a checkpoint on disk, then kill -9
        with open(path, "wb") as f:
            f.write(b"PK" + b"\\0" * 300_000)
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.torch.save = killed_while_writing
    checkpoint.save_checkpoint(Path(sys.argv[1]), load_recipe("quickstart"), 4, [], model={"w": torch.ones(3)})
"""

# safetensors' save_file writes its own temporary (.tmpXXXXXX) and renames it over the file it was given:
# a watcher kills the process once that temporary holds data (a write that finishes first is tried again).
KILL_SAFETENSORS = """
    import os, re, signal, sys, threading, time, torch
    from pathlib import Path
    from safetensors.torch import save_file
    from mimsdk.atomic import atomic_write

    folder, state = Path(sys.argv[1]), {"w": torch.zeros(25_000_000)}

    def watch():
        while True:
            for p in folder.iterdir():
                if re.match(r"^\\.tmp[A-Za-z0-9]{6}$", p.name) and p.stat().st_size > 0:
                    os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.0002)

    threading.Thread(target=watch, daemon=True).start()
    for _ in range(20):
        atomic_write(folder / "model.safetensors", lambda p: save_file(state, p))
"""


def test_killed_writes_leave_temporaries_that_remove_stale_writes_removes_alone(tmp_path):
    run = tmp_path / "run"
    save_checkpoint(run, load_recipe("quickstart"), 3, [], model={"w": torch.zeros(3)})
    killed = run_script(KILL, str(run))
    assert killed.returncode == -9, killed.stderr
    (stale,) = run.glob(".checkpoint.pt.*.tmp")
    assert stale.stat().st_size > 300_000 and read_checkpoint(run)["step"] == 3

    (run / "model").mkdir()
    save_model(create_model(**SMALL), run / "model")
    killed = run_script(KILL_SAFETENSORS, str(run / "model"))
    assert killed.returncode == -9, killed.stderr
    (ours,) = (run / "model").glob(".model.safetensors.*.tmp")  # empty: safetensors wrote beside it
    (theirs,) = (run / "model").glob(".tmp*")
    assert theirs.stat().st_size > 0

    # the same leftovers in the picture folder, and what must stay: anything not of these namings
    (run / "recon").mkdir()
    (run / "tb").mkdir()
    made = [run / "recon" / ".latest.png.0123abcd.tmp"]
    partial = run / "model" / ".model.abcdefgh.partial"
    kept = [
        run / "notes.tmp",
        run / ".checkpoint.pt.notes",
        run / ".hidden",
        run / ".tmpAbc123",  # safetensors' naming, outside the model folder: not known to be ours
        run / ".checkpoint.pt.toolongname.tmp",
        run / ".checkpoint.pt.ABCDEFGH.tmp",  # upper case: never one of ours
        run / "tb" / ".events.abcdefgh.tmp",  # TensorBoard's folder is not ours
    ]
    for path in [*made, *kept]:
        path.write_text("x")
    partial.mkdir()
    (partial / "config.json").write_text("{}")

    removed = remove_stale_writes(run)
    assert sorted(removed) == sorted([stale, ours, theirs, *made, partial])
    assert all(p.exists() for p in kept) and not any(p.exists() for p in removed)
    assert read_checkpoint(run)["step"] == 3 and (run / CHECKPOINT).is_file()
    assert sorted(p.name for p in (run / "model").iterdir()) == ["config.json", "model.safetensors"]
    assert load_model(run).config.depth == 2  # the model directory is whole
    assert remove_stale_writes(run) == []


def test_temporary_names_are_recognised_and_a_missing_folder_holds_nothing_stale(tmp_path):
    fd, old = tempfile.mkstemp(prefix=".checkpoint.pt.", suffix=".tmp", dir=tmp_path)  # what mimsdk used to make
    os.close(fd)
    assert is_temporary(old)
    seen = []

    def write(p: str) -> None:
        seen.append(p)
        Path(p).write_text("x")

    atomic_write(tmp_path / "metrics.csv", write)
    with atomic_dir(tmp_path / "model") as staging:
        seen.append(str(staging))
    assert all(is_temporary(p) for p in seen) and seen[0].endswith(".tmp") and seen[1].endswith(".partial")
    assert remove_stale(tmp_path) == [Path(old)]
    assert remove_stale(tmp_path / "nowhere") == [] and remove_stale_writes(tmp_path / "nowhere") == []


def test_resume_after_a_kill_in_a_checkpoint_write_leaves_no_temporary(tmp_path):
    run = tmp_path / "run"
    Trainer(load_recipe(TINY), run).fit(until=2)
    killed = run_script(KILL, str(run))  # kill -9 while the next checkpoint is being written
    assert killed.returncode == -9 and list(run.glob(".checkpoint.pt.*.tmp"))
    result = pretrain(out=run, resume=True)
    assert result.history[-1]["step"] == load_recipe(TINY).train.max_steps
    assert not list(run.rglob(".*.tmp"))
