"""`import_checkpoint` and `add_file`: authors' key names to ours, shape checks, refusal of pickles."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from iqa_cli.errors import CheckpointError, ConfigError
from iqa_cli.models.checkpoint import convert_to_ours, load_checkpoint, read_state_dict
from iqa_cli.models.registry import create, model_names, register_model
from iqa_cli.weights import importer
from iqa_cli.weights.importer import add_file, default_import_name, import_checkpoint, reference_state
from iqa_cli.weights.store import WeightStore, sha256_file
from tests.reference_fixtures import assert_matches, filled_state_dict, find, load_fixture, make_inputs
from tests.weights.fileserver import write_registry

pytestmark = pytest.mark.timeout(120)

TEST_MODEL = "weights-test-net"


def _authors_names(state: dict) -> dict:
    # The "authors" call the head `classifier.0` and the norm `bn`; ours are `fc` and `norm`.
    rename = {"fc.": "classifier.0.", "norm.": "bn."}
    out = {}
    for key, value in state.items():
        for ours, theirs in rename.items():
            if key.startswith(ours):
                key = theirs + key[len(ours) :]
        out[key] = value
    return out


def _our_names(state: dict) -> dict:
    back = {"classifier.0.": "fc.", "bn.": "norm."}
    out = {}
    for key, value in state.items():
        for theirs, ours in back.items():
            if key.startswith(theirs):
                key = ours + key[len(theirs) :]
        out[key] = value
    return out


class _TinyNet(nn.Module):
    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(4)
        self.fc = nn.Linear(4, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x))


if TEST_MODEL not in model_names():
    register_model(TEST_MODEL, description="test-only network", inputs="(B,4)", convert_original=_our_names)(_TinyNet)


META_SHY_MODEL = "weights-test-meta-shy-net"


class _MetaShyNet(_TinyNet):
    """Reads a tensor's value while building, as timm's ViTs before 1.0.21 do (`.item()`): fails on meta."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = float(torch.ones(1).item())


if META_SHY_MODEL not in model_names():
    register_model(META_SHY_MODEL, description="test-only network", inputs="(B,4)")(_MetaShyNet)


def test_models_listing_counts_a_network_that_cannot_be_built_on_the_meta_device(monkeypatch):
    """`iqa models` showed '?' for every timm network on torch 2.6: it built them on the meta device only."""
    monkeypatch.setattr(importer, "model_names", lambda: [META_SHY_MODEL])
    (row,) = importer.model_summaries()
    assert row["parameters"] == sum(p.numel() for p in create(META_SHY_MODEL).parameters()) > 0


