"""The built-in enhancement: which images it touches, and that brightening and deblurring do their job."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from iqa_cli.enhance import ops


def textured(height: int = 160, width: int = 200, seed: int = 0) -> np.ndarray:
    """A sharp, mid-grey, high-contrast test picture (h, w, 3) float 0..255: blocks plus fine stripes."""
    rng = np.random.default_rng(seed)
    blocks = rng.uniform(40, 215, (height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:height, :width]
    stripes = 30 * np.sin(np.arange(width) / 1.3)[None, :, None]
    return np.clip(blocks + stripes, 0, 255)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.round(image).astype(np.uint8)).permute(2, 0, 1).contiguous()


def blurred(image: np.ndarray, sigma_at_244: float) -> np.ndarray:
    h, w = image.shape[:2]
    return gaussian_filter(image, (sigma_at_244 * h / 244, sigma_at_244 * w / 244, 0), mode="nearest")


def test_a_sharp_well_exposed_image_is_left_as_it_is():
    image = as_tensor(textured())
    enhanced, flags = ops.enhance(image)
    assert flags == 0 and torch.equal(enhanced, image)


def test_a_dark_image_is_brightened_keeping_the_order_of_pixel_values():
    dark = textured() * 0.25
    image = as_tensor(dark)
    enhanced, flags = ops.enhance(image)
    assert flags & ops.BRIGHTENED and not flags & ops.DEBLURRED
    before = ops.mean_luma(ops.detection_luma(image.float() / 255))
    after = ops.mean_luma(ops.detection_luma(enhanced.float() / 255))
    assert before < ops.DARK_LUMA and after > 0.3 and after > 2 * before
    # Gamma correction is monotone in V: brighter pixels stay brighter (up to rounding ties).
    v_in, v_out = image.amax(0).flatten().float(), enhanced.amax(0).flatten().float()
    order = torch.argsort(v_in)
    assert bool((torch.diff(v_out[order]) >= -1).all())


def test_a_blurred_image_is_deblurred_towards_the_sharp_one():
    sharp = textured(120, 150)
    soft = blurred(sharp, 2.0)
    enhanced, flags = ops.enhance(as_tensor(soft))
    assert flags == ops.DEBLURRED
    error_before = np.abs(soft - sharp).mean()
    error_after = np.abs(enhanced.permute(1, 2, 0).numpy().astype(np.float64) - sharp).mean()
    assert error_after < 0.9 * error_before
    assert ops.laplacian_variance(ops.detection_luma(enhanced.float() / 255)) > ops.laplacian_variance(
        ops.detection_luma(as_tensor(soft).float() / 255)
    )


def test_decisions_do_not_depend_on_the_stored_resolution():
    # Measured at 244 px: any image at least that large gets the same decisions. (Smaller ones are
    # upsampled, and look as soft as the network will see them.)
    for scale in (1, 2):
        sharp = textured(250 * scale, 300 * scale)
        assert ops.enhance(as_tensor(sharp))[1] == 0
        assert ops.enhance(as_tensor(sharp * 0.25))[1] == ops.BRIGHTENED
        soft = as_tensor(blurred(sharp, 2.0)).float() / 255
        assert ops.laplacian_variance(ops.detection_luma(soft)) < ops.BLUR_LAPLACIAN_VAR


def test_gaussian_blur_is_the_separable_filter_with_replicate_borders():
    x = torch.rand(3, 40, 52, dtype=torch.float64)
    sigma_y, sigma_x = 1.3, 0.7
    ours = ops.gaussian_blur(x, sigma_y, sigma_x).numpy()
    radius_y, radius_x = (max(1, int(np.ceil(3 * s))) for s in (sigma_y, sigma_x))
    reference = gaussian_filter(
        x.numpy(), (0, sigma_y, sigma_x), mode="nearest", radius=(0, radius_y, radius_x), truncate=100.0
    )
    assert np.abs(ours - reference).max() < 1e-10
