import pytest

from mimsdk import DataConfig, ModelConfig
from mimsdk.adapter import get_adapter
from mimsdk.data import DataError, normalisation


def test_normalisation_takes_the_data_keys_or_the_defaults_and_checks_the_channel_count():
    assert normalisation(None, None, 2, [0.0, 0.0], [1.0, 1.0]) == ([0.0, 0.0], [1.0, 1.0])
    assert normalisation([0.5], [0.2], 1, [0.0], [1.0]) == ([0.5], [0.2])
    with pytest.raises(DataError, match=r"data.mean and data.std need 3 values each; got \[0.5\] and \[0.2\]"):
        normalisation([0.5], [0.2], 3, [0.0] * 3, [1.0] * 3)


def test_an_adapter_names_a_mean_that_does_not_fit_the_channels(cifar):
    model = ModelConfig(size="tiny", input_size=[16, 16], patch_size=8)
    with pytest.raises(DataError, match="data.mean and data.std need 3 values each"):
        get_adapter("images").dataset(cifar / "test", DataConfig(mean=[0.5], std=[0.2]), model, train=False)
