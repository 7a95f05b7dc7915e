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
    pair = create("ssliqa", tiny=True, network="alexnet").eval()
    assert isinstance(pair, SSLIQAPair)
    assert isinstance(pair.student, SSLStudent) and isinstance(pair.teacher, SSLTeacher)
    assert pair.teacher.arch == "resnet18"
    assert {k.split(".")[0] for k in pair.state_dict()} == {"student", "teacher"}
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(pair(x)[0], pair.student(x)[0])
        assert torch.equal(pair.score(x), expected_score(pair.student(x)[0]))
    with torch.device("meta"):
        assert create("ssliqa", network="alexnet").teacher.arch == "resnet101"
        assert type(create("ssliqa").teacher).__name__ == "SSLTReS"  # train_kd_semi.py's default pair


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


# ------------------------------------------------------------------ the other pairs of train_kd_semi.py


def _filled(manifest: dict, model: torch.nn.Module, keep: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The fixture fill, except keys in `keep`, which keep the model's own values (fixed buffers)."""
    state = filled_state_dict(manifest)
    own = model.state_dict()
    for key in keep:
        state[key] = own[key].clone()
    return state


@pytest.mark.reference
def test_tres_teacher_matches_reference():
    from iqa_cli.models.tres import sine_position_embedding

    manifest, ref = load_fixture("ssliqa_tres")
    model = create("ssliqa-tres").eval()
    assert [k for k, _s, _d in manifest["keys"]] == list(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters_elements"]
    # The four L2-pooling kernels are fixed Hanning buffers: the fixture keeps them unfilled (its README).
    filters = tuple(f"L2pooling_l{i}.filter" for i in range(1, 5))
    expected_kernel = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    assert all(torch.equal(model.state_dict()[k][0, 0], expected_kernel) for k in filters)
    load_checkpoint(model, _filled(manifest, model, keep=filters))
    taps = [
        "model.layer1",
        "model.layer2",
        "model.layer3",
        "model.layer4",
        "L2pooling_l1",
        "L2pooling_l2",
        "L2pooling_l3",
        "transformer.encoder.layers.0",
        "transformer.encoder.layers.1",
        "transformer",
        "fc2",
        "fc",
    ]
    inputs: dict[str, torch.Tensor] = {}
    hook = model.transformer.register_forward_pre_hook(lambda _m, args: inputs.__setitem__("layers", args[0]))
    try:
        (prob, activation), seen = _run_with_taps(model, make_inputs(ref)["x"], taps)
    finally:
        hook.remove()
    outputs, inter = ref["outputs"], ref["intermediates"]
    assert_matches(prob, find(outputs, "prob"), 1e-5, "prob")
    assert_matches(expected_score(prob), find(outputs, "mos"), 1e-5, "mos")
    assert_matches(activation, find(outputs, "activation"), 1e-4, "activation")
    for i in range(1, 5):
        assert_matches(seen[f"model.layer{i}"], find(inter, f"model.layer{i} output"), 1e-4, f"l{i}")
    for i in range(1, 4):
        assert_matches(seen[f"L2pooling_l{i}"], find(inter, f"L2pooling_l{i}("), 1e-4, f"L2pooling_l{i}")
    with torch.inference_mode():
        classifier = model.model.fc(seen["model.layer4"].mean(dim=(2, 3)))
    assert_matches(classifier, find(inter, "model.fc output"), 1e-4, "model.fc")
    assert_matches(sine_position_embedding(3840, 7, 7), find(inter, "pos_enc_1"), 1e-5, "pos_enc_1")
    assert_matches(inputs["layers"], find(inter, "layers = cat"), 1e-4, "layers")
    for i in range(2):
        label = f"transformer.encoder.layers.{i} output"
        assert_matches(seen[f"transformer.encoder.layers.{i}"], find(inter, label), 1e-4, label)
    assert_matches(seen["transformer"], find(inter, "out_t_c"), 1e-4, "out_t_c")
    pooled = seen["transformer"].mean(dim=(2, 3))
    assert_matches(pooled, find(inter, "flatten(avg7(out_t_c)) (B"), 1e-4, "avg7(out_t_c)")
    assert_matches(pooled[:, :512], find(inter, "flatten(avg7(out_t_c))[:, :512]"), 1e-4, "avg7(out_t_c)[:512]")
    assert_matches(seen["fc2"], find(inter, "out_t_o"), 1e-4, "fc2")
    assert_matches(activation[:, 2048:], find(inter, "layer4_o"), 1e-4, "layer4_o")
    assert_matches(activation[:, :512], find(inter, "activation[:, :512]"), 1e-4, "activation[:, :512]")
    assert_matches(activation[:, 2048:2560], find(inter, "activation[:, 2048:2560]"), 1e-4, "activation[2048:]")
    assert_matches(seen["fc"], find(inter, "logits"), 1e-4, "logits")


def _check_wide_head(activation: torch.Tensor, seen: dict, inter: dict) -> None:
    """The Linear-Linear-ReLU-Linear head the GoogLeNet and InceptionResNetV2 branches share."""
    assert_matches(activation[:, :512], find(inter, "activation[:, :512]"), 1e-6, "activation[:, :512]")
    assert_matches(seen["fc.0"], find(inter, "fc.0 output"), 1e-6, "fc.0")
    assert_matches(seen["fc.1"], find(inter, "fc.1 output"), 1e-6, "fc.1")
    assert_matches(seen["fc.2"], find(inter, "fc.1 -> ReLU"), 1e-6, "ReLU")
    assert_matches(seen["fc.3"], find(inter, "logits"), 1e-6, "logits")


@pytest.mark.reference
def test_inceptionresnetv2_teacher_matches_reference():
    manifest, ref = load_fixture("ssliqa_inceptionresnetv2")
    model = create("ssliqa-inceptionresnetv2").eval()
    assert [k for k, _s, _d in manifest["keys"]] == list(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters_elements"]
    load_checkpoint(model, filled_state_dict(manifest))
    stages = [f"base.{i}" for i in range(6, 15)]
    (prob, activation), seen = _run_with_taps(model, make_inputs(ref)["x"], [*stages, "fc.0", "fc.1", "fc.2", "fc.3"])
    outputs, inter = ref["outputs"], ref["intermediates"]
    assert_matches(prob, find(outputs, "prob"), 1e-6, "prob")
    assert_matches(expected_score(prob), find(outputs, "mos"), 1e-5, "mos")
    assert_matches(activation, find(outputs, "activation"), 1e-5, "activation")
    # The outputs barely depend on the input under the fill (fixture README): the stage outputs do.
    assert_matches(seen["base.6"], find(inter, "base.0-6 stem"), 1e-5, "stem")
    for name in stages[1:]:
        assert_matches(seen[name], find(inter, f"{name} ("), 1e-5, name)
    _check_wide_head(activation, seen, inter)


@pytest.mark.reference
def test_googlenet_student_matches_reference():
    manifest, ref = load_fixture("ssliqa_googlenet")
    model = create("ssliqa-googlenet").eval()
    assert [k for k, _s, _d in manifest["keys"]] == list(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters_elements"]
    load_checkpoint(model, filled_state_dict(manifest))
    taps = ["base.4", "base.6", "base.12", "base.15", "fc.0", "fc.1", "fc.2", "fc.3"]
    (prob, activation), seen = _run_with_taps(model, make_inputs(ref)["x"], taps)
    outputs, inter = ref["outputs"], ref["intermediates"]
    assert_matches(prob, find(outputs, "prob"), 1e-6, "prob")
    assert_matches(expected_score(prob), find(outputs, "mos"), 1e-5, "mos")
    assert_matches(activation, find(outputs, "activation"), 1e-6, "activation")
    assert_matches(seen["base.4"], find(inter, "base.0-4 stem"), 1e-5, "stem")
    for name in ("base.6", "base.12", "base.15"):
        assert_matches(seen[name], find(inter, f"{name} ("), 1e-5, name)
    _check_wide_head(activation, seen, inter)
