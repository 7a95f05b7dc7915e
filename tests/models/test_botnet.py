"""BoTNet-50 / VIPNet DPM (`vipnet-dpm`): fidelity to the authors' network, tiny-config behaviour, checkpoints."""

from __future__ import annotations

import pytest
import torch

from iqa_cli.errors import CheckpointError, ConfigError, DataError
from iqa_cli.models import create, load_checkpoint, save_checkpoint
from iqa_cli.models.botnet import BoTNet, RelPosSelfAttention
from tests.reference_fixtures import assert_matches, filled_state_dict, find, load_fixture, make_inputs


@pytest.fixture(scope="module")
def dpm_fixture():
    manifest, ref = load_fixture("vipnet_dpm")
    return manifest, ref, filled_state_dict(manifest)


def capture_outputs(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """Record the outputs of the named submodules during the next forward passes."""
    seen: dict[str, torch.Tensor] = {}
    for name in names:
        model.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out))
    return seen


@pytest.mark.reference
def test_matches_reference(dpm_fixture):
    manifest, ref, filled = dpm_fixture
    model = create("vipnet-dpm").eval()
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters_elements"]
    assert sum(t.numel() for t in model.state_dict().values()) == manifest["num_state_elements"]
    load_checkpoint(model, filled)
    seen = capture_outputs(model, ["layer1", "layer2", "layer3", "layer4", "pool"])
    with torch.inference_mode():
        logits = model(make_inputs(ref)["ycbcr"])
    assert_matches(logits, find(ref["outputs"], "logits_150"), 1e-5, "logits")
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        assert_matches(seen[stage], find(ref["intermediates"], f"{stage} output"), 1e-4, stage)
    assert_matches(seen["pool"].flatten(1), find(ref["intermediates"], "avgpool"), 1e-4, "pooled 8192")


@pytest.mark.reference
def test_authors_release_layout_loads_identically(dpm_fixture):
    manifest, _, filled = dpm_fixture
    direct = load_checkpoint(create("vipnet-dpm"), filled).state_dict()
    # The pre-training script saves {'epoch', 'arch', 'state_dict' (DDP: `module.`), 'best_acc'}.
    release = {"epoch": 40, "arch": "botnet", "state_dict": {"module." + k: v for k, v in filled.items()}}
    wrapped = load_checkpoint(create("vipnet-dpm"), release).state_dict()
    assert wrapped.keys() == direct.keys()
    for key, value in direct.items():
        assert torch.equal(value, wrapped[key]), key
    # Our names are readable: the attention and shortcut modules are named, not numbered.
    assert "layer4.0.attn.pos_w" in direct and "layer1.0.shortcut.conv.bias" in direct
    authors_shapes = {key: tuple(shape) for key, shape, _ in manifest["keys"]}
    assert direct["layer4.0.attn.pos_w"].shape == authors_shapes["layer4.0.conv2.0.rel_h"]
    assert direct["layer4.0.attn.pos_h"].shape == authors_shapes["layer4.0.conv2.0.rel_w"]


def tiny_input(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 96, generator=torch.Generator().manual_seed(seed))


