"""The local store, the registry data file and `resolve_weights`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iqa_cli.errors import CheckpointError, ConfigError, DownloadError
from iqa_cli.home import weights_dir
from iqa_cli.weights import known_weights, resolve_weights
from iqa_cli.weights.names import validate_name
from iqa_cli.weights.store import WeightStore, sha256_file
from iqa_cli.weights.verify import identify_file, verify_all, verify_stored
from tests.weights.fileserver import sha256, write_registry

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    "bad",
    ["", "../evil", "a/b", "a\\b", "/abs", ".hidden", "a..b", "..", "x" * 129, "name\x00", "C:evil", "sp ace", "ü"],
)
def test_names_that_could_escape_the_store_are_refused(bad):
    with pytest.raises(ConfigError, match="invalid weights name"):
        validate_name(bad)


@pytest.mark.parametrize("good", ["deit_small_patch16_224", "vtiqa-koniq10k.v2", "A+B", "x" * 128])
def test_plain_names_are_accepted(good):
    assert validate_name(good) == good


def test_add_path_verify_rm_round_trip(tmp_path):
    src = tmp_path / "weights.safetensors"
    src.write_bytes(b"0123456789" * 1000)
    store = WeightStore()
    assert store.root == weights_dir()
    entry = store.add("mine", src, method="vtiqa")
    path = store.path("mine")
    assert path == store.root / "mine.safetensors" and path.read_bytes() == src.read_bytes()
    index = json.loads((store.root / "index.json").read_text(encoding="utf-8"))["weights"]["mine"]
    assert index["sha256"] == sha256(src.read_bytes()) == entry.sha256
    assert index["size"] == 10_000 and index["method"] == "vtiqa" and index["source"] == str(src.resolve())
    assert index["added"].endswith("+00:00")
    assert verify_stored("mine", store).ok
    with pytest.raises(ConfigError, match="already in the weights store"):
        store.add("mine", src)
    store.rm("mine")
    assert not path.exists() and store.get("mine") is None
    with pytest.raises(CheckpointError, match="not in the weights store"):
        store.path("mine")


def test_replacing_keeps_one_file(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.safetensors"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    store = WeightStore()
    store.add("w", a)
    store.add("w", b, overwrite=True)
    assert sorted(p.name for p in store.root.iterdir() if not p.name.startswith(".")) == ["index.json", "w.safetensors"]
    assert store.path("w").read_bytes() == b"b"


def test_verify_detects_changed_and_missing_files(tmp_path):
    src = tmp_path / "w.pt"
    src.write_bytes(b"original")
    store = WeightStore()
    store.add("changed", src)
    store.add("missing", src)
    store.path("changed").write_bytes(b"tampered")
    store.path("missing").unlink()
    results = {r.name: r for r in verify_all(store)}
    assert not results["changed"].ok and "mismatch" in results["changed"].reason
    assert results["changed"].actual == sha256(b"tampered")
    assert not results["missing"].ok and results["missing"].reason == "missing file"


def test_a_tampered_index_cannot_point_outside_the_store(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me", encoding="utf-8")
    store = WeightStore()
    store.root.mkdir(parents=True)
    rel = Path("..") / ".." / outside.relative_to(tmp_path)
    entry = {"name": "evil", "file": str(rel), "sha256": "0" * 64, "size": 1, "source": "x", "added": "now"}
    (store.root / "index.json").write_text(json.dumps({"format": 1, "weights": {"evil": entry}}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="outside the store"):
        store.path("evil")
    assert store.entries() == [] and "outside the store" in store.problems()["evil"]
    assert store.rm("evil") is None  # the refused entry is forgotten; nothing it names is deleted
    assert outside.read_text(encoding="utf-8") == "keep me" and store.problems() == {}


def test_identify_a_file_by_hash(tmp_path):
    src = tmp_path / "w.pt"
    src.write_bytes(b"weights")
    store = WeightStore()
    store.add("w", src)
    info = identify_file(src, store)
    assert info["sha256"] == sha256_file(src) and info["stored_as"] == ["w"] and info["known_as"] == []


# -- the registry data file -------------------------------------------------------------------------


def test_packaged_registry_is_honest():
    known = known_weights()
    assert {"deit_small_patch16_224", "resnet50_tv_in1k", "resnet101_tv_in1k", "alexnet_tv_in1k"} <= set(known)
    for entry in known.values():
        if entry.published:
            assert entry.urls and all(u.startswith("https://") for u in entry.urls), entry.name
            assert entry.sha256 or entry.sha256_prefix, entry.name
        else:
            # Nothing pretends a download exists: no URL, and the note says how to get the file in.
            assert entry.urls == () and not entry.downloadable, entry.name
            assert "iqa weights import" in entry.note or "iqa weights add" in entry.note, entry.name
        if entry.sha256_prefix:  # torch.hub convention: the prefix is in the file name
            assert f"-{entry.sha256_prefix}." in entry.file_name, entry.name
    # The authors' released quality checkpoints are on Baidu Pan / Google Drive only, or unpublished.
    for method in ("vtiqa", "ieit", "aliqa", "vipnet-dpm", "ssliqa-student"):
        entries = [e for e in known.values() if e.method == method]
        assert entries and all(e.status == "manual" for e in entries), method
    clip = known["clip_vit_b16_openai"]
    assert clip.status == "refused (torchscript)" and clip.sha256 in clip.urls[0]


def test_registry_methods_name_registered_models():
    from iqa_cli.models import model_names

    registered = set(model_names())
    for entry in known_weights().values():
        for method in filter(None, [entry.method, *entry.used_by]):
            assert method in registered, f"{entry.name}: '{method}' is not a registered model"


def test_user_registry_file_is_validated(tmp_path, monkeypatch):
    path = write_registry(tmp_path / "r.json", [{"name": "a", "urls": ["https://h/a.pth"]}])
    monkeypatch.setenv("IQA_WEIGHTS_REGISTRY", str(path))
    with pytest.raises(ConfigError, match="needs sha256 or sha256_prefix"):
        known_weights()
    write_registry(path, [{"name": "../a", "urls": ["https://h/a.pth"], "sha256": "0" * 64}])
    with pytest.raises(ConfigError, match="invalid weights name"):
        known_weights()
    write_registry(path, [{"name": "a", "urls": ["https://h/a.pth"], "sha256": "0" * 64, "file_name": "../a.pth"}])
    with pytest.raises(ConfigError, match="plain file name"):
        known_weights()
    write_registry(path, [{"name": "lab_model", "urls": ["https://h/lab.pth"], "sha256": "ab" * 32}])
    assert known_weights()["lab_model"].downloadable


# -- resolve_weights --------------------------------------------------------------------------------


def test_resolve_paths_and_stored_names(tmp_path):
    src = tmp_path / "ckpt.pt"
    src.write_bytes(b"x")
    assert resolve_weights(src) == src
    assert resolve_weights(str(src)) == src
    with pytest.raises(CheckpointError, match="not found"):
        resolve_weights(tmp_path / "nope.pt")
    WeightStore().add("mine", src)
    assert resolve_weights("mine") == WeightStore().path("mine")
    with pytest.raises(CheckpointError, match="neither a file nor a name"):
        resolve_weights("unknown_name")


def test_resolve_known_names_offline_and_manual(monkeypatch):
    monkeypatch.setenv("IQA_OFFLINE", "1")
    with pytest.raises(DownloadError, match=r"offline.*deit_small_patch16_224-cd65a155.pth"):
        resolve_weights("deit_small_patch16_224")
    with pytest.raises(DownloadError, match="downloaded by hand"):
        resolve_weights("ieit_koniq10k")


def test_a_file_system_that_refuses_locks_is_one_line_naming_the_lock(tmp_path, monkeypatch):
    """NFS without its lock daemon answers flock with ENOLCK: `iqa weights add` printed "error: No locks
    available", naming no file and no way out."""
    import errno
    import fcntl

    import torch
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from iqa_cli.cli.main import app

    source = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(source))

    def flock(fd, operation):
        if operation & fcntl.LOCK_EX:
            raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)
    result = CliRunner().invoke(app, ["weights", "add", "mine", str(source)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 65 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and ".mine.lock: cannot lock it (No locks available)" in lines[0]
    assert "IQA_HOME" in lines[0]


def test_a_wait_for_a_store_lock_says_what_it_waits_for(tmp_path):
    """Where flock is missing (ENOSYS), filelock falls back to lock files, and a `.NAME.lock` left by a host
    whose locks work reads as held: `iqa weights add` waited without a word. It now names the file, and
    goes on once the file is removed."""
    import os
    import subprocess
    import sys
    import time

    import torch
    from safetensors.torch import save_file

    source = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(source))
    home = tmp_path / "home"
    stale = home / "weights" / ".mine.lock"
    stale.parent.mkdir(parents=True)
    stale.write_text("", encoding="utf-8")
    code = (
        "import errno, fcntl, sys\n"
        "def flock(fd, operation):\n"
        "    raise OSError(errno.ENOSYS, 'Function not implemented')\n"
        "fcntl.flock = flock\n"
        "from iqa_cli.cli.main import app\n"
        "sys.argv = ['iqa', 'weights', 'add', 'mine', sys.argv[1]]\n"
        "app()\n"
    )
    env = {**os.environ, "IQA_HOME": str(home), "PYTHONWARNINGS": "ignore"}
    job = subprocess.Popen(
        [sys.executable, "-c", code, str(source)], env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        said = ""
        deadline = time.monotonic() + 60
        while "waiting for" not in said and time.monotonic() < deadline:
            said += job.stderr.readline() if job.stderr else ""
        said = " ".join(said.split())  # however the line was wrapped
        assert f"waiting for {stale}" in said and "remove it if no iqa process uses the store" in said, said
        stale.unlink()  # what the line says to do
        assert job.wait(timeout=60) == 0
    finally:
        job.kill()
    assert (home / "weights" / "mine.safetensors").is_file()
