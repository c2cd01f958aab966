import numpy as np
import pytest
import torch
from skimage.feature import hog

from mimsdk import create_model
from mimsdk.target import PixelTarget
from mimsdk.variants.frequency_target import FrequencyTarget


def _image(seed: int, size: int = 32) -> np.ndarray:
    """A smooth random field plus edges: gradients in every direction, not just noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.sin(6 * x + rng.uniform(0, 3)) * np.cos(4 * y) + 0.3 * rng.standard_normal((size, size))
    img[size // 3 : size // 2, :] += 1.0
    return img.astype(np.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hog_target_matches_scikit_image(tiny_kwargs, seed):
    # 32×32 grey image, patch 16 -> 2×2 tokens of 2×2 cells of 8 pixels, 9 bins
    model = create_model(**{**tiny_kwargs, "patch_size": 16}, in_chans=1, target="hog")
    img = _image(seed)
    x = torch.from_numpy(img).float()[None, None]
    ours = model.target(model.tokenize(x).patches)  # 1×4×(2·2·1·9)
    ref = hog(
        img, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(1, 1), block_norm="L2", feature_vector=False
    )
    ref = torch.from_numpy(ref[:, :, 0, 0, :]).float()  # cells_y×cells_x×bins
    ours = ours.reshape(2, 2, 2, 2, 9).permute(0, 2, 1, 3, 4).reshape(4, 4, 9)  # token grid + cells -> cell grid
    # Same binning and normalisation; float32 against float64 moves a value on a bin edge only rarely.
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()


def test_hog_target_cells_fit_the_patch_and_non_square_patches_are_refused(tiny_kwargs):
    assert create_model(**tiny_kwargs, target="hog").target.cell == 4  # patch 4: one 4-pixel cell per patch
    with pytest.raises(ValueError, match="hog target needs square 2D patches"):
        create_model(**{**tiny_kwargs, "patch_size": [4, 8]}, target="hog")


def test_frequency_target_is_an_orthonormal_spectrum_per_patch():
    target = FrequencyTarget((4, 4), 3)
    patches = torch.randn(2, 5, 48)
    spec = target(patches)
    assert spec.shape == (2, 5, 96)
    # Parseval: an orthonormal transform keeps each patch's energy
    assert torch.allclose(spec.pow(2).sum(-1), patches.pow(2).sum(-1), rtol=1e-4)
    cube = patches.reshape(2, 5, 4, 4, 3)
    dc = cube.sum(dim=(2, 3)) / 4.0  # the zero frequency of each channel, orthonormal scaling
    assert torch.allclose(spec.reshape(2, 5, 2, 4, 4, 3)[:, :, 0, 0, 0], dc, atol=1e-5)


def test_l1_pixel_target_scores_absolute_error():
    target = PixelTarget(norm_pix=False, l1=True)
    pred, truth = torch.zeros(1, 2, 3), torch.tensor([[[1.0, -2.0, 3.0], [5.0, 5.0, 5.0]]])
    assert target.loss(pred, truth, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(2.0)


@pytest.mark.parametrize("name", ["pixels_l1", "frequency", "hog", "ema_latent"])
def test_every_target_trains_through_the_model(tiny_kwargs, name):
    model = create_model(**tiny_kwargs, target=name)
    x = torch.rand(2, 3, 32, 32)
    out = model(x, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.loss > 0
    assert model.decoder.pred.weight.grad.abs().sum() > 0
    pictures = model.reconstruct(x, generator=torch.Generator().manual_seed(0))
    assert pictures["reconstruction"].shape == x.shape
