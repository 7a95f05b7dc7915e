"""VT-IQA's two views as tensor functions: the global crop of the 244 px image and the 7x7 mosaic of
32 px patches cut from the 768 px image, for training (random offsets from a seed) and testing.

They take batches (B, C, H, W) of uint8 or float images on any device and only index, so they keep the
dtype; `imagenet_normalize` turns the result into network input. Nothing here imports timm (the network
is in `iqa_cli.models.vtiqa`), so a thread making views never waits for the network's imports.
"""

from __future__ import annotations

import torch

from iqa_cli.errors import DataError
from iqa_cli.models.imagenet import imagenet_normalize

GLOBAL_SIZE = 224  # network input side
TEST_CROP_OFFSET = 10  # centre crop of the 244 image: rows/cols 10..233
TRAIN_CROP_RANGE = 20  # training crop offsets are drawn from 0..19
MOSAIC_GRID = 7
MOSAIC_PATCH = 32  # int(224 / 7); 7 * 32 = 224
MOSAIC_SOURCE = 768  # side of the resized image the mosaic patches are cut from


def _check_image_batch(images: torch.Tensor, min_height: int, min_width: int, what: str) -> None:
    if images.dim() != 4:
        raise DataError(f"{what}: expected an image batch (B, C, H, W), got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if h < min_height or w < min_width:
        raise DataError(f"{what}: images are {h}x{w}, need at least {min_height}x{min_width}")


def global_view(
    images: torch.Tensor, top: int = TEST_CROP_OFFSET, left: int = TEST_CROP_OFFSET, size: int = GLOBAL_SIZE
) -> torch.Tensor:
    """The size x size crop at (top, left); images already of that size are returned as they are.

    Test time: the default offset 10 is the centre crop of a 244 image. Training: offsets from
    `train_crop_offsets`. (A horizontal flip, when drawn, is the caller's `images.flip(-1)`.)
    """
    if images.dim() == 4 and tuple(images.shape[-2:]) == (size, size):
        return images
    _check_image_batch(images, top + size, left + size, "global view")
    return images[..., top : top + size, left : left + size]


def train_crop_offsets(seed: int, crop_range: int = TRAIN_CROP_RANGE) -> tuple[int, int, bool]:
    """(top, left, flip) of one training batch, as the authors draw them after `manual_seed(seed)`.

    Three integers in [0, crop_range) come from the seeded CPU generator; the third is unused. The
    whole batch is flipped horizontally iff the column offset is below crop_range / 2.
    """
    if crop_range <= 0:
        raise DataError(f"training crops need images larger than the crop (offset range {crop_range})")
    g = torch.Generator().manual_seed(seed)
    top, left, _ = torch.randint(crop_range, (3,), generator=g).tolist()
    return top, left, left < crop_range // 2


def centre_offsets(side: int, grid: int = MOSAIC_GRID, patch: int = MOSAIC_PATCH) -> torch.Tensor:
    """Test-time offsets (grid,): the patch centred in each cell, int(cell/2 - patch/2) with cell = int(side/grid)."""
    cell = side // grid
    return torch.full((grid,), int(cell / 2 - patch / 2), dtype=torch.long)


def train_mosaic_offsets(
    seed: int, side: int = MOSAIC_SOURCE, grid: int = MOSAIC_GRID, patch: int = MOSAIC_PATCH
) -> torch.Tensor:
    """Training offsets (grid,) in [0, cell - patch), drawn after re-seeding with the batch seed.

    The authors re-seed before drawing the row vector and again before the column vector, so both are
    this same vector; the cell size comes from the 768 side they hard-coded.
    """
    cell = side // grid
    g = torch.Generator().manual_seed(seed)
    return torch.randint(cell - patch, (grid,), generator=g)


def grid_positions(
    height: int,
    width: int,
    row_offsets: torch.Tensor,
    col_offsets: torch.Tensor,
    grid: int = MOSAIC_GRID,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left pixels (grid, grid) of the patch in each cell: rows i*int(H/grid)+row_offsets[i], cols likewise."""
    index = torch.arange(grid)
    rows = index * (height // grid) + row_offsets.long().cpu()
    cols = index * (width // grid) + col_offsets.long().cpu()
    return rows[:, None].expand(grid, grid), cols[None, :].expand(grid, grid)


def cut_mosaic(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, patch: int = MOSAIC_PATCH) -> torch.Tensor:
    """Paste images[b, :, rows[b,i,j]:+patch, cols[b,i,j]:+patch] at mosaic cell (i, j).

    rows/cols are (grid, grid) for one layout shared by the batch, or (B, grid, grid) per image.
    Returns (B, C, grid*patch, grid*patch) in the input dtype, built with one gather.
    """
    _check_image_batch(images, patch, patch, "mosaic source")
    b, c, h, w = images.shape
    grid = rows.shape[-1]
    # Bounds are checked where the positions were made (on the CPU, as a rule): reading min/max of a
    # GPU tensor would stall the pipeline once per batch.
    lo = min(int(rows.min()), int(cols.min()))
    if lo < 0 or int(rows.max()) + patch > h or int(cols.max()) + patch > w:
        raise DataError(f"mosaic patches fall outside the {h}x{w} source images")
    rows = rows.to(images.device, torch.long, non_blocking=True).expand(b, grid, grid)
    cols = cols.to(images.device, torch.long, non_blocking=True).expand(b, grid, grid)
    step = torch.arange(patch, device=images.device)
    # Index over (b, i, u, j, v): mosaic pixel (i*patch+u, j*patch+v) <- source (rows+u, cols+v).
    source_rows = rows[:, :, None, :, None] + step[:, None, None]
    source_cols = cols[:, :, None, :, None] + step
    flat = (source_rows * w + source_cols).reshape(b, 1, -1)
    out = images.reshape(b, c, h * w).gather(2, flat.expand(b, c, flat.shape[-1]))
    return out.reshape(b, c, grid * patch, grid * patch)


def mosaic_view(
    images: torch.Tensor,
    offsets: torch.Tensor | None = None,
    grid: int = MOSAIC_GRID,
    patch: int = MOSAIC_PATCH,
) -> torch.Tensor:
    """The local view: a grid x grid mosaic of patch-px patches, one per cell of the (768) image.

    offsets=None: test time, cell centres. Otherwise one (grid,) vector used for rows and columns
    (training: `train_mosaic_offsets(seed)`), shared by the whole batch. Never flipped.
    """
    _check_image_batch(images, grid * patch, grid * patch, "mosaic source")
    h, w = images.shape[-2:]
    row_offsets = centre_offsets(h, grid, patch) if offsets is None else offsets
    col_offsets = centre_offsets(w, grid, patch) if offsets is None else offsets
    rows, cols = grid_positions(h, w, row_offsets, col_offsets, grid)
    return cut_mosaic(images, rows, cols, patch)


def eval_views(
    images_244: torch.Tensor,
    images_768: torch.Tensor,
    *,
    size: int = GLOBAL_SIZE,
    grid: int = MOSAIC_GRID,
    patch: int = MOSAIC_PATCH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Network inputs at test time: centre-cropped global view and centred mosaic, ImageNet-normalised."""
    offset = (images_244.shape[-1] - size) // 2
    x_global = global_view(images_244, offset, offset, size)
    return imagenet_normalize(x_global), imagenet_normalize(mosaic_view(images_768, None, grid, patch))


def train_views(
    images_244: torch.Tensor,
    images_768: torch.Tensor,
    seed: int,
    *,
    size: int = GLOBAL_SIZE,
    grid: int = MOSAIC_GRID,
    patch: int = MOSAIC_PATCH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Network inputs for one training batch, from the authors' per-batch seed `len(loader)*epoch + batch`.

    Crop offsets are drawn in [0, 244-224) and the mosaic offsets in [0, cell-patch) from the same seed;
    the global view is flipped when the column offset is below half that range, the mosaic never.
    """
    x_global, x_mosaic = train_crops(images_244, images_768, seed, size=size, grid=grid, patch=patch)
    return imagenet_normalize(x_global), imagenet_normalize(x_mosaic)


def train_crops(
    images_244: torch.Tensor,
    images_768: torch.Tensor,
    seed: int,
    rows: torch.Tensor | None = None,
    *,
    size: int = GLOBAL_SIZE,
    grid: int = MOSAIC_GRID,
    patch: int = MOSAIC_PATCH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`train_views` before normalisation (uint8): of the whole batch, or of images `rows` of two
    stored view arrays, reading only the pixels those images use.

    With `rows` (the preloaded arrays of a whole dataset), a batch copies 2 x 224^2 pixels per image
    instead of 244^2 + 768^2 (the 768 view is 13x larger than its mosaic); without, the mosaic is
    one gather over the batch given (the batch's views already on the device).
    """
    top, left, flip = train_crop_offsets(seed, images_244.shape[-1] - size)
    h, w = images_768.shape[-2:]
    offsets = train_mosaic_offsets(seed, min(h, w), grid, patch)
    if rows is None:
        x_global = global_view(images_244, top, left, size)
        x_mosaic = mosaic_view(images_768, offsets, grid, patch)
    else:
        _check_image_batch(images_244, top + size, left + size, "global view")
        x_global = images_244[:, :, top : top + size, left : left + size].index_select(0, rows)
        x_mosaic = _gather_mosaic(images_768, rows, offsets, grid, patch)
    return (x_global.flip(-1) if flip else x_global), x_mosaic


def _gather_mosaic(
    images: torch.Tensor, rows: torch.Tensor, offsets: torch.Tensor, grid: int, patch: int
) -> torch.Tensor:
    """`mosaic_view(images[rows], offsets)` cell by cell, without copying the whole images first."""
    _check_image_batch(images, grid * patch, grid * patch, "mosaic source")
    h, w = images.shape[-2:]
    starts_r, starts_c = grid_positions(h, w, offsets, offsets, grid)
    shape = (rows.numel(), images.shape[1], grid * patch, grid * patch)
    out = torch.empty(shape, dtype=images.dtype, device=images.device)
    for i in range(grid):
        for j in range(grid):
            r, c = int(starts_r[i, j]), int(starts_c[i, j])
            if r + patch > h or c + patch > w:
                raise DataError(f"mosaic patches fall outside the {h}x{w} source images")
            cell = images[:, :, r : r + patch, c : c + patch]
            out[:, :, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch] = cell.index_select(0, rows)
    return out
