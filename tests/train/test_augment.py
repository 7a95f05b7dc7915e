"""Resizing: only the needed output pixels (`resize_spans`) and the CPU's chunked resize are bit-exact."""

from __future__ import annotations

import pytest
import torch

from iqa_cli.train import augment
from iqa_cli.train.augment import resize_spans, resize_to, same_size_batches


def _images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _cut(full: torch.Tensor, rows: list[tuple[int, int]], cols: list[tuple[int, int]]) -> torch.Tensor:
    r = torch.cat([torch.arange(a, b) for a, b in rows])
    c = torch.cat([torch.arange(a, b) for a, b in cols])
    return full[:, :, r][:, :, :, c]


MOSAIC = [(38 + 109 * i, 70 + 109 * i) for i in range(7)]  # VT-IQA's test cells in a 768 px side


@pytest.mark.parametrize(
    ("h", "w", "out_h", "out_w", "rows", "cols"),
    [
        (384, 512, 768, 768, MOSAIC, MOSAIC),  # KonIQ prepared: exact rows, inexact columns
        (768, 1024, 768, 768, MOSAIC, MOSAIC),  # same height: identity rows
        (500, 500, 768, 768, MOSAIC, MOSAIC),  # inexact both ways
        (1536, 96, 768, 768, MOSAIC, [(0, 5), (700, 768)]),  # downscale, spans at both borders
        (97, 64, 224, 256, [(0, 224)], [(0, 1), (1, 2), (255, 256)]),
        (80, 72, 128, 128, [(0, 16), (40, 56), (112, 128)], [(3, 19), (100, 128)]),
    ],
)
def test_resize_spans_equals_cutting_the_full_resize(h, w, out_h, out_w, rows, cols):
    images = _images(3, h, w, seed=h * w)
    assert torch.equal(
        resize_spans(images, out_h, out_w, rows, cols), _cut(resize_to(images, out_h, out_w), rows, cols)
    )


def test_exact_sides_resize_only_the_rows_around_the_spans():
    # 384 -> 768 has source positions exact in float: crops of the source, a few rows around each cell.
    parts = augment._span_parts(384, 768, MOSAIC)
    assert len(parts) == 7 and sum(part.size for part in parts) < 768 / 2
    # 512 -> 768 (ratio 2/3) is not exact: the whole side is resized.
    assert sum(part.size for part in augment._span_parts(768, 768, MOSAIC)) < 768 / 2  # photos 768 px high
    (whole,) = augment._span_parts(512, 768, MOSAIC)
    assert whole.source == (0, 512) and whole.size == 768


@pytest.mark.parametrize("span", [(-1, 4), (4, 4), (60, 65)])
def test_resize_spans_refuses_spans_outside_the_output(span):
    with pytest.raises(ValueError, match="outside the 64 px resize"):
        resize_spans(_images(1, 32, 32), 64, 64, [span], [(0, 8)])


def test_same_size_batches_group_mixed_sizes_in_order():
    a, b = _images(2, 40, 60, seed=1), _images(1, 30, 50, seed=2)
    groups = same_size_batches([a[0], b[0], a[1]])
    assert [positions for positions, _ in groups] == [[0, 2], [1]]
    assert torch.equal(groups[0][1], a) and torch.equal(groups[1][1], b)


def test_cpu_chunks_give_the_same_pixels(monkeypatch):
    images = _images(5, 50, 70)
    whole = resize_to(images, 96, 80)
    monkeypatch.setattr(augment, "CPU_CHUNK_BYTES", 1)  # one image at a time
    assert torch.equal(resize_to(images, 96, 80), whole)
    assert torch.equal(resize_to(images.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), 96, 80), whole)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_resize_spans_is_exact_on_the_gpu_too():
    images = _images(2, 384, 512).cuda()
    full = resize_to(images, 768, 768)
    assert torch.equal(resize_spans(images, 768, 768, MOSAIC, MOSAIC), _cut(full.cpu(), MOSAIC, MOSAIC).cuda())
