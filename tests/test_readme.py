"""The README's examples run as printed: each Python block alone, and the shell lines on the shared samples.

Every ```python block runs in a fresh namespace, so a block that uses a name it does not define
fails with NameError, as it would for a reader who pastes only that block. The working directory is
a temporary folder beside a link to the shared sample data, so the blocks' ``../shared/data/...``
paths resolve as they do from the repository root, and whatever a block writes (its ``tempfile``
folders included) lands under pytest's temporary directory. The medical section's ```bash lines that
read ``../shared/data`` run the same way, in order, through ``mimsdk.cli.main``.
"""

import re
import shlex
import tempfile

import pytest
from conftest import REPO

from mimsdk.cli import main

README = (REPO / "README.md").read_text()
MEDICAL = "radiology-ct-mri-and-x-rays-medical"  # the section "Radiology: CT, MRI and X-rays (`medical`)"


def code_blocks(text: str, language: str = "python") -> list[tuple[str, str]]:
    """(id, source) of every ```<language> block, the id naming the section it sits in."""
    blocks, heading, counts = [], "top", {}
    pattern = rf"^(#{{2,3}}) ([^\n]+)$|^```{language}\n(.*?)^```"
    for match in re.finditer(pattern, text, flags=re.M | re.S):
        if match[2]:
            heading = re.sub(r"[^a-z0-9]+", "-", match[2].lower()).strip("-")
            continue
        counts[heading] = counts.get(heading, 0) + 1
        blocks.append((f"{heading}-{counts[heading]}", match[3]))
    return blocks


def python_blocks(text: str) -> list[tuple[str, str]]:
    return code_blocks(text, "python")


def shell_commands(text: str, section: str) -> list[str]:
    """The ``mimsdk`` lines of the ```bash blocks in ``section``, as printed (comments included)."""
    lines = [line for name, source in code_blocks(text, "bash") if name.rsplit("-", 1)[0] == section
             for line in source.splitlines()]  # fmt: skip
    return [line for line in lines if line.startswith("mimsdk ")]


BLOCKS = python_blocks(README)


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A working directory from which ``../shared/data`` is the shared sample data, as from the repository root."""
    shared = REPO.parent / "shared"
    if not (shared / "data").is_dir():
        pytest.fail(f"shared sample data missing at {shared / 'data'}: the README's examples read ../shared/data")
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    (tmp_path / "shared").symlink_to(shared, target_is_directory=True)
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the blocks' mkdtemp() folders are cleaned up
    return workdir


def test_the_readme_has_its_examples():
    ids = [name for name, _ in BLOCKS]
    assert len(BLOCKS) >= 9, ids
    assert any('pretrain("quickstart"' in source for _, source in BLOCKS)


@pytest.mark.parametrize("source", [source for _, source in BLOCKS], ids=[name for name, _ in BLOCKS])
def test_readme_python_example_runs_alone(source, checkout):
    namespace = {"__name__": "__readme__"}
    exec(compile(source, "README.md", "exec"), namespace)
    if 'pretrain("quickstart"' in source:
        assert namespace["result"].history[-1]["step"] == 3


def test_readme_setup_commands_are_the_ones_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"' in README and 'pip install -q -e ".[dev]"' in ci
    assert "python -m pytest -q" in README and "python -m pytest -q" in ci
    assert "mimsdk pretrain quickstart" in README


def test_readme_medical_shell_examples_run_as_printed_on_the_shared_samples(checkout, capsys):
    commands = shell_commands(README, MEDICAL)
    on_samples = [line for line in commands if "../shared/data" in line]
    assert len(on_samples) >= 4 and any("dicom" in line for line in on_samples), commands
    # every other line is for the reader's own data, and says it needs GPUs
    assert all("# GPUs" in line for line in commands if line not in on_samples), commands
    for line in on_samples:
        assert main(shlex.split(line, comments=True)[1:]) == 0, line
    for run in ("ct", "cxr", "dicom"):
        assert (checkout / "runs" / run / "model" / "model.safetensors").is_file(), run
    assert "| pre-trained |" in capsys.readouterr().out  # the probe's table


FINE_TUNE = ["fine-tune-in-monai", "fine-tune-in-torchgeo-timm", "fine-tune-in-transformers-vitmae-and-videomae"]


@pytest.mark.parametrize("section", FINE_TUNE)
def test_readme_fine_tune_commands_run_as_printed(section, checkout, capsys):
    commands = shell_commands(README, section)
    assert len(commands) == 2 and commands[1].startswith("mimsdk export"), commands
    for line in commands:
        assert main(shlex.split(line, comments=True)[1:]) == 0, line
    out = checkout / shlex.split(commands[1], comments=True)[-1]
    assert (out / "README.md").is_file() and "how to load it" in capsys.readouterr().out


def test_readme_corpus_commands_run_as_printed(checkout, capsys):
    commands = [line for line in shell_commands(README, "pre-training-on-a-corpus") if "your bucket" not in line]
    assert len(commands) == 5 and commands[0].startswith("mimsdk shard"), commands
    for line in commands:
        assert main(shlex.split(line, comments=True)[1:]) == 0, line
    said = capsys.readouterr().out
    assert "wrote the shard set shards/cifar" in said and "finished 6 steps" in said and "per worker" in said
    assert "resumed run finished at step 9" in said
