"""VT-IQA's view functions (`iqa_cli.models.vtiqa_views`): crops, mosaics, offsets, normalisation, and
that making them never imports timm."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from iqa_cli.errors import DataError
from iqa_cli.models.imagenet import imagenet_normalize
from iqa_cli.models.vtiqa_views import (
    centre_offsets,
    cut_mosaic,
    eval_views,
    global_view,
    grid_positions,
    mosaic_view,
    train_crop_offsets,
    train_mosaic_offsets,
    train_views,
)


def coordinate_images(batch: int, height: int, width: int) -> torch.Tensor:
    """Pixel value = b * 10^7 + row * width + col in every channel, so a crop reveals where it came from."""
    rows = torch.arange(height)[:, None] * width + torch.arange(width)
    images = torch.stack([rows + b * 10_000_000 for b in range(batch)])[:, None].expand(batch, 3, height, width)
    return images.contiguous()


def pixel(b: int, row: int, col: int, width: int) -> int:
    return b * 10_000_000 + row * width + col


def test_global_view_crops_at_offsets():
    images = coordinate_images(2, 244, 244)
    view = global_view(images)  # test time: rows/cols 10..233
    assert view.shape == (2, 3, 224, 224)
    assert view[1, 2, 0, 0] == pixel(1, 10, 10, 244) and view[0, 0, 223, 223] == pixel(0, 233, 233, 244)
    view = global_view(images, top=3, left=17)
    assert view[0, 1, 0, 0] == pixel(0, 3, 17, 244) and view[1, 0, 223, 5] == pixel(1, 226, 22, 244)
    assert torch.equal(global_view(images[..., :224, :224]), images[..., :224, :224])  # already 224: as is
    with pytest.raises(DataError, match="need at least 234x244"):
        global_view(images[..., :240, :240], top=10, left=20)


def test_train_crop_offsets_replay_the_authors_draw():
    for seed in (0, 7, 123):
        torch.manual_seed(seed)  # the authors' per-batch reseed of the default generator
        expected = torch.randint(20, (3,))
        top, left, flip = train_crop_offsets(seed)
        assert (top, left) == (int(expected[0]), int(expected[1]))
        assert flip == (int(expected[1]) < 10)


def test_centre_offsets_and_grid_positions():
    # 768 / 7 -> cells of 109 px; int(109/2 - 16) = 38; patch (i, j) at (109 i + 38, 109 j + 38).
    assert centre_offsets(768).tolist() == [38] * 7
    rows, cols = grid_positions(768, 768, centre_offsets(768), centre_offsets(768))
    assert rows[3, 5] == 3 * 109 + 38 and cols[3, 5] == 5 * 109 + 38
    assert rows[6, 0] == 692 and cols[0, 6] == 692


def test_mosaic_view_at_test_time_takes_cell_centres():
    images = coordinate_images(2, 768, 768)
    mosaic = mosaic_view(images)
    assert mosaic.shape == (2, 3, 224, 224) and mosaic.dtype == images.dtype
    for b, i, j, u, v in [(0, 0, 0, 0, 0), (1, 2, 5, 31, 7), (0, 6, 6, 31, 31), (1, 4, 1, 16, 0)]:
        want = pixel(b, 109 * i + 38 + u, 109 * j + 38 + v, 768)
        assert mosaic[b, 1, 32 * i + u, 32 * j + v] == want, (b, i, j, u, v)


def test_mosaic_view_non_square_uses_each_side():
    images = coordinate_images(1, 700, 770)  # cells 100 x 110 px, centred offsets 34 and 39
    mosaic = mosaic_view(images)
    assert mosaic[0, 0, 32 * 2, 32 * 3] == pixel(0, 200 + 34, 330 + 39, 770)


def test_training_mosaic_uses_one_offset_vector_for_rows_and_columns():
    seed = 42
    torch.manual_seed(seed)
    expected = torch.randint(109 - 32, (7,))  # the authors' draw after reseeding
    offsets = train_mosaic_offsets(seed)
    assert torch.equal(offsets, expected)
    images = coordinate_images(2, 768, 768)
    mosaic = mosaic_view(images, offsets)
    for i, j in [(0, 0), (1, 4), (6, 2)]:
        want = pixel(1, 109 * i + int(offsets[i]) + 3, 109 * j + int(offsets[j]) + 9, 768)
        assert mosaic[1, 0, 32 * i + 3, 32 * j + 9] == want


def test_cut_mosaic_per_image_positions_and_bounds():
    images = coordinate_images(2, 100, 100)
    rows = torch.tensor([[[0, 10], [20, 30]], [[5, 6], [7, 8]]])
    cols = torch.tensor([[[1, 2], [3, 4]], [[50, 60], [70, 80]]])
    mosaic = cut_mosaic(images, rows, cols, patch=8)
    assert mosaic.shape == (2, 3, 16, 16)
    assert mosaic[0, 0, 8 + 2, 0 + 5] == pixel(0, 20 + 2, 3 + 5, 100)
    assert mosaic[1, 2, 7, 15] == pixel(1, 6 + 7, 60 + 7, 100)
    with pytest.raises(DataError, match="outside the 100x100"):
        cut_mosaic(images, rows + 90, cols, patch=8)


def test_views_on_uint8_images_and_normalisation():
    g = torch.Generator().manual_seed(3)
    images_244 = torch.randint(0, 256, (2, 3, 244, 244), generator=g, dtype=torch.uint8)
    images_768 = torch.randint(0, 256, (2, 3, 768, 768), generator=g, dtype=torch.uint8)
    assert mosaic_view(images_768).dtype == torch.uint8
    x_global, x_mosaic = eval_views(images_244, images_768)
    assert x_global.dtype == torch.float32 and x_mosaic.shape == (2, 3, 224, 224)
    expected = (images_244[0, 1, 10, 10].float() / 255 - 0.456) / 0.224
    assert torch.allclose(x_global[0, 1, 0, 0], expected)
    assert torch.allclose(x_mosaic, imagenet_normalize(mosaic_view(images_768)))


def test_train_views_flip_only_the_global_view():
    images_244 = coordinate_images(1, 244, 244)
    images_768 = coordinate_images(1, 768, 768)
    seed = next(s for s in range(100) if train_crop_offsets(s)[2])  # a seed whose draw flips
    top, left, _ = train_crop_offsets(seed)
    x_global, x_mosaic = train_views(images_244.float() / 1e9, images_768.float() / 1e9, seed)
    flipped = images_244[..., top : top + 224, left : left + 224].flip(-1).float() / 1e9
    assert torch.allclose(x_global, imagenet_normalize(flipped))
    unflipped = mosaic_view(images_768, train_mosaic_offsets(seed)).float() / 1e9
    assert torch.allclose(x_mosaic, imagenet_normalize(unflipped))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_views_on_cuda_match_cpu():
    images = coordinate_images(2, 768, 768)
    offsets = train_mosaic_offsets(5)
    assert torch.equal(mosaic_view(images.cuda(), offsets).cpu(), mosaic_view(images, offsets))


def test_making_scoring_views_never_imports_timm():
    """`iqa predict` makes views in a thread while the main thread imports timm to build the network;
    views that needed timm would wait for that import (1.5 s measured) instead of running beside it."""
    code = (
        "import sys, numpy as np, torch\n"
        "from iqa_cli.train.predict import make_views\n"
        "from iqa_cli.train.recipes import get_recipe\n"
        "recipe = get_recipe('vtiqa')\n"
        "params = recipe.Params()\n"
        "views = make_views(recipe, params, [np.zeros((384, 512, 3), np.uint8)], torch.device('cpu'))\n"
        "inputs = recipe.eval_inputs(views, params)\n"
        "assert inputs[0].shape == (1, 3, 224, 224), inputs[0].shape\n"
        "print('timm' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
