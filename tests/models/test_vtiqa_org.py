"""VT-IQA original version: fidelity of the three networks and the saliency, the patch-selection rule, and
the full selection -> mosaic -> backbone -> fusion forward."""

from __future__ import annotations

import pytest
import torch

from iqa_cli.errors import CheckpointError
from iqa_cli.models import create, load_checkpoint, save_checkpoint
from iqa_cli.models.imagenet import imagenet_normalize
from iqa_cli.models.vtiqa_org import (
    VTIQAOriginal,
    load_original_parts,
    minmax_normalize,
    select_patch_positions,
    sensitivity_map,
)
from tests.reference_fixtures import assert_matches, filled_state_dict, find, load_fixture, make_inputs

PARTS = {"backbone.": "backbone", "safusion.": "fusion", "selection.": "selection"}


def load_reference_model(manifest, how: str) -> VTIQAOriginal:
    model = create("vtiqa-org").eval()
    state = filled_state_dict(manifest)
    if how == "combined":
        load_checkpoint(model, state)
    elif how == "combined-dataparallel":
        load_checkpoint(model, {"module." + k: v for k, v in state.items()})
    else:  # the three released files, each a DataParallel state dict of one network
        files = {
            part: {"module." + k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            for prefix, part in PARTS.items()
        }
        load_original_parts(model, **files)
    return model


@pytest.mark.reference
@pytest.mark.parametrize("how", ["combined", "combined-dataparallel", "three-files"])
def test_matches_reference(how):
    manifest, ref = load_fixture("vtiqa_org")
    model = load_reference_model(manifest, how)
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters_elements"]
    x = make_inputs(ref)
    x_global, x_mosaic = x["x_global"], x["x_patch_mosaic"]
    raw, cam = model.saliency(x_global)  # needs gradients: outside inference mode, as the authors ran it
    with torch.inference_mode():
        features = model.features(x_global, x_mosaic)
        score = model.score_views(x_global, x_mosaic)
        selection_score = model.selection(x_global)
        raw_in_inference, _ = model.saliency(x_global)  # and it also works from inside inference mode
    outputs, intermediates = ref["outputs"], ref["intermediates"]
    assert_matches(score, find(outputs, "score"), 1e-5, "score")
    assert_matches(selection_score, find(outputs, "selection("), 1e-5, "selection score")
    assert_matches(features, find(outputs, "backbone("), 1e-5, "backbone features")
    # The raw map is ~1e-7 in size, so 1e-4 absolute would pass anything: compare it relative to its range.
    expected_raw = find(intermediates, "selection saliency: ")
    scale = max(abs(expected_raw["min"]), abs(expected_raw["max"]))
    assert_matches(raw, expected_raw, 1e-4 * scale, "raw saliency")
    assert_matches(cam, find(intermediates, "selection saliency min-max"), 1e-4, "normalised saliency")
    assert torch.equal(raw_in_inference, raw)


# ------------------------------------------------------------------------------------ selection rule


def authors_positions(cam: torch.Tensor, height: int, grid: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' scan, written out: strict `>` from -10 over x then y, pixel int((1.5+k)/24*H)."""
    b = cam.shape[0]
    rows = torch.zeros(b, grid, grid, dtype=torch.long)
    cols = torch.zeros(b, grid, grid, dtype=torch.long)
    for n in range(b):
        for i in range(grid):
            for j in range(grid):
                best = -10.0
                for x in range(3):
                    for y in range(3):
                        if cam[n, i * 3 + x, j * 3 + y] > best:
                            best = float(cam[n, i * 3 + x, j * 3 + y])
                            rows[n, i, j] = int((1.5 + i * 3 + x) / 24 * height)
                            cols[n, i, j] = int((1.5 + j * 3 + y) / 24 * height)
    return rows, cols


def test_selection_rule_matches_the_authors_scan_with_ties():
    g = torch.Generator().manual_seed(0)
    cam = torch.randint(0, 3, (3, 24, 24), generator=g).float() / 2  # many ties: first maximum must win
    rows, cols = select_patch_positions(cam, 768, 768)
    want_rows, want_cols = authors_positions(cam, 768)
    assert torch.equal(rows, want_rows) and torch.equal(cols, want_cols)


def test_selection_rule_hand_computed():
    cam = torch.zeros(1, 24, 24)
    cam[0, 2, 1] = 1.0  # cell (0, 0): best at x=2, y=1 -> map (2, 1)
    cam[0, 3 * 6 + 1, 3 * 4 + 2] = 1.0  # cell (6, 4): map (19, 14)
    rows, cols = select_patch_positions(cam, 768, 768)
    # int((1.5 + k) / 24 * 768) = 48 + 32 k
    assert (rows[0, 0, 0], cols[0, 0, 0]) == (48 + 32 * 2, 48 + 32 * 1)
    assert (rows[0, 6, 4], cols[0, 6, 4]) == (48 + 32 * 19, 48 + 32 * 14)
    assert (rows[0, 3, 3], cols[0, 3, 3]) == (48 + 32 * 9, 48 + 32 * 9)  # all zero: first cell of the group


def test_minmax_is_over_the_whole_batch():
    cam = torch.tensor([[[1.0, 2.0]], [[3.0, 5.0]]])
    assert torch.allclose(minmax_normalize(cam), torch.tensor([[[0.0, 0.25]], [[0.5, 1.0]]]))
    assert torch.equal(minmax_normalize(torch.full((2, 4, 4), 3.0)), torch.zeros(2, 4, 4))


def test_sensitivity_map_is_pooled_signed_channel_sum():
    weights = torch.randn(3, 18, 18, generator=torch.Generator().manual_seed(1))

    def linear(x: torch.Tensor) -> torch.Tensor:  # d(sum)/dx = weights, for every image
        return (x * weights).sum(dim=(1, 2, 3))[:, None]

    cam = sensitivity_map(linear, torch.zeros(2, 3, 18, 18), pool=9)
    expected = weights.sum(0).reshape(2, 9, 2, 9).mean(dim=(1, 3))
    assert cam.shape == (2, 2, 2)
    assert torch.allclose(cam[0], expected) and torch.allclose(cam[1], expected)


# ------------------------------------------------------------------------------------- full forward


def tiny_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x_global = torch.randn(2, 3, 64, 64, generator=g)
    images = torch.randint(0, 256, (2, 3, 128, 128), generator=g, dtype=torch.uint8)
    return x_global, images


def test_full_forward_builds_the_selected_mosaic():
    torch.manual_seed(0)
    model = create("vtiqa-org", tiny=True).eval()
    x_global, images = tiny_batch()
    with torch.inference_mode():
        score = model(x_global, images)
        again = model(x_global, images)
    assert score.shape == (2, 1) and torch.equal(score, again)
    # Rebuild the mosaic by hand from the normalised map: 4x4 cells of 16 px, 16x16 map, groups of 3.
    _, cam = model.saliency(x_global)
    mosaic = torch.empty(2, 3, 64, 64, dtype=torch.uint8)
    for n in range(2):
        for i in range(4):
            for j in range(4):
                block = cam[n, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3].flatten()
                x, y = divmod(int(block.argmax()), 3)
                r, c = int((1.5 + 3 * i + x) / 16 * 128), int((1.5 + 3 * j + y) / 16 * 128)
                mosaic[n, :, 16 * i : 16 * i + 16, 16 * j : 16 * j + 16] = images[n, :, r : r + 16, c : c + 16]
    assert torch.equal(model.select_mosaic(x_global, images), imagenet_normalize(mosaic))
    with torch.inference_mode():
        assert torch.allclose(score, model.score_views(x_global, imagenet_normalize(mosaic)), atol=1e-6)
    # A normalised float source gives the same mosaic.
    assert torch.allclose(model.select_mosaic(x_global, imagenet_normalize(images)), imagenet_normalize(mosaic))


def test_tiny_backward_reaches_backbone_and_fusion_only():
    torch.manual_seed(0)
    model = create("vtiqa-org", tiny=True).train()
    assert not model.selection.training  # the guide stays in eval mode
    x_global, images = tiny_batch()
    model(x_global, images).sum().backward()
    assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.fusion.head[1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.selection.parameters())


def test_fusion_ignores_its_positional_embedding():
    torch.manual_seed(0)
    fusion = create("vtiqa-org-fusion", tiny=True).eval()
    tokens = torch.randn(2, 2, 64)
    with torch.inference_mode():
        before = fusion(tokens)
        fusion.pos_embed.add_(1.0)
        after = fusion(tokens)
    assert before.shape == (2, 1) and torch.equal(before, after)


def test_part_checkpoints_are_checked_by_name(tmp_path):
    model = create("vtiqa-org", tiny=True)
    fusion_file = save_checkpoint(create("vtiqa-org-fusion", tiny=True), tmp_path / "fusion.safetensors")
    with pytest.raises(CheckpointError, match="for model 'vtiqa-org-fusion', not 'vtiqa-org-selection'"):
        load_checkpoint(model.selection, fusion_file)
    backbone = create("vtiqa-org-backbone", tiny=True).state_dict()
    with pytest.raises(CheckpointError, match=r"missing tensors, first: head\.1\.weight"):
        load_original_parts(model, backbone=backbone, fusion=backbone, selection=backbone)
    selection = {k: v for k, v in model.selection.state_dict().items() if k != "backbone.norm.bias"}
    with pytest.raises(CheckpointError, match=r"1 missing tensors, first: backbone\.norm\.bias"):
        load_checkpoint(model.selection, selection)


def test_authors_selection_names_map_onto_ours():
    torch.manual_seed(0)
    ours = create("vtiqa-org-selection", tiny=True).state_dict()
    authors = {k.removeprefix("backbone."): v for k, v in ours.items()}  # stock timm ViT layout
    loaded = load_checkpoint(create("vtiqa-org-selection", tiny=True), authors)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, ours[key]), key
