"""The README's Python examples run as written."""

import re

from conftest import REPO


def test_readme_python_examples_run(tmp_path):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    namespace = {"run_dir": tmp_path / "run"}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["result"].history[-1]["step"] == 3


def test_readme_setup_commands_are_the_ones_ci_runs():
    text = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"' in text and 'pip install -q -e ".[dev]"' in ci
    assert "python -m pytest -q" in text and "python -m pytest -q" in ci
    assert "mimsdk pretrain quickstart" in text
