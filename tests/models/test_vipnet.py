"""VIPNet: fidelity to the authors' network, DPM/ImageNet weight import, frozen-branch BN modes, YCbCr inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from timm.models.resnet import Bottleneck, ResNet

from iqa_cli.errors import CheckpointError, ConfigError, DataError
from iqa_cli.models import create, load_checkpoint, save_checkpoint
from iqa_cli.models.vipnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    YCBCR_MEAN,
    YCBCR_STD,
    convert_original,
    load_cpm_weights,
    load_dpm_weights,
    normalize_rgb,
    normalize_ycbcr,
    rgb_to_ycbcr,
    vipnet_views,
)
from tests.reference_fixtures import assert_matches, filled_state_dict, find, load_fixture, make_inputs


@pytest.fixture(scope="module")
def vipnet_fixture():
    manifest, ref = load_fixture("vipnet")
    return manifest, ref, filled_state_dict(manifest)


def capture_outputs(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    for name in names:
        model.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out))
    return seen


@pytest.mark.reference
def test_matches_reference(vipnet_fixture):
    manifest, ref, filled = vipnet_fixture
    model = create("vipnet").eval()
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters_elements"]
    assert sum(t.numel() for t in model.state_dict().values()) == manifest["num_state_elements"]
    load_checkpoint(model, filled)
    seen = capture_outputs(model, ["cpm", "dpm", "vim", "norm"])
    x = make_inputs(ref)
    with torch.inference_mode():
        score = model(x["rgb"], x["ycbcr"])
    assert_matches(score, find(ref["outputs"], "score"), 1e-5, "score")
    inter = ref["intermediates"]
    assert_matches(seen["cpm"], find(inter, "f_content"), 1e-4, "f_content")
    assert_matches(seen["dpm"], find(inter, "f_distortion"), 1e-4, "f_distortion")
    assert_matches(seen["vim"], find(inter, "v = vim"), 1e-4, "vim tokens")
    assert_matches(seen["norm"], find(inter, "norm(v)[:, 0]"), 1e-4, "normed class token")


@pytest.mark.reference
def test_authors_release_layout_loads_identically(vipnet_fixture):
    _, _, filled = vipnet_fixture
    direct = load_checkpoint(create("vipnet"), filled).state_dict()
    # train.py saves {'epoch', 'state_dict' (DataParallel: `module.`), 'best_criterion', ...}.
    release = {"epoch": 3, "best_criterion": 0.9, "state_dict": {"module." + k: v for k, v in filled.items()}}
    wrapped = load_checkpoint(create("vipnet"), release).state_dict()
    assert wrapped.keys() == direct.keys()
    for key, value in direct.items():
        assert torch.equal(value, wrapped[key]), key


@pytest.mark.reference
def test_authors_missing_tensor_is_named_in_our_names(vipnet_fixture):
    _, _, filled = vipnet_fixture
    state = {k: v for k, v in filled.items() if k != "dpm.7.0.conv2.0.rel_h"}
    expected = r"1 missing tensors \(iqa's names; the file uses the authors' layout\), "
    expected += r"first: dpm\.layer4\.0\.attn\.pos_w"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(create("vipnet"), state)


@pytest.mark.reference
def test_pretrained_dpm_release_loads_into_the_dpm_branch():
    manifest, ref = load_fixture("vipnet_dpm")
    filled = filled_state_dict(manifest)
    # The DPM pre-training release: {'state_dict': DDP names, 'best_acc', ...}, with the 150-way head.
    model = load_dpm_weights(
        create("vipnet"), {"best_acc": 0.5, "state_dict": {"module." + k: v for k, v in filled.items()}}
    )
    with torch.inference_mode():
        features = model.dpm.eval()(make_inputs(ref)["ycbcr"])
    assert_matches(features, find(ref["intermediates"], "layer4 output"), 1e-4, "DPM branch layer4")


def tiny_inputs(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 64, 96, generator=g), torch.randn(batch, 3, 64, 96, generator=g)


def test_tiny_forward_backward_trains_only_the_unfrozen_parts():
    torch.manual_seed(0)
    model = create("vipnet", tiny=True)
    score = model(*tiny_inputs())
    assert score.shape == (2,)
    score.sum().backward()
    for name, p in model.named_parameters():
        frozen = name.startswith(("cpm.backbone.", "dpm."))
        assert p.requires_grad is not frozen, name
        if frozen:
            assert p.grad is None, name
    for name in ("cpm.sides.0.weight", "cpm.sides.3.weight", "vim.embed.weight", "vim.layers.0.attn.qkv.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    assert model.head.weight.grad.abs().sum() > 0


def test_unfrozen_backbones_get_gradients():
    torch.manual_seed(0)
    model = create("vipnet", tiny=True, freeze_cpm=False, freeze_dpm=False)
    model(*tiny_inputs()).sum().backward()
    assert model.cpm.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.dpm.layer4[0].attn.pos_h.grad.abs().sum() > 0


def test_batch_of_one_keeps_its_batch_axis():
    model = create("vipnet", tiny=True).eval()
    rgb, ycbcr = tiny_inputs(batch=1)
    with torch.inference_mode():
        assert model(rgb, ycbcr).shape == (1,)


def test_eval_forward_is_deterministic():
    torch.manual_seed(0)
    model = create("vipnet", tiny=True).eval()
    rgb, ycbcr = tiny_inputs()
    with torch.inference_mode():
        assert torch.equal(model(rgb, ycbcr), model(rgb, ycbcr))


def test_frozen_batchnorm_follows_train_mode_by_default():
    torch.manual_seed(0)
    model = create("vipnet", tiny=True).train()
    assert model.frozen_bn == "train" and model.dpm.bn1.training and model.cpm.backbone.bn1.training
    before = model.dpm.bn1.running_mean.clone()
    model(*tiny_inputs())
    assert not torch.equal(before, model.dpm.bn1.running_mean)  # the authors' statistics drift


def test_frozen_batchnorm_eval_mode_keeps_statistics():
    torch.manual_seed(0)
    model = create("vipnet", tiny=True, frozen_bn="eval").train()
    assert model.training and model.vim.training
    assert not model.dpm.bn1.training and not model.cpm.backbone.layer1[0].bn1.training
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model(*tiny_inputs())
    for key, value in before.items():
        assert torch.equal(value, model.state_dict()[key]), key
    model.freeze_branches(cpm=True, dpm=True, bn_mode="train")
    assert model.dpm.bn1.training
    with pytest.raises(ConfigError, match="frozen BatchNorm mode must be one of train, eval, not 'fixed'"):
        model.freeze_branches(bn_mode="fixed")


def test_wrong_input_shapes_are_refused():
    model = create("vipnet", tiny=True)
    rgb, ycbcr = tiny_inputs()
    with pytest.raises(DataError, match=r"VIPNet expects rgb and ycbcr of shape \(B, 3, 64, 96\)"):
        model(rgb[..., :64], ycbcr[..., :64])
    with pytest.raises(ConfigError, match="cpm_channels=100 leaves no room"):
        create("vipnet", tiny=True, cpm_channels=100)


def test_own_checkpoint_roundtrip_and_wrong_method(tmp_path):
    torch.manual_seed(0)
    model = create("vipnet", tiny=True).eval()
    path = save_checkpoint(model, tmp_path / "vipnet.safetensors")
    loaded = load_checkpoint(create("vipnet", tiny=True), path).eval()
    with torch.inference_mode():
        assert torch.equal(model(*tiny_inputs()), loaded(*tiny_inputs()))
    other = save_checkpoint(create("vipnet-dpm", tiny=True), tmp_path / "dpm.safetensors")
    with pytest.raises(CheckpointError, match="is for model 'vipnet-dpm', not 'vipnet'"):
        load_checkpoint(create("vipnet", tiny=True), other)
    state = model.state_dict()
    del state["head.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing tensors, first: head\.bias"):
        load_checkpoint(create("vipnet", tiny=True), state)


def test_dpm_checkpoint_of_ours_loads_into_vipnet(tmp_path):
    torch.manual_seed(0)
    dpm = create("vipnet-dpm", tiny=True)
    path = save_checkpoint(dpm, tmp_path / "dpm.safetensors")
    model = create("vipnet", tiny=True, dpm_weights=path)
    for key, value in model.dpm.state_dict().items():
        assert torch.equal(value, dpm.state_dict()[key]), key
    assert not any(p.requires_grad for p in model.dpm.parameters())  # loaded, then frozen
    wrong = save_checkpoint(create("vipnet", tiny=True), tmp_path / "vipnet.safetensors")
    with pytest.raises(CheckpointError, match="is for model 'vipnet', not the DPM 'vipnet-dpm'"):
        load_dpm_weights(model, wrong)
    narrow = create("vipnet-dpm", tiny=True, widths=(8, 16, 32, 32)).state_dict()
    with pytest.raises(CheckpointError, match=r"not a VIPNet DPM .*shape mismatches, first: layer4\.0\.conv1\.weight"):
        load_dpm_weights(model, narrow)


def test_imagenet_resnet_weights_load_into_the_content_backbone(tmp_path):
    torch.manual_seed(1)
    imagenet = ResNet(Bottleneck, (1, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=8, num_classes=10)
    path = tmp_path / "resnet.pth"
    torch.save(imagenet.state_dict(), path)  # torchvision layout: conv1, bn1, layer1..4, fc
    model = create("vipnet", tiny=True, cpm_weights=path)
    for key, value in model.cpm.backbone.state_dict().items():
        assert torch.equal(value, imagenet.state_dict()[key]), key
    with pytest.raises(CheckpointError, match="not a ResNet checkpoint for the VIPNet content branch"):
        load_cpm_weights(model, create("vipnet-dpm", tiny=True).state_dict())


def test_rgb_to_ycbcr_is_bit_exact_with_pil():
    # Every red value against a grid of green/blue values (incl. 0 and 255): 256 x 53 x 53 colours.
    steps = np.array(sorted(set(range(0, 256, 5)) | {255}), dtype=np.uint8)
    r, g, b = np.meshgrid(np.arange(256, dtype=np.uint8), steps, steps, indexing="ij")
    rgb = np.stack([r, g, b], axis=-1).reshape(256, -1, 3)
    expected = np.array(Image.fromarray(rgb).convert("YCbCr"))
    ours = rgb_to_ycbcr(torch.from_numpy(rgb).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    assert ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, expected)
    batch = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).repeat(2, 1, 1, 1)
    assert torch.equal(rgb_to_ycbcr(batch)[1], torch.from_numpy(expected).permute(2, 0, 1))
    with pytest.raises(DataError, match="expects uint8 RGB images"):
        rgb_to_ycbcr(batch.float())


def test_normalisation_matches_the_fixture_statistics():
    _, ref = load_fixture("vipnet")
    stats = {spec["name"]: (tuple(spec["mean"]), tuple(spec["std"])) for spec in ref["input_recipe"]["inputs"]}
    assert stats["rgb"] == (IMAGENET_MEAN, IMAGENET_STD)
    assert stats["ycbcr"] == (YCBCR_MEAN, YCBCR_STD)
    image = torch.randint(0, 256, (2, 3, 8, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(YCBCR_MEAN).view(3, 1, 1), torch.tensor(YCBCR_STD).view(3, 1, 1)
    assert torch.allclose(normalize_ycbcr(image), (image.float() / 255 - mean) / std)
    assert torch.equal(normalize_ycbcr(image), normalize_ycbcr(image.float() / 255))
    rgb_view, ycbcr_view = vipnet_views(image)
    assert torch.equal(rgb_view, normalize_rgb(image))
    assert torch.equal(ycbcr_view, normalize_ycbcr(rgb_to_ycbcr(image)))


@pytest.mark.parametrize(
    "arch,multi_scale,content_channels",
    [("resnet18", True, 2048), ("resnet34", True, 2048), ("resnet18", False, 512), ("resnet50", False, 2048)],
)
def test_content_branch_backbones_and_single_scale_follow_configs_py(arch, multi_scale, content_channels):
    """configs.py --cpm and --multi_scale: the side convs of ResNet-18/34 keep the authors' widths (32, 64,
    128 and cpm_channels - 224); single-scale is the layer-4 map alone (512 or 2048 channels)."""
    with torch.device("meta"):
        model = create("vipnet", cpm_arch=arch, multi_scale=multi_scale)
    assert model.cpm.out_channels == content_channels
    assert model.vim.embed.in_channels == content_channels + 2048
    if multi_scale:
        assert [side.out_channels for side in model.cpm.sides] == [32, 64, 128, 2048 - 224]
        assert [side.in_channels for side in model.cpm.sides] == [64, 128, 256, 512]
    else:
        assert len(model.cpm.sides) == 0
    blocks = [len(getattr(model.cpm.backbone, f"layer{i}")) for i in range(1, 5)]
    assert blocks == ([2, 2, 2, 2] if arch == "resnet18" else [3, 4, 6, 3])


@pytest.mark.parametrize("arch,multi_scale", [("resnet18", True), ("resnet34", False)])
def test_tiny_content_branch_variants_run_and_load_imagenet_weights(arch, multi_scale):
    torch.manual_seed(0)
    model = create("vipnet", tiny=True, cpm_arch=arch, multi_scale=multi_scale).eval()
    h, w = model.resolution
    rgb = torch.randn(2, 3, h, w)
    with torch.inference_mode():
        assert model(rgb, rgb).shape == (2,)
    # The backbone loads a torchvision-layout ResNet of the same shape (its classifier is dropped).
    donor = create("vipnet", tiny=True, cpm_arch=arch, multi_scale=multi_scale).cpm.backbone.state_dict()
    load_cpm_weights(model, {**donor, "fc.weight": torch.zeros(10, 64), "fc.bias": torch.zeros(10)})
    assert torch.equal(model.cpm.backbone.conv1.weight, donor["conv1.weight"])
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad and n.startswith("cpm.")}
    assert trainable == ({"sides"} if multi_scale else set())  # the frozen backbone; only side convs train


def test_single_scale_authors_keys_map_onto_the_backbone():
    state = {"cpm.0.weight": 1, "cpm.1.running_var": 2, "cpm.4.0.conv1.weight": 3, "cpm.7.2.bn3.bias": 4}
    assert convert_original(state) == {
        "cpm.backbone.conv1.weight": 1,
        "cpm.backbone.bn1.running_var": 2,
        "cpm.backbone.layer1.0.conv1.weight": 3,
        "cpm.backbone.layer4.2.bn3.bias": 4,
    }


def test_unknown_content_backbone_is_refused():
    with pytest.raises(ConfigError, match="unknown VIPNet content backbone 'resnet101'"):
        create("vipnet", tiny=True, cpm_arch="resnet101")
