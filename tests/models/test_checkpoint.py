"""The checkpoint importer on a real network (the SSL-IQA student): formats, names, shapes, safety."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from iqa_cli.errors import CheckpointError
from iqa_cli.models import create, load_checkpoint, save_checkpoint
from iqa_cli.models.checkpoint import read_state_dict, unwrap_state_dict

MODEL = "ssliqa-student"


def _filled(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the authors' names (theirs equal ours here) with values no fresh model has."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in create(MODEL).state_dict().items()}


def _assert_loaded(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_dataparallel_prefix_is_stripped():
    state = _filled()
    model = load_checkpoint(create(MODEL), {f"module.{k}": v for k, v in state.items()})
    _assert_loaded(model, state)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_pth_tar_dict_with_epoch_and_optimizer(tmp_path, prefix):
    state = _filled(1)
    optimizer = torch.optim.Adam(create(MODEL).parameters(), lr=2e-4).state_dict()
    path = tmp_path / "model_best.pth.tar"
    torch.save(
        {
            "epoch": 9,
            "arch": "alexnet",
            "state_dict": {prefix + k: v for k, v in state.items()},
            "best_acc1": torch.tensor(71.5),  # a stray tensor beside the wrapper must not hide it
            "optimizer": optimizer,
        },
        path,
    )
    _assert_loaded(load_checkpoint(create(MODEL), path), state)


def test_nested_wrappers_are_unwrapped():
    state = _filled(2)
    assert set(unwrap_state_dict({"model": {"state_dict": state}, "epoch": 3})) == set(state)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_our_checkpoint_round_trip_with_metadata(tmp_path, suffix):
    source = create(MODEL)
    source.load_state_dict(_filled(3))
    path = save_checkpoint(source, tmp_path / f"student{suffix}", {"dataset": "koniq10k", "epoch": 9})
    assert path.is_file() and not list(tmp_path.glob("*.tmp*"))
    state, meta = read_state_dict(path)
    assert meta["model"] == MODEL and meta["dataset"] == "koniq10k" and meta["epoch"] == "9"
    target = load_checkpoint(create(MODEL), path)
    _assert_loaded(target, source.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(source.eval()(x)[0], target.eval()(x)[0])


def test_metadata_is_strict_json(tmp_path):
    """A start model whose metric was unmeasured has best value -inf: stored as null, not -Infinity."""
    import json

    meta = {"metric_value": float("-inf"), "val": {"srcc": float("nan"), "n": 2}}
    path = save_checkpoint(create(MODEL), tmp_path / "m.safetensors", meta)
    _, read = read_state_dict(path)
    strict = {k: json.loads(v, parse_constant=lambda c: pytest.fail(c)) for k, v in read.items() if k in meta}
    assert strict == {"metric_value": None, "val": {"n": 2, "srcc": None}}


def test_safetensors_content_is_recognised_whatever_the_suffix(tmp_path):
    path = save_checkpoint(create(MODEL), tmp_path / "student.safetensors")
    renamed = path.rename(tmp_path / "student.pth")
    state, meta = read_state_dict(renamed)
    assert meta["model"] == MODEL and set(state) == set(create(MODEL).state_dict())


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_of_another_model_is_refused(tmp_path, suffix):
    path = save_checkpoint(create(MODEL), tmp_path / f"student{suffix}")
    with pytest.raises(CheckpointError, match="checkpoint is for model 'ssliqa-student', not 'ssliqa-teacher'"):
        load_checkpoint(create("ssliqa-teacher", tiny=True), path)


def test_metadata_in_an_in_memory_checkpoint_is_checked_too():
    checkpoint = {"state_dict": _filled(), "iqa_meta": {"model": "vtiqa"}}
    with pytest.raises(CheckpointError, match="checkpoint is for model 'vtiqa', not 'ssliqa-student'"):
        load_checkpoint(create(MODEL), checkpoint)


def test_missing_extra_and_misshapen_tensors_are_named(tmp_path):
    state = _filled()
    del state["fc.2.bias"]
    state["fc.9.weight"] = torch.zeros(3)
    state["fc.0.weight"] = torch.zeros(64, 256)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(create(MODEL), path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert "fc.0.weight (64, 256) (expected (128, 256))" in message
    assert "1 missing tensors, first: fc.2.bias" in message
    assert "1 unexpected tensors, first: fc.9.weight" in message
    # A failed load leaves the model untouched.
    model = create(MODEL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError):
        load_checkpoint(model, state)
    _assert_loaded(model, before)


def test_whole_other_network_lists_first_keys():
    teacher = create("ssliqa-teacher", tiny=True).state_dict()
    with pytest.raises(CheckpointError, match=r"missing tensors, first: base\.0\.0\.weight") as info:
        load_checkpoint(create(MODEL), teacher)
    assert "unexpected tensors, first: base.0.weight, base.1.weight" in str(info.value)


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, writer):
    marker = tmp_path / "MARKER"
    payload = {"state_dict": _filled(), "hook": _RunsCode(marker)}
    path = tmp_path / "evil.pth"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused: .*(run arbitrary code|could run code)") as info:
        load_checkpoint(create(MODEL), path)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    if writer == "torch.save":  # the payload is live: an unsafe load would have run it
        torch.load(path, weights_only=False)
        assert marker.exists()


def test_malicious_global_is_named(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match=r"would import the Python object '(posix|nt)\.system'"):
        read_state_dict(path)
    assert not marker.exists()


def _as_numpy1_pickle(path: Path) -> None:
    """Rewrite a torch.save archive as numpy 1.x pickles its scalars (`numpy.core.multiarray`)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            if name.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            archive.writestr(name, data)