def _save_authors_checkpoint(path: Path, state: dict) -> Path:
    """Like the authors' training scripts: DataParallel names inside a dict with epoch and optimizer."""
    wrapped = {f"module.{k}": v for k, v in state.items()}
    torch.save({"epoch": 9, "state_dict": wrapped, "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4}]}}, path)
    return path


def test_import_converts_checks_and_stores_as_safetensors(tmp_path):
    ours = create(TEST_MODEL).state_dict()
    filled = {k: torch.randn(v.shape) if v.is_floating_point() else v for k, v in ours.items()}
    src = _save_authors_checkpoint(tmp_path / "Authors_net-00009.pt", _authors_names(filled))
    stored = import_checkpoint(TEST_MODEL, src)
    assert stored.name == f"{TEST_MODEL}-Authors_net-00009"
    path = WeightStore().path(stored.name)
    assert path.suffix == ".safetensors" and stored.sha256 == sha256_file(path)
    assert stored.source_sha256 == sha256_file(src) and stored.method == TEST_MODEL
    state, meta = read_state_dict(path)
    assert meta["model"] == meta["method"] == TEST_MODEL and meta["source"] == src.name
    assert meta["source_sha256"] == stored.source_sha256
    assert set(state) == set(ours)  # our names
    for key, value in filled.items():
        assert torch.equal(state[key], value), key
    model = load_checkpoint(create(TEST_MODEL), path)
    assert torch.equal(model.fc.weight, filled["fc.weight"])


def test_default_name_follows_the_registry_for_known_release_files():
    assert default_import_name("aliqa", Path("/downloads/koniq_rt25.pt")) == "aliqa_koniq10k_rt25"
    assert default_import_name("vtiqa-org-selection", Path("VTIQA_org_slection.pt")) == "vtiqa_org_koniq10k_selection"
    assert default_import_name("vtiqa", Path("koniq_rt25.pt")) == "vtiqa-koniq_rt25"  # not that method's file
    assert default_import_name("ieit", Path("IEIT koniq (1).pth.tar")) == "ieit-IEIT_koniq_1"


def test_wrong_shape_or_missing_tensor_is_refused_by_name(tmp_path):
    ours = create(TEST_MODEL).state_dict()
    wrong = _authors_names({k: v.clone() for k, v in ours.items()})
    wrong["classifier.0.weight"] = torch.zeros(7, 4)
    # Named as the file names it, with our name beside it.
    with pytest.raises(
        CheckpointError, match=r"classifier\.0\.weight \(7, 4\) \(expected \(6, 4\)\) \(iqa's fc\.weight\)"
    ):
        import_checkpoint(TEST_MODEL, _save_authors_checkpoint(tmp_path / "a.pt", wrong), "x")
    missing = _authors_names({k: v for k, v in ours.items() if k != "fc.bias"})
    with pytest.raises(CheckpointError, match=r"missing tensors \(iqa's names; .*\), first: fc\.bias"):
        import_checkpoint(TEST_MODEL, _save_authors_checkpoint(tmp_path / "b.pt", missing), "y")
    assert WeightStore().entries() == []


def test_unknown_method_and_bad_names(tmp_path):
    src = _save_authors_checkpoint(tmp_path / "a.pt", _authors_names(create(TEST_MODEL).state_dict()))
    with pytest.raises(ConfigError, match="unknown model"):
        import_checkpoint("no-such-method", src)
    with pytest.raises(ConfigError, match="invalid weights name"):
        import_checkpoint(TEST_MODEL, src, "../../outside")
    with pytest.raises(ConfigError, match="known checkpoint for method 'vtiqa'"):
        import_checkpoint(TEST_MODEL, src, "vtiqa_koniq10k")
    assert not (tmp_path / "outside").exists() and WeightStore().entries() == []


class _Payload:
    """Unpickling this calls open(marker, 'w'), i.e. creates the marker file: code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("container", ["torch-zip", "plain-pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, container):
    marker = tmp_path / "pwned"
    src = tmp_path / "released_model.pth"
    payload = {"state_dict": {"fc.weight": torch.zeros(6, 4)}, "extra": _Payload(marker)}
    if container == "torch-zip":
        torch.save(payload, src)
    else:
        with open(src, "wb") as f:
            pickle.dump(payload, f)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused:.*unpickl"):
        import_checkpoint(TEST_MODEL, src, "evil")
    with pytest.raises(CheckpointError, match="refused"):
        add_file("evil", src)
    assert not marker.exists()
    assert WeightStore().entries() == []


def test_torchscript_archive_is_refused(tmp_path):
    src = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.script(_TinyNet()), str(src))
    with pytest.raises(CheckpointError, match="refused: this is a TorchScript archive"):
        add_file("scripted", src)
    with pytest.raises(CheckpointError, match="refused: this is a TorchScript archive"):
        import_checkpoint(TEST_MODEL, src, "scripted")


def test_add_file_checks_registry_hash_and_model_fit(tmp_path, monkeypatch):
    state = create(TEST_MODEL).state_dict()
    ours = tmp_path / "ours.pt"
    torch.save(state, ours)
    stored = add_file("plain", ours, method=TEST_MODEL)
    assert stored.method == TEST_MODEL and WeightStore().path("plain").suffix == ".pt"
    bad = tmp_path / "bad.pt"
    torch.save({"fc.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="does not fit model"):
        add_file("bad", bad, method=TEST_MODEL)
    registry = write_registry(
        tmp_path / "r.json",
        [{"name": "lab_net", "urls": ["https://h/lab_net-0123abcd.pth"], "sha256_prefix": "0123abcd"}],
    )
    monkeypatch.setenv("IQA_WEIGHTS_REGISTRY", str(registry))
    with pytest.raises(CheckpointError, match="not the file known as 'lab_net'"):
        add_file("lab_net", ours)
    assert [e.name for e in WeightStore().entries()] == ["plain"]
    with pytest.raises(CheckpointError, match="refused"):
        add_file("clip_vit_b16_openai", ours)


def test_reference_state_is_built_without_allocating_weights():
    state = reference_state(TEST_MODEL)
    assert state["fc.weight"].shape == (6, 4)
    assert state["fc.weight"].device.type in ("meta", "cpu")


# -- real networks: the authors' key names from the reference manifests ----------------------------


@pytest.mark.reference
@pytest.mark.parametrize("method,fixture", [("ssliqa-student", "ssliqa_student"), ("vtiqa", "vtiqa")])
def test_import_authors_checkpoint_from_reference_manifest(tmp_path, method, fixture):
    if method not in model_names():
        pytest.skip(f"model '{method}' is not registered yet")
    manifest, _ref = load_fixture(fixture)
    authors = filled_state_dict(manifest)  # the authors' exact key names, deterministic values
    src = _save_authors_checkpoint(tmp_path / f"{fixture}.pth", authors)
    stored = import_checkpoint(method, src, f"{fixture}_imported")
    state, meta = read_state_dict(WeightStore().path(stored.name))
    assert meta["model"] == method
    model = create(method)
    expected = convert_to_ours(method, authors, model.state_dict())
    assert set(state) == set(model.state_dict())
    for key, value in expected.items():
        assert torch.equal(state[key], value.to(state[key].dtype)), key
    load_checkpoint(model, WeightStore().path(stored.name))  # strict: every name and shape fits
    if method == "vtiqa":  # `add` stores files in our names only; the authors' layout goes through import
        with pytest.raises(CheckpointError, match=f"authors' key layout.*iqa weights import {method}"):
            add_file("raw_copy", src, method=method)
    if method == "ssliqa-student":  # small enough to run: the imported weights give the authors' outputs
        inputs = make_inputs(_ref)
        with torch.inference_mode():
            prob = model.eval()(*inputs.values())[0]
        assert_matches(prob, find(_ref["outputs"], "prob"), atol=1e-5, label="prob")


def test_aliqa_releases_carry_their_authors_test_part_and_inputs():
    """koniq_rt05/rt80 were tested on the 224 px cache without a crop (test_koniq_rt05.py, _rt80.py),
    rt10/rt25 on the 244 px cache's centre 224 crop; all four on ind_test of their index file."""
    import json

    from iqa_cli.weights.importer import authors_split_meta

    for rt in ("rt05", "rt10", "rt25", "rt80"):
        meta = authors_split_meta(f"aliqa_koniq10k_{rt}")
        assert meta["dataset"] == "koniq" and meta["split"] == f"index_file:koniq_{rt}_index.mat"
        params = json.loads(meta.get("params", "{}"))
        assert params == ({"global_source": 224} if rt in ("rt05", "rt80") else {})
    assert authors_split_meta("vtiqa_org_koniq10k_fusion")["split"] == "authors_prep"
    assert authors_split_meta("vtiqa_livew")["split"] == "shuffle_4"
    # The esnthere prep scripts resized the original files straight to the views (cv2.resize, INTER_CUBIC).
    for name in ("vtiqa_cid2013", "ieit_spaq", "aliqa_koniq10k_rt25", "vtiqa_org_koniq10k_fusion"):
        assert authors_split_meta(name)["resize"] == "none"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("special", ["fifo", "/dev/null"])  # /dev/null: a device that reads harmlessly
def test_a_pipe_or_a_device_is_no_checkpoint(tmp_path, special):
    """`iqa weights import vtiqa /dev/zero` read the device until the memory ran out (the zip check reads
    to the end), and a named pipe hung the command; both are now one line before anything is read."""
    from iqa_cli.weights.importer import import_checkpoint
    from iqa_cli.weights.store import WeightStore

    path = Path(special)
    if special == "fifo":
        path = tmp_path / "net.pth"
        os.mkfifo(path)
    store = WeightStore(tmp_path / "store")
    with pytest.raises(CheckpointError, match="is not a regular file \\(a pipe, socket or device\\)"):
        import_checkpoint("vtiqa", path, store=store)
    with pytest.raises(CheckpointError, match="is not a regular file"):
        store.add("mine", path)
