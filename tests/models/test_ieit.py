"""IEIT: fidelity to the authors' `MyModel3`, both regressors, and the enhanced-image selection rule."""

from __future__ import annotations

import pytest
import torch

from iqa_cli.errors import CheckpointError
from iqa_cli.models import create, load_checkpoint, save_checkpoint
from iqa_cli.models.ieit import apply_selection, imagenet_probabilities, select_enhanced
from iqa_cli.models.vit import ViTEncoder
from tests.reference_fixtures import assert_matches, filled_state_dict, find, load_fixture, make_inputs


@pytest.mark.reference
@pytest.mark.parametrize("prefix", ["", "module."])
def test_matches_reference(prefix):
    manifest, ref = load_fixture("ieit")
    model = create("ieit").eval()
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters_elements"]
    load_checkpoint(model, {prefix + k: v for k, v in filled_state_dict(manifest).items()})
    x = make_inputs(ref)
    with torch.inference_mode():
        f1_i, f2_i, f2_e = model.features(x["x_original"], x["x_enhanced"])
        score = model(x["x_original"], x["x_enhanced"])
        s2 = model.regressor2(torch.cat([f2_i, f2_e], dim=1))  # what forward_both / score_pair compute
    inter = ref["intermediates"]
    assert_matches(score, find(ref["outputs"], "score"), 1e-5, "score")
    assert_matches(f1_i, find(inter, "model1(x_original)"), 1e-4, "model1(I)")
    assert_matches(f2_i, find(inter, "model2(x_original)"), 1e-4, "model2(I)")
    assert_matches(f2_e, find(inter, "model2(x_enhanced)"), 1e-4, "model2(E)")
    assert_matches(s2, find(inter, "model4("), 1e-5, "regressor 2")


def tiny_pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 3, 64, 64, generator=g)


def test_tiny_forward_backward_both_heads():
    torch.manual_seed(0)
    model = create("ieit", tiny=True)
    s1, s2 = model.forward_both(*tiny_pair())
    assert s1.shape == s2.shape == (2, 1)
    (s1.sum() + s2.sum()).backward()
    for part in (model.encoder1, model.encoder2, model.regressor1, model.regressor2):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert model.encoder1.head.weight.grad is None  # the ImageNet head is kept but never used for quality


def test_both_heads_agree_with_forward_and_score_pair():
    torch.manual_seed(0)
    model = create("ieit", tiny=True).eval()
    x_original, x_enhanced = tiny_pair()
    with torch.inference_mode():
        s1, s2 = model.forward_both(x_original, x_enhanced)
        _, f2_i, f2_e = model.features(x_original, x_enhanced)
        assert torch.equal(s1, model(x_original, x_enhanced))
        assert torch.equal(s2, model.score_pair(x_original, x_enhanced))
        assert torch.equal(s2, model.regressor2(torch.cat([f2_i, f2_e], dim=1)))


def test_eval_forward_is_deterministic_and_encoders_are_independent():
    torch.manual_seed(0)
    model = create("ieit", tiny=True).eval()
    with torch.inference_mode():
        assert torch.equal(model(*tiny_pair()), model(*tiny_pair()))
        assert torch.equal(model.encoder1.cls_token, model.encoder2.cls_token)  # same start (deepcopy)
        model.encoder2.cls_token.add_(1.0)
        assert not torch.equal(model.encoder1.cls_token, model.encoder2.cls_token)  # separate storage


def test_authors_names_map_onto_ours():
    torch.manual_seed(0)
    ours = create("ieit", tiny=True).state_dict()
    rename = {"encoder1.": "model1.", "encoder2.": "model2.", "regressor1.": "model3.", "regressor2.": "model4."}
    authors = {}
    for key, value in ours.items():
        prefix = next(p for p in rename if key.startswith(p))
        authors["module." + rename[prefix] + key[len(prefix) :]] = value
    assert "module.model3.5.bias" in authors and "module.model1.head.weight" in authors
    loaded = load_checkpoint(create("ieit", tiny=True), authors)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, ours[key]), key


def test_wrong_or_incomplete_checkpoints_are_named(tmp_path):
    path = save_checkpoint(create("vtiqa", tiny=True), tmp_path / "vtiqa.safetensors")
    with pytest.raises(CheckpointError, match="for model 'vtiqa', not 'ieit'"):
        load_checkpoint(create("ieit", tiny=True), path)
    state = create("ieit", tiny=True).state_dict()
    del state["regressor2.1.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing tensors, first: regressor2\.1\.weight"):
        load_checkpoint(create("ieit", tiny=True), state)


def test_backbone_weights_start_both_encoders(tmp_path):
    torch.manual_seed(2)
    deit = ViTEncoder(img_size=64, embed_dim=64, depth=2, num_heads=2, imagenet_head=True)
    path = tmp_path / "deit.pth"
    torch.save({"model": deit.state_dict()}, path)
    model = create("ieit", tiny=True, backbone_weights=path)
    for key, value in deit.state_dict().items():
        assert torch.equal(model.encoder1.state_dict()[key], value), key
        assert torch.equal(model.encoder2.state_dict()[key], value), key


def test_select_enhanced_keeps_e_unless_less_confident():
    original = torch.tensor([[0.7, 0.3], [0.5, 0.5], [0.6, 0.4], [0.2, 0.8]])
    enhanced = torch.tensor([[0.1, 0.9], [0.5, 0.5], [0.55, 0.45], [0.8, 0.2]])
    # max 0.9 >= 0.7 keep; tie 0.5 >= 0.5 keep; 0.55 < 0.6 original; 0.8 >= 0.8 keep (another class)
    assert select_enhanced(original, enhanced).tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="one shape"):
        select_enhanced(original, enhanced[:3])


def test_apply_selection_swaps_rejected_images():
    original = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    enhanced = torch.full((3, 3, 4, 4), 9, dtype=torch.uint8)
    chosen = apply_selection(original, enhanced, torch.tensor([True, False, True]))
    assert chosen[:, 0, 0, 0].tolist() == [9, 0, 9] and chosen.dtype == torch.uint8


def test_imagenet_probabilities_from_the_kept_head():
    torch.manual_seed(0)
    encoder = ViTEncoder(img_size=64, embed_dim=64, depth=2, num_heads=2, imagenet_head=True).eval()
    with torch.inference_mode():
        prob = imagenet_probabilities(encoder, torch.randn(2, 3, 64, 64))
    assert prob.shape == (2, 1000) and torch.allclose(prob.sum(1), torch.ones(2))
    with pytest.raises(RuntimeError, match="without its ImageNet head"):
        ViTEncoder(img_size=64, embed_dim=64, depth=2, num_heads=2).classify(torch.randn(1, 3, 64, 64))
