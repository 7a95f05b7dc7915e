"""VT-IQA (released, simplified): fidelity to the authors' network, tiny-config behaviour, view building."""

from __future__ import annotations

import pytest
import torch

from iqa_cli.errors import CheckpointError
from iqa_cli.models import create, load_checkpoint, save_checkpoint
from iqa_cli.models.vit import ViTEncoder
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
