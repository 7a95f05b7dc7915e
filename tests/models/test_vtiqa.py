"""VT-IQA (released, simplified): fidelity to the authors' network, tiny-config behaviour, view building."""

from __future__ import annotations

import pytest
import torch

from iqa_cli.errors import CheckpointError, DataError
from iqa_cli.models import create, load_checkpoint, save_checkpoint
from iqa_cli.models.vit import ViTEncoder, imagenet_normalize
from iqa_cli.models.vtiqa import (
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
from tests.reference_fixtures import assert_matches, filled_state_dict, find, load_fixture, make_inputs


@pytest.mark.reference
@pytest.mark.parametrize("prefix", ["", "module."])
def test_matches_reference(prefix):
    manifest, ref = load_fixture("vtiqa")
    model = create("vtiqa").eval()
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters_elements"]
    state = {prefix + k: v for k, v in filled_state_dict(manifest).items()}  # `module.`: a DataParallel save
    load_checkpoint(model, state)
    x = make_inputs(ref)
    with torch.inference_mode():
        f_global, f_mosaic = model.features(x["x_global"], x["x_patch_mosaic"])
        score = model(x["x_global"], x["x_patch_mosaic"])
    assert_matches(score, find(ref["outputs"], "score"), 1e-5, "score")
    assert_matches(f_global, find(ref["intermediates"], "cls_feature_global"), 1e-4, "global CLS")
    assert_matches(f_mosaic, find(ref["intermediates"], "cls_feature_mosaic"), 1e-4, "mosaic CLS")


def tiny_inputs(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 64, 64, generator=g), torch.randn(batch, 3, 64, 64, generator=g)


def test_tiny_forward_backward():
    torch.manual_seed(0)
    model = create("vtiqa", tiny=True)
    x_global, x_mosaic = tiny_inputs()
    out = model(x_global, x_mosaic)
    assert out.shape == (2, 1)
    out.sum().backward()
    assert model.backbone.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.head[5].weight.grad.abs().sum() > 0


def test_eval_forward_is_deterministic():
    torch.manual_seed(0)
    model = create("vtiqa", tiny=True).eval()
    x_global, x_mosaic = tiny_inputs()
    with torch.inference_mode():
        first, second = model(x_global, x_mosaic), model(x_global, x_mosaic)
    assert torch.equal(first, second)


def test_authors_names_map_onto_ours():
    torch.manual_seed(0)
    source = create("vtiqa", tiny=True)
    ours = source.state_dict()
    # The authors' layout: backbone tensors at the top level, the head as `head.1/3/5`.
    authors = {
        ("module." + k[len("backbone.") :] if k.startswith("backbone.") else "module." + k): v for k, v in ours.items()
    }
    assert "module.cls_token" in authors and "module.head.1.weight" in authors
    target = load_checkpoint(create("vtiqa", tiny=True), authors)
    for key, value in target.state_dict().items():
        assert torch.equal(value, ours[key]), key


def test_own_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = create("vtiqa", tiny=True)
    path = save_checkpoint(model, tmp_path / "vtiqa.safetensors")
    loaded = load_checkpoint(create("vtiqa", tiny=True), path)
    x_global, x_mosaic = tiny_inputs()
    with torch.inference_mode():
        assert torch.equal(model.eval()(x_global, x_mosaic), loaded.eval()(x_global, x_mosaic))


def test_checkpoint_of_another_method_is_refused(tmp_path):
    path = save_checkpoint(create("ieit", tiny=True), tmp_path / "ieit.safetensors")
    with pytest.raises(CheckpointError, match="for model 'ieit', not 'vtiqa'"):
        load_checkpoint(create("vtiqa", tiny=True), path)
    # The same tensors without our metadata: the names tell.
    with pytest.raises(CheckpointError, match="missing tensors, first: backbone.cls_token"):
        load_checkpoint(create("vtiqa", tiny=True), create("ieit", tiny=True).state_dict())


def test_missing_extra_and_misshapen_tensors_are_named():
    state = create("vtiqa", tiny=True).state_dict()
    missing = {k: v for k, v in state.items() if k != "head.5.bias"}
    with pytest.raises(CheckpointError, match=r"1 missing tensors, first: head\.5\.bias"):
        load_checkpoint(create("vtiqa", tiny=True), missing)
    extra = {**state, "head.7.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"1 unexpected tensors, first: head\.7\.weight"):
        load_checkpoint(create("vtiqa", tiny=True), extra)
    wrong = {**state, "head.1.weight": torch.zeros(64, 100)}
    with pytest.raises(CheckpointError, match=r"head\.1\.weight \(64, 100\) \(expected \(64, 128\)\)"):
        load_checkpoint(create("vtiqa", tiny=True), wrong)


def test_backbone_weights_load_imagenet_encoder(tmp_path):
    torch.manual_seed(1)
    deit = ViTEncoder(img_size=64, embed_dim=64, depth=2, num_heads=2, imagenet_head=True)
    path = tmp_path / "deit.pth"
    torch.save({"model": deit.state_dict()}, path)  # the DeiT release layout: tensors under `model`
    model = create("vtiqa", tiny=True, backbone_weights=path)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, deit.state_dict()[key]), key
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 64)}}, path)
    with pytest.raises(CheckpointError, match="missing tensors"):
        create("vtiqa", tiny=True, backbone_weights=path)


# ----------------------------------------------------------------------------------------------- views


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