@pytest.mark.parametrize("numpy_major", [1, 2])
def test_authors_checkpoint_with_numpy_figures_is_read(tmp_path, numpy_major):
    """VIPNet's train.py stores `best_criterion`, a scipy SRCC (numpy float64), beside the weights, and
    other scripts numpy arrays: data, which the weights-only reader takes; any other object stays refused."""
    import numpy as np
    from scipy import stats

    srcc = stats.spearmanr([1, 2, 3, 4], [1, 3, 2, 4])[0]
    assert isinstance(srcc, np.float64)
    state = _filled()
    path = tmp_path / "model_best.pth.tar"
    extras = {"best_criterion": srcc, "losses": np.arange(3, dtype=np.float32), "epoch": 3}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, **extras}, path)
    if numpy_major == 1:
        _as_numpy1_pickle(path)
    loaded, _ = read_state_dict(path)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    marker = tmp_path / "MARKER"
    torch.save({"state_dict": state, "best_criterion": srcc, "x": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match=r"would import the Python object '(posix|nt)\.system'"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore:.*TorchScript archive:UserWarning")
def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        read_state_dict(path)


@pytest.mark.parametrize(
    "name,content,expected",
    [
        ("notes.pth", b"epoch 9, lr 2e-4\n", "not a checkpoint: expected a PyTorch file"),
        ("photo.pt", b"\xff\xd8\xff\xe0" + bytes(range(64)), "not a checkpoint: expected a PyTorch file"),
        ("empty.pt", b"", "empty file"),
        ("broken.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", "not a readable safetensors file"),
    ],
)
def test_non_checkpoint_files_give_a_clear_error(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint(create(MODEL), path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_checkpoint_without_tensors_or_missing_file(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="expected a dict of tensors, found list"):
        load_checkpoint(create(MODEL), path)
    torch.save({"epoch": 3, "optimizer": {"param_groups": []}}, path)
    with pytest.raises(CheckpointError, match="no tensors found .*epoch, optimizer"):
        load_checkpoint(create(MODEL), path)
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(create(MODEL), tmp_path / "absent.pt")


def test_the_tensor_digest_is_stable():
    """Checkpoints written by earlier versions carry this digest: its definition must never drift."""
    from iqa_cli.models.checkpoint import tensors_digest

    state = {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "b": torch.arange(3, dtype=torch.int64),
        "h": torch.arange(4).to(torch.bfloat16),
    }
    assert tensors_digest(state) == "da00b9a9c0df81a0dbc7135b18e04888b0915d87633ac3465f802ae3670ed06d"
    assert tensors_digest({**state, "w": state["w"].t()}) != tensors_digest(state)