def test_tiny_forward_backward():
    torch.manual_seed(0)
    model = create("vipnet-dpm", tiny=True)
    logits = model(tiny_input())
    assert logits.shape == (2, 150)
    logits.logsumexp(dim=1).sum().backward()
    for name in ("conv1.weight", "layer1.0.shortcut.conv.bias", "layer4.0.attn.pos_h", "layer4.0.attn.pos_w"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    assert model.classifier.weight.grad.abs().sum() > 0


def test_tiny_trunk_shapes():
    trunk = BoTNet(layers=(1, 2, 1, 2), widths=(8, 16, 32, 64), heads=2, resolution=(64, 96), num_classes=None)
    stages = trunk.eval().forward_stages(tiny_input())
    assert [tuple(s.shape) for s in stages] == [(2, 32, 16, 24), (2, 64, 8, 12), (2, 128, 4, 6), (2, 256, 2, 3)]
    # Stage 4: block 0 attends at 1/16 of the input and then pools, later blocks at 1/32.
    assert trunk.layer4[0].attn.size == (4, 6) and isinstance(trunk.layer4[0].pool, torch.nn.AvgPool2d)
    assert trunk.layer4[1].attn.size == (2, 3) and isinstance(trunk.layer4[1].pool, torch.nn.Identity)
    assert trunk.layer2[0].conv2.stride == (2, 2) and trunk.layer2[0].shortcut.conv.stride == (2, 2)
    assert trunk(tiny_input()).shape == (2, 256, 2, 3)


def test_attention_logits_follow_the_botnet_formula():
    torch.manual_seed(0)
    attn = RelPosSelfAttention(dim=4, size=(2, 3), heads=2).eval()
    x = torch.randn(1, 4, 2, 3)
    q, k, v = (conv(x).view(2, 2, 6) for conv in (attn.query, attn.key, attn.value))  # (heads, d, N)
    out = torch.empty(2, 2, 6)
    for h in range(2):
        for i in range(6):
            r, c = divmod(i, 3)  # row-major query position
            pos = attn.pos_h[0, h, :, r, 0] + attn.pos_w[0, h, :, 0, c]
            logits = torch.stack([q[h, :, i] @ k[h, :, j] + pos @ q[h, :, j] for j in range(6)])  # no 1/sqrt(d)
            out[h, :, i] = v[h] @ logits.softmax(0)
    with torch.no_grad():
        assert torch.allclose(attn(x), out.view(1, 4, 2, 3), atol=1e-6)


def test_eval_forward_is_deterministic():
    torch.manual_seed(0)
    model = create("vipnet-dpm", tiny=True).eval()
    x = tiny_input()
    with torch.inference_mode():
        assert torch.equal(model(x), model(x))


def test_bad_resolution_and_input_are_refused():
    with pytest.raises(ConfigError, match="multiple of 32"):
        BoTNet(resolution=(300, 400))
    model = create("vipnet-dpm", tiny=True)
    with pytest.raises(DataError, match=r"expects \(B, 3, 64, 96\) input, got \(2, 3, 64, 64\)"):
        model(torch.zeros(2, 3, 64, 64))


def test_own_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = create("vipnet-dpm", tiny=True).eval()
    path = save_checkpoint(model, tmp_path / "dpm.safetensors")
    loaded = load_checkpoint(create("vipnet-dpm", tiny=True), path).eval()
    with torch.inference_mode():
        assert torch.equal(model(tiny_input()), loaded(tiny_input()))


def test_wrong_method_and_missing_tensors_are_named(tmp_path):
    path = save_checkpoint(create("vipnet", tiny=True), tmp_path / "vipnet.safetensors")
    with pytest.raises(CheckpointError, match="is for model 'vipnet', not 'vipnet-dpm'"):
        load_checkpoint(create("vipnet-dpm", tiny=True), path)
    with pytest.raises(CheckpointError, match=r"missing tensors, first: conv1\.weight"):
        load_checkpoint(create("vipnet-dpm", tiny=True), create("vipnet", tiny=True).state_dict())
    state = create("vipnet-dpm", tiny=True).state_dict()
    del state["layer4.0.attn.pos_h"]
    with pytest.raises(CheckpointError, match=r"1 missing tensors, first: layer4\.0\.attn\.pos_h"):
        load_checkpoint(create("vipnet-dpm", tiny=True), state)
    state = create("vipnet-dpm", tiny=True).state_dict()
    state["classifier.weight"] = torch.zeros(25, 1024)
    with pytest.raises(CheckpointError, match=r"classifier\.weight \(25, 1024\) \(expected \(150, 1024\)\)"):
        load_checkpoint(create("vipnet-dpm", tiny=True), state)


def authors_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our BoTNet names back to the authors' (`pretraining/BoTNet.py`), for building release-like files."""
    renames = (
        (".attn.pos_w", ".conv2.0.rel_h"),
        (".attn.pos_h", ".conv2.0.rel_w"),
        (".attn.", ".conv2.0."),
        (".shortcut.conv.", ".shortcut.0."),
        (".shortcut.bn.", ".shortcut.1."),
    )
    out = {}
    for key, value in state.items():
        for ours, theirs in renames:
            key = key.replace(ours, theirs)
        out[key.replace("classifier.", "fc.1.", 1) if key.startswith("classifier.") else key] = value
    return out


def test_release_file_with_optimizer_state_loads(tmp_path):
    torch.manual_seed(0)
    model = create("vipnet-dpm", tiny=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    model(tiny_input()).logsumexp(1).sum().backward()
    optimizer.step()
    release = {
        "epoch": 1,
        "arch": "botnet",
        "state_dict": {"module." + k: v for k, v in authors_names(model.state_dict()).items()},
        "best_acc": torch.tensor(12.5),
        "optimizer": optimizer.state_dict(),
    }
    assert "module.layer4.0.conv2.0.rel_h" in release["state_dict"]
    path = tmp_path / "botnet_model_best.pth.tar"
    torch.save(release, path)
    loaded = load_checkpoint(create("vipnet-dpm", tiny=True), path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
