import os
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CIFAR = SHARED / "images" / "cifar10"

torch.set_num_threads(2)
# Scan verdicts (mimsdk.scan.VerdictCache) go to a folder of this session, not the user's ~/.cache.
os.environ.setdefault("MIMSDK_CACHE", tempfile.mkdtemp(prefix="mimsdk-test-cache-"))


@pytest.fixture
def tiny_kwargs() -> dict:
    """A small 2D model: 32×32 RGB, patch 4 (64 tokens), 2 blocks."""
    return dict(
        size="tiny", depth=2, input_size=[32, 32], patch_size=4, decoder_dim=64, decoder_depth=1, decoder_heads=2
    )


@pytest.fixture
def cifar() -> Path:
    if not CIFAR.is_dir():
        pytest.fail(f"shared sample data missing at {CIFAR}: tests expect ../shared beside the checkout")
    return CIFAR
