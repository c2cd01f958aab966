"""The README's Python examples run as printed, each one alone.

Every ```python block runs in a fresh namespace, so a block that uses a name it does not define
fails with NameError, as it would for a reader who pastes only that block. The working directory is
a temporary folder beside a link to the shared sample data, so the blocks' ``../shared/data/...``
paths resolve as they do from the repository root, and whatever a block writes (its ``tempfile``
folders included) lands under pytest's temporary directory.
"""

import re
import tempfile

import pytest
from conftest import REPO

README = (REPO / "README.md").read_text()


def python_blocks(text: str) -> list[tuple[str, str]]:
    """(id, source) of every ```python block, the id naming the section it sits in."""
    blocks, heading, counts = [], "top", {}
    for match in re.finditer(r"^(#{2,3}) ([^\n]+)$|^```python\n(.*?)^```", text, flags=re.M | re.S):
        if match[2]:
            heading = re.sub(r"[^a-z0-9]+", "-", match[2].lower()).strip("-")
            continue
        counts[heading] = counts.get(heading, 0) + 1
        blocks.append((f"{heading}-{counts[heading]}", match[3]))
    return blocks


BLOCKS = python_blocks(README)


def test_the_readme_has_its_examples():
    ids = [name for name, _ in BLOCKS]
    assert len(BLOCKS) >= 9, ids
    assert any('pretrain("quickstart"' in source for _, source in BLOCKS)


@pytest.mark.parametrize("source", [source for _, source in BLOCKS], ids=[name for name, _ in BLOCKS])
def test_readme_python_example_runs_alone(source, tmp_path, monkeypatch):
    shared = REPO.parent / "shared"
    if not (shared / "data").is_dir():
        pytest.fail(f"shared sample data missing at {shared / 'data'}: the README's examples read ../shared/data")
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    (tmp_path / "shared").symlink_to(shared, target_is_directory=True)
    monkeypatch.chdir(workdir)  # ../shared/data/... resolves as from the repository root
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the blocks' mkdtemp() folders are cleaned up
    namespace = {"__name__": "__readme__"}
    exec(compile(source, "README.md", "exec"), namespace)
    if 'pretrain("quickstart"' in source:
        assert namespace["result"].history[-1]["step"] == 3


def test_readme_setup_commands_are_the_ones_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"' in README and 'pip install -q -e ".[dev]"' in ci
    assert "python -m pytest -q" in README and "python -m pytest -q" in ci
    assert "mimsdk pretrain quickstart" in README
