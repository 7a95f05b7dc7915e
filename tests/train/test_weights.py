"""Rebuilding trained networks from checkpoints (`iqa_cli.train.weights`): every method's network is
rebuilt exactly although its random init is skipped, a network with buffers no checkpoint holds is
built the usual way, and the metadata is read before the tensors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from iqa_cli.errors import CheckpointError
from iqa_cli.models.checkpoint import save_checkpoint
from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.weights import TrainedSpec, build_trained, read_trained

METHODS = ["vtiqa", "ieit", "aliqa", "ssliqa", "vipnet-dpm", "vipnet"]


@pytest.mark.parametrize("method", METHODS)
def test_a_rebuilt_network_holds_exactly_the_saved_tensors(tmp_path, method):
    recipe = get_recipe(method)
    torch.manual_seed(0)
    model = recipe.build_model(recipe.Params(), tiny=True, pretrained=False)
    path = save_checkpoint(model, tmp_path / "model.safetensors", {"method": method, "tiny": True})
    spec = read_trained(recipe, path)
    torch.manual_seed(1)
    rebuilt = build_trained(recipe, spec).model
    saved, loaded = model.state_dict(), rebuilt.state_dict()
    assert set(saved) == set(loaded)
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key
    torch.manual_seed(1)  # buffers no checkpoint holds are what a usual build from the same seed makes
    usual = dict(recipe.build_model(spec.params, tiny=True, pretrained=False).named_buffers())
    for name, buffer in rebuilt.named_buffers():
        if name not in saved:
            assert torch.equal(buffer, usual[name]), name


class _WithTable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.register_buffer("table", torch.rand(1000), persistent=False)  # random, and never saved


@pytest.mark.parametrize("declared", [True, False])
def test_a_network_with_unsaved_random_buffers_is_built_the_usual_way(tmp_path, declared):
    """Whether the recipe declares it (`build_without_init = False`, one build) or not (found after a
    build without init, then built again)."""
    path = save_checkpoint(_WithTable(), tmp_path / "w.safetensors", {"method": "stub"})
    builds: list[int] = []
    recipe = SimpleNamespace(
        build_without_init=declared,
        build_model=lambda params, tiny, pretrained: builds.append(1) or _WithTable(),
        load_weights=lambda model, files, params: model.load_state_dict(
            __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(files["model"]))
        ),
    )
    spec = TrainedSpec({"model": path}, {}, SimpleNamespace(), False, str(path))
    table = build_trained(recipe, spec).model.table  # type: ignore[arg-type]
    assert 0.0 <= float(table.min()) and float(table.max()) < 1.0 and float(table.std()) > 0.2
    assert len(builds) == (2 if declared else 1)


def test_only_al_iqa_declares_buffers_no_checkpoint_holds():
    assert [m for m in METHODS if not get_recipe(m).build_without_init] == ["aliqa"]


def _overwrite_tensor_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    header = int.from_bytes(data[:8], "little")
    start = 8 + header + (len(data) - 8 - header) // 2
    data[start : start + 64] = b"\x00" * 64
    path.write_bytes(bytes(data))


def test_metadata_comes_from_the_header_and_the_tensors_are_still_checked(tmp_path):
    recipe = get_recipe("vtiqa")
    model = recipe.build_model(recipe.Params(), tiny=True, pretrained=False)
    path = save_checkpoint(model, tmp_path / "model.safetensors", {"method": "vtiqa", "tiny": True})
    _overwrite_tensor_bytes(path)
    spec = read_trained(recipe, path)  # the header is intact
    assert spec.tiny and spec.meta["method"] == "vtiqa"
    with pytest.raises(CheckpointError, match="do not match the digest"):
        build_trained(recipe, spec)


def test_a_checkpoint_of_another_method_is_refused_from_its_header(tmp_path):
    recipe = get_recipe("vtiqa")
    model = recipe.build_model(recipe.Params(), tiny=True, pretrained=False)
    path = save_checkpoint(model, tmp_path / "model.safetensors", {"method": "ieit", "tiny": True})
    with pytest.raises(CheckpointError, match="for method 'ieit'"):
        read_trained(recipe, path)


class _TwoParts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.loaded = nn.Linear(3, 3)
        self.forgotten = nn.Linear(3, 3)  # a part some load_weights would miss


def test_a_weight_no_load_sets_is_refused_not_left_random(tmp_path):
    path = save_checkpoint(_TwoParts().loaded, tmp_path / "part.safetensors", {"method": "stub"})
    recipe = SimpleNamespace(
        build_without_init=True,
        build_model=lambda params, tiny, pretrained: _TwoParts(),
        load_weights=lambda model, files, params: model.loaded.load_state_dict(
            __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(files["model"]))
        ),
    )
    spec = TrainedSpec({"model": path}, {}, SimpleNamespace(), False, str(path))
    with pytest.raises(CheckpointError, match="non-finite weights.*forgotten"):
        build_trained(recipe, spec)  # type: ignore[arg-type]
