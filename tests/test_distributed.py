"""Two processes under torchrun (gloo, CPU) train like one process with the same global batch."""

import torch
from torchrun import pretrain_in_two_processes

from mimsdk import create_model, pretrain

RECIPE = {
    "model": dict(size="tiny", depth=2, input_size=[32, 32], patch_size=8, decoder_dim=32, decoder_depth=1,
                  decoder_heads=2),
    "data": dict(batch_size=16, num_workers=0),
    "train": dict(max_steps=6, warmup_steps=2, lr=1e-3, log_every=1, ckpt_every=100, recon_every=100),
}  # fmt: skip
# Loss averages of 8 + 8 samples against 16 differ only in summation order.
TOLERANCE = 1e-5


def test_two_processes_match_one(tmp_path):
    single = pretrain(RECIPE, out=tmp_path / "one")
    recipe = {**RECIPE, "data": {**RECIPE["data"], "batch_size": 8}}  # per process: the global batch stays 16
    pretrain_in_two_processes(tmp_path, {"recipe": recipe, "out": str(tmp_path / "two")})
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    assert [r["step"] for r in two["history"]] == list(range(1, 7))
    for a, b in zip(single.history, two["history"]):
        assert abs(a["loss"] - b["loss"]) < TOLERANCE, (a, b)
    # Compare what the weights compute rather than each weight: attention key biases get a
    # gradient that is zero up to rounding, which Adam scales up to ±lr per step either way.
    two_model = create_model(single.model.config)
    two_model.load_state_dict(two["model"])
    x, noise = torch.randn(4, 3, 32, 32), torch.rand(4, 16)
    with torch.no_grad():
        a, b = single.model(x, noise=noise), two_model.eval()(x, noise=noise)
    assert abs(a.loss.item() - b.loss.item()) < TOLERANCE
    assert torch.allclose(single.model.encode(x), two_model.encode(x), atol=1e-4)
