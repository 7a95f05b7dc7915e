"""SSL-IQA teacher and student: fidelity to the authors' networks, tiny configs, backbone weights."""

from __future__ import annotations

import pytest
import torch
import torchvision

from iqa_cli.errors import CheckpointError, ConfigError
from iqa_cli.models import create, get_entry, load_checkpoint
from iqa_cli.models.ssliqa import SSLIQAPair, SSLStudent, SSLTeacher, expected_score, load_backbone_weights
from tests.reference_fixtures import assert_matches, filled_state_dict, find, load_fixture, make_inputs


def _run_with_taps(model: torch.nn.Module, x: torch.Tensor, taps: list[str]) -> tuple[tuple, dict]:
    """One eval forward under inference_mode, keeping the outputs of the named submodules."""
    seen: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [modules[name].register_forward_hook(lambda _m, _i, out, n=name: seen.__setitem__(n, out)) for name in taps]
    try:
        with torch.inference_mode():
            outputs = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs, seen


@pytest.mark.reference
def test_teacher_matches_reference(prefix=""):  # `module.` names: see the student's test and test_checkpoint.py
    manifest, ref = load_fixture("ssliqa_teacher")
    model = create("ssliqa-teacher").eval()
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters_elements"]
    load_checkpoint(model, {prefix + k: v for k, v in filled_state_dict(manifest).items()})
    taps = ["base.3", "base.4", "base.5", "base.6", "base.7", "fc.0", "fc.1", "fc.3", "fc.4"]
    (prob, activation), seen = _run_with_taps(model, make_inputs(ref)["x"], taps)
    outputs, inter = ref["outputs"], ref["intermediates"]
    # The teacher's outputs barely depend on the input under the fixture's fill (see its README);
    # the stage outputs and the pooled activation below are what check the trunk.
    assert_matches(prob, find(outputs, "prob"), 1e-5, "prob")
    assert_matches(activation, find(outputs, "activation"), 1e-5, "activation")
    assert_matches(expected_score(prob), find(outputs, "mos"), 1e-5, "mos")
    assert_matches(seen["base.3"], find(inter, "stem output"), 1e-4, "stem")
    for stage in range(4, 8):
        assert_matches(seen[f"base.{stage}"], find(inter, f"base.{stage} "), 1e-4, f"base.{stage}")
    assert_matches(activation[:, :512], find(inter, "activation[:, :512]"), 1e-4, "activation[:, :512]")
    assert_matches(seen["fc.0"], find(inter, "fc.0 output"), 1e-4, "fc.0")
    assert_matches(seen["fc.1"], find(inter, "fc.1 output"), 1e-4, "fc.1")
    assert_matches(seen["fc.3"], find(inter, "fc.2 -> ReLU"), 1e-4, "fc.2 -> ReLU")
    assert_matches(seen["fc.4"], find(inter, "logits"), 1e-4, "logits")


@pytest.mark.reference
@pytest.mark.parametrize("prefix", ["", "module."])
def test_student_matches_reference(prefix):
    manifest, ref = load_fixture("ssliqa_student")
    model = create("ssliqa-student").eval()
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters_elements"]
    load_checkpoint(model, {prefix + k: v for k, v in filled_state_dict(manifest).items()})
    taps = ["base.0.2", "base.0.5", "base.0.12", "fc.1", "fc.2"]
    (prob, activation), seen = _run_with_taps(model, make_inputs(ref)["x"], taps)
    outputs, inter = ref["outputs"], ref["intermediates"]
    assert_matches(prob, find(outputs, "prob"), 1e-5, "prob")
    assert_matches(activation, find(outputs, "activation"), 1e-5, "activation")
    assert_matches(expected_score(prob), find(outputs, "mos"), 1e-5, "mos")
    with torch.inference_mode():
        assert_matches(model.score(make_inputs(ref)["x"]), find(outputs, "mos"), 1e-5, "score()")
    assert_matches(seen["base.0.2"], find(inter, "base.0[:3]"), 1e-4, "after MaxPool 2")
    assert_matches(seen["base.0.5"], find(inter, "base.0[:6]"), 1e-4, "after MaxPool 5")
    assert_matches(seen["base.0.12"], find(inter, "base.0[:13]"), 1e-4, "after MaxPool 12")
    assert_matches(seen["fc.1"], find(inter, "fc.0 -> ReLU"), 1e-4, "fc.0 -> ReLU")
    assert_matches(seen["fc.2"], find(inter, "logits"), 1e-4, "logits")


def test_expected_score_is_the_rating_expectation():
    prob = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0], [0.2, 0.2, 0.2, 0.2, 0.2], [0, 0.5, 0, 0.5, 0]])
    assert torch.allclose(expected_score(prob), torch.tensor([1.0, 5.0, 3.0, 3.0]))


