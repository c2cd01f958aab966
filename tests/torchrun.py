"""``mimsdk.pretrain`` in two processes under torchrun (gloo, CPU), for tests that compare them with one."""

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any


def pretrain_in_two_processes(folder: Path, *calls: dict[str, Any]) -> str:
    """Each of ``calls`` (keyword arguments of ``mimsdk.pretrain``, as Python literals) in turn, in one torchrun
    launch of two processes: the launch's start-up is paid once however many runs are compared. Returns what
    the processes wrote to stderr."""
    script = folder / "two_processes.py"
    script.write_text(
        textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from mimsdk import pretrain
        for call in {list(calls)!r}:
            pretrain(**call)
        """)
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr
