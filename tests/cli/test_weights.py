"""`iqa weights ...` end to end through the CLI, downloads served by a local HTTP server."""

from __future__ import annotations

import json
import pickle
import random

import pytest
import torch
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.weights.store import WeightStore, sha256_file
from tests.reference_fixtures import filled_state_dict, load_fixture
from tests.weights.fileserver import FileServer, local_only, sha256, write_registry

pytestmark = pytest.mark.timeout(120)

DATA = random.Random(1).randbytes(200_000)
runner = CliRunner()


def iqa(*args: str):
    return runner.invoke(app, ["weights", *args])


def failed(result, *fragments: str) -> bool:
    """A one-line `error:` message containing every fragment, and a non-zero exit code."""
    text = " ".join(result.output.split())
    return result.exit_code != 0 and "error:" in text and all(f in text for f in fragments)


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A local server holding `net-1a2b3c4d.pth`, registered as the known checkpoint `net`."""
    local_only(monkeypatch)
    server = FileServer().start()
    server.add("files/net-1a2b3c4d.pth", DATA)
    registry = write_registry(
        tmp_path / "registry.json",
        [{"name": "net", "urls": [server.url("files/net-1a2b3c4d.pth")], "sha256": sha256(DATA)}],
    )
    monkeypatch.setenv("IQA_WEIGHTS_REGISTRY", str(registry))
    yield server
    server.close()


def test_list_shows_known_checkpoints_and_their_status():
    result = iqa("list", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["weights"]}
    assert rows["deit_small_patch16_224"]["status"] == "download"
    assert rows["deit_small_patch16_224"]["verification"] == "sha256 prefix cd65a155"
    assert rows["vtiqa_koniq10k"]["status"] == "manual" and rows["vtiqa_koniq10k"]["urls"] == []
    assert rows["clip_vit_b16_openai"]["status"] == "refused (torchscript)"
    assert all(r["stored"] is None for r in rows.values())
    table = iqa("list")
    assert table.exit_code == 0 and "deit_small_patch16_224" in table.stdout and "resnet50_tv_in1k" in table.stdout


def test_list_models():
    from iqa_cli.models import model_names

    result = iqa("list", "--models", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == model_names()
    assert all(r["parameters"] is None or r["parameters"] > 0 for r in rows)


def test_fetch_verify_path_rm(served):
    # An empty store verified "nothing" with exit 0, which a job script's `iqa weights verify && ...` took as a pass.
    empty = iqa("verify")
    assert failed(empty, "nothing to verify", "holds no checkpoint") and empty.exit_code == 65
    result = iqa("fetch", "net")
    assert result.exit_code == 0, result.output
    path = WeightStore().path("net")
    assert result.stdout.strip() == str(path) and path.read_bytes() == DATA
    assert iqa("fetch", "net").stdout.strip() == str(path)  # already stored: no second download
    assert len(served.seen("files/net-1a2b3c4d.pth")) == 1

    listed = {r["name"]: r for r in json.loads(iqa("list", "--json").stdout)["weights"]}
    assert listed["net"]["stored"]["sha256"] == sha256(DATA)

    verify = iqa("verify")
    assert verify.exit_code == 0 and verify.stdout.split()[:2] == ["ok", "net"]
    assert iqa("verify", "net").exit_code == 0
    assert iqa("path", "net").stdout.strip() == str(path)

    path.write_bytes(b"corrupted")
    assert failed(iqa("verify", "net"), "verification failed", "net")
    assert failed(iqa("verify", str(path)), "verification failed")

    assert iqa("rm", "net").exit_code == 0
    assert not path.exists()
    assert failed(iqa("path", "net"), "'net' is not in the weights store")


def test_fetch_errors_are_one_clear_line(served, monkeypatch):
    assert failed(iqa("fetch", "vtiqa_koniq10k"), "downloaded by hand", "iqa weights import vtiqa FILE")
    assert failed(iqa("fetch", "clip_vit_b16_openai"), "TorchScript")
    assert failed(iqa("fetch"), "give checkpoint names or --all")
    assert failed(iqa("path", "../etc/passwd"), "invalid weights name")
    monkeypatch.setenv("IQA_OFFLINE", "1")
    assert failed(iqa("fetch", "net"), "offline", "net-1a2b3c4d.pth")
    assert served.requests == []


def test_fetch_all_through_a_mirror(served):
    # Every downloadable entry is asked of the mirror only (no traffic leaves 127.0.0.1); the mirror
    # has just our file, so the packaged backbones fail with 404 and the command says so.
    served.add("mirror/net-1a2b3c4d.pth", DATA)
    result = iqa("fetch", "--all", "--mirror", served.url("mirror"), "--retries", "0")
    assert failed(result, "downloads failed", "deit_small_patch16_224")
    assert "skipped vtiqa_koniq10k: manual" in " ".join(result.output.split())
    assert WeightStore().path("net").read_bytes() == DATA
    assert {s.path.split("/")[1] for s in served.requests} == {"mirror"}


def test_import_add_and_identify(tmp_path):
    from iqa_cli.models import model_names

    if "vtiqa" not in model_names():
        pytest.skip("model 'vtiqa' is not registered yet")
    manifest, _ = load_fixture("vtiqa")  # the authors' key names of the released VT-IQA model
    authors = {f"module.{k}": v for k, v in filled_state_dict(manifest).items()}
    src = tmp_path / "VTIQA_koniq.pt"
    torch.save(authors, src)
    result = iqa("import", "vtiqa", str(src), "--name", "vtiqa_koniq10k")
    assert result.exit_code == 0, result.output
    # no digest of the authors' file is published: any file under their name would be scored as theirs
    said = " ".join(result.stderr.split())
    assert "no digest of the authors' 'vtiqa_koniq10k' file is published, so iqa cannot check that" in said
    assert "VTIQA_koniq.pt is it; it is stored as their release, trained on koniq split vtiqa_chain_0 (which" in said
    stored = WeightStore().get("vtiqa_koniq10k")
    assert stored.source_sha256 == sha256_file(src) and result.stdout.strip().endswith("vtiqa_koniq10k.safetensors")
    again = iqa("import", "vtiqa", str(src), "--name", "vtiqa_koniq10k")
    assert failed(again, "already in the weights store") and "digest" not in again.stderr  # refused: nothing stored

    own = iqa("import", "vtiqa", str(src), "--name", "my_vtiqa")  # no release's name: nothing to say
    assert own.exit_code == 0 and "digest" not in own.stderr
    converted = WeightStore().path("vtiqa_koniq10k")
    added = iqa("add", "vtiqa_copy", str(converted), "--method", "vtiqa")
    assert added.exit_code == 0, added.output
    assert WeightStore().get("vtiqa_copy").sha256 == stored.sha256

    ident = iqa("verify", str(src), "--json")
    assert ident.exit_code == 0 and json.loads(ident.stdout)["sha256"] == sha256_file(src)
    # A name differing from a stored one only in case would be the same file on macOS or Windows: refused,
    # also with --force (which replaces one name's own file), and nothing is stored.
    for force in ((), ("--force",)):
        twin = iqa("add", "VTIQA_copy", str(converted), "--method", "vtiqa", *force)
        assert failed(twin, "'VTIQA_copy' differs from 'vtiqa_copy' in the weights store only in case")
    assert WeightStore().get("VTIQA_copy") is None and WeightStore().has("vtiqa_copy")


def test_import_refuses_a_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    src = tmp_path / "model.pth"
    src.write_bytes(pickle.dumps({"state_dict": {"w": torch.zeros(1)}, "x": Payload()}))
    assert failed(iqa("import", "vtiqa", str(src)), "refused")
    assert failed(iqa("add", "evil", str(src)), "refused")
    assert not marker.exists() and WeightStore().entries() == []


def test_a_model_iqa_trained_is_stored_and_scored_under_a_name(tmp_path):
    """`iqa weights add NAME best.safetensors` checked the file against the default network, so a --tiny
    model (or options that change the network) was refused with a shape report."""
    import numpy as np
    from PIL import Image

    from iqa_cli.home import data_dir
    from tests.train.caches import make_cache

    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    fast = ["--tiny", "--freeze-epochs", "0", "--optimizer", "adamw", "--lr", "0.002", "--batch-size", "8"]
    fast += ["--dropout", "0", "--device", "cpu", "--epochs", "1", "--val-fraction", "0.2"]
    assert runner.invoke(app, ["train", "vtiqa", *fast, "--data", "mini", "--name", "mine"]).exit_code == 0
    best = next((data_dir().parent / "runs" / "mine").glob("split-*/best.safetensors"))
    added = iqa("add", "my_model", str(best))
    assert added.exit_code == 0, added.output
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photo)
    scores = {}
    for weights in ("my_model", "mine"):
        result = runner.invoke(app, ["predict", "vtiqa", str(photo), "--weights", weights, "--device", "cpu", "--json"])
        assert result.exit_code == 0, result.output
        scores[weights] = json.loads(result.stdout)["predictions"][0]["score"]
    assert scores["my_model"] == scores["mine"]
    assert failed(iqa("add", "as_ieit", str(best), "--method", "ieit"), "does not fit model 'ieit'")


def test_a_missing_name_says_how_to_get_it_or_that_no_such_checkpoint_is_known(_isolated_home):
    """`iqa weights path nope` said "get it with `iqa weights fetch nope`", a fetch that cannot work: no
    checkpoint of that name is known. A known one without a download gives its note instead."""
    unknown = iqa("path", "nope")
    assert failed(unknown, "'nope' is not in the weights store", "no checkpoint of that name is known")
    assert "weights fetch" not in unknown.stderr
    assert failed(iqa("path", "deit_small_patch16_224"), "get it with `iqa weights fetch deit_small_patch16_224`")
    by_hand = iqa("path", "vtiqa_koniq10k")
    assert failed(by_hand, "Download it by hand", "iqa weights import vtiqa FILE --name vtiqa_koniq10k")


def test_a_model_iqa_trained_is_not_stored_under_a_release_name(tmp_path, _isolated_home):
    """`iqa weights add vtiqa_koniq10k RUN/.../best.safetensors` stored a model trained on another dataset as
    the authors' KonIQ release: a shared store's users would score it as theirs."""
    import torch

    from iqa_cli.models.checkpoint import save_checkpoint

    ours = tmp_path / "best.safetensors"
    save_checkpoint({"w": torch.zeros(2)}, ours, meta={"run": "/runs/mine-run", "dataset": "mine", "model": "vtiqa"})
    result = iqa("add", "vtiqa_koniq10k", str(ours))
    assert failed(result, "'vtiqa_koniq10k' names the authors' released vtiqa model", "on mine", "another name")
    assert failed(iqa("path", "vtiqa_koniq10k"), "is not in the weights store")


def test_list_never_shows_the_credentials_of_a_registry_url(tmp_path, monkeypatch):
    """`weights list` showed a URL's `user:token@` as the source host, and `--json` the whole URL."""
    registry = write_registry(
        tmp_path / "registry.json",
        [{"name": "net", "urls": ["https://lab:s3cret@mirror.example.org/w/net.pth?sig=abc"], "sha256": "0" * 64}],
    )
    monkeypatch.setenv("IQA_WEIGHTS_REGISTRY", str(registry))
    table, listed = iqa("list"), iqa("list", "--json")
    assert table.exit_code == 0 and listed.exit_code == 0, table.output + listed.output
    assert "mirror.example.org" in table.stdout and "s3cret" not in table.stdout and "lab:" not in table.stdout
    rows = {r["name"]: r for r in json.loads(listed.stdout)["weights"]}
    assert rows["net"]["urls"] == ["https://***@mirror.example.org/w/net.pth?***"]
