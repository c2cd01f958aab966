"""Learning is real: quickstart lowers the masked-patch loss on CIFAR-10 images it never saw.

Measured on this sample (benchmarks/RESULTS.md, "Learning check"): the untrained model scores
2.35-2.75 on the test split (three initialisations), the trained one 0.76; with norm_pix,
predicting zeros scores 1.0. The margin is well inside the 0.24 gap to the trivial predictor,
so it holds against run-to-run noise, while a model that learns nothing fails it.
"""

import torch

from mimsdk import DataConfig, MaskedAutoencoder, pretrain
from mimsdk.adapter import get_adapter
from mimsdk.evaluate import masked_loss

MARGIN = 0.15


def test_quickstart_lowers_held_out_masked_loss(cifar, tmp_path):
    result = pretrain("quickstart", data=cifar / "train", out=tmp_path / "run")
    model = result.model
    test = get_adapter("images").dataset(cifar / "test", DataConfig(), model.config, train=False)
    trained = masked_loss(model, test, seed=0)
    torch.manual_seed(0)
    untrained = masked_loss(MaskedAutoencoder(model.config), test, seed=0)
    assert trained < untrained - MARGIN, (trained, untrained)
    assert trained < 1.0 - MARGIN, trained  # the trivial predictor (zeros) under norm_pix