@pytest.mark.parametrize("name,feature_dim", [("ssliqa-teacher", 512), ("ssliqa-student", 256)])
def test_tiny_forward_backward(name, feature_dim):
    torch.manual_seed(0)
    model = create(name, tiny=True)
    x = torch.randn(2, 3, 64, 64)
    prob, activation = model(x)
    assert prob.shape == (2, 5) and activation.shape == (2, feature_dim)
    assert torch.allclose(prob.sum(dim=1), torch.ones(2))
    score = expected_score(prob)
    assert ((score >= 1) & (score <= 5)).all()
    (score.sum() + activation.pow(2).mean()).backward()
    first_conv = model.base[0] if name == "ssliqa-teacher" else model.base[0][0]
    assert first_conv.weight.grad.abs().sum() > 0
    assert model.fc[0].weight.grad.abs().sum() > 0


def test_teacher_layout_follows_the_authors():
    teacher = SSLTeacher(arch="resnet18", head_dims=(8, 6, 4))
    # No nonlinearity between the first three Linear layers; ReLU only before the last one.
    kinds = [type(m).__name__ for m in teacher.fc]
    assert kinds == ["Linear", "Linear", "Linear", "ReLU", "Linear", "Softmax"]
    assert teacher.backbone_names == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    assert teacher.fc[0].in_features == 512
    assert SSLStudent().backbone_names == ["features"]


def test_eval_forward_is_deterministic():
    torch.manual_seed(0)
    model = create("ssliqa-teacher", tiny=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        first, second = model(x), model(x)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_pair_holds_both_branches_and_scores_with_the_student():
    torch.manual_seed(0)
    pair = create("ssliqa", tiny=True).eval()
    assert isinstance(pair, SSLIQAPair)
    assert isinstance(pair.student, SSLStudent) and isinstance(pair.teacher, SSLTeacher)
    assert pair.teacher.arch == "resnet18"
    assert {k.split(".")[0] for k in pair.state_dict()} == {"student", "teacher"}
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(pair(x)[0], pair.student(x)[0])
        assert torch.equal(pair.score(x), expected_score(pair.student(x)[0]))
    assert create("ssliqa").teacher.arch == "resnet101"


def test_unknown_teacher_arch_is_refused():
    with pytest.raises(ConfigError, match="unknown SSL-IQA teacher arch 'vgg11'"):
        create("ssliqa-teacher", arch="vgg11")


def test_registry_entries():
    assert get_entry("ssliqa-teacher").tiny_config["arch"] == "resnet18"
    assert "(B,3,224,224)" in get_entry("ssliqa-student").inputs
    manifest, _ref = load_fixture("ssliqa_teacher")
    with torch.device("meta"):  # `iqa models` counts parameters on the meta device
        teacher = create("ssliqa-teacher")
    assert sum(p.numel() for p in teacher.parameters()) == manifest["num_parameters_elements"]


@pytest.mark.parametrize("arch", ["alexnet", "resnet18"])
def test_torchvision_backbone_weights_load_into_base(tmp_path, arch):
    torch.manual_seed(0)
    branch = SSLStudent() if arch == "alexnet" else SSLTeacher(arch="resnet18", head_dims=(8, 6, 4))
    imagenet = getattr(torchvision.models, arch)(weights=None)  # stands in for the ImageNet file
    path = tmp_path / f"{arch}.pth"
    torch.save(imagenet.state_dict(), path)
    head_before = branch.fc[0].weight.clone()
    load_backbone_weights(branch, path)
    mine = branch.base.state_dict()
    if arch == "alexnet":
        assert torch.equal(mine["0.0.weight"], imagenet.features[0].weight)
        assert torch.equal(mine["0.10.bias"], imagenet.features[10].bias)
    else:
        assert torch.equal(mine["0.weight"], imagenet.conv1.weight)
        assert torch.equal(mine["7.1.bn2.running_var"], imagenet.layer4[1].bn2.running_var)
    assert torch.equal(branch.fc[0].weight, head_before)  # the head is not touched


def test_backbone_weights_of_another_network_are_refused():
    branch = SSLTeacher(arch="resnet18", head_dims=(8, 6, 4))
    with pytest.raises(CheckpointError, match=r"do not fit .*unexpected tensors, first: base\.4\.2\.conv1\.weight"):
        load_backbone_weights(branch, torchvision.models.resnet34(weights=None).state_dict())
    with pytest.raises(CheckpointError, match=r"shape mismatches, first: base\.4\.0\.conv1\.weight"):
        load_backbone_weights(branch, torchvision.models.resnet50(weights=None).state_dict())
