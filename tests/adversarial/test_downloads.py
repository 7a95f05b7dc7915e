"""Hostile mirrors and broken networks: a body that never ends, a redirect to file://, a host that does
not resolve, a tampered store index. Every server is on 127.0.0.1 and every loop is bounded."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from iqa_cli.weights.store import WeightStore
from tests.adversarial.helpers import error_line, invoke
from tests.weights.fileserver import local_only, write_registry

pytestmark = pytest.mark.timeout(120)
GOOD = b"good weights" * 1000


class _Hostile(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        if self.path.startswith("/endless"):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()  # no Content-Length: streams until the client stops
            deadline = time.monotonic() + 30  # bounded, whatever the client does
            try:
                while time.monotonic() < deadline:
                    self.wfile.write(b"\0" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        if self.path.startswith("/to-file"):
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
            return
        if self.path.startswith("/good"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD)
            return
        self.send_response(404)
        self.end_headers()


@pytest.fixture
def hostile(monkeypatch):
    local_only(monkeypatch)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _registry(tmp_path, monkeypatch, entries) -> None:
    monkeypatch.setenv("IQA_WEIGHTS_REGISTRY", str(write_registry(tmp_path / "registry.json", entries)))


def test_an_endless_body_stops_at_the_size_cap_and_leaves_nothing(hostile, tmp_path, monkeypatch):
    _registry(tmp_path, monkeypatch, [{"name": "endless", "urls": [f"{hostile}/endless/w.pth"], "sha256": "0" * 64}])
    monkeypatch.setenv("IQA_MAX_DOWNLOAD_BYTES", str(2 * 2**20))
    started = time.monotonic()
    line = error_line(invoke("weights", "fetch", "endless", "--retries", "0"))
    assert "more than the 2097152 bytes expected" in line and "deleted" in line
    assert time.monotonic() - started < 20
    store = WeightStore()
    assert not list(store.root.glob(".endless*partial")) and not store.has("endless")


def test_a_registry_size_caps_the_download(hostile, tmp_path, monkeypatch):
    entry = {"name": "sized", "urls": [f"{hostile}/endless/w.pth"], "sha256": "0" * 64, "size": 100_000}
    _registry(tmp_path, monkeypatch, [entry])
    line = error_line(invoke("weights", "fetch", "sized", "--retries", "0"))
    assert "more than the 100000 bytes expected" in line and "its registry size" in line


def test_a_redirect_to_file_fails_that_entry_only(hostile, tmp_path, monkeypatch):
    good = {"name": "good", "urls": [f"{hostile}/good/w.pth"], "sha256": hashlib.sha256(GOOD).hexdigest()}
    bad = {"name": "redirected", "urls": [f"{hostile}/to-file/w.pth"], "sha256": "0" * 64}
    _registry(tmp_path, monkeypatch, [bad, good])
    result = invoke("weights", "fetch", "redirected", "good")
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert any("redirected to an unsupported address" in x and "only http(s)" in x for x in lines), result.output
    assert WeightStore().has("good")  # the batch went on


def test_an_unresolvable_host_fails_fast_with_what_to_do(tmp_path, monkeypatch):
    entry = {"name": "far", "urls": ["http://iqa-no-such-host.invalid/w.pth"], "sha256": "0" * 64}
    _registry(tmp_path, monkeypatch, [entry])
    started = time.monotonic()
    line = error_line(invoke("weights", "fetch", "far"))
    assert time.monotonic() - started < 15
    assert "could not be resolved" in line and "IQA_OFFLINE=1" in line and "iqa weights add" in line
    assert "--pretrained none" in line and line.rstrip().endswith(")")  # complete, not cut mid-word


def _tamper(store: WeightStore, name: str, file: str) -> None:
    index = json.loads(store.index_path.read_text(encoding="utf-8"))
    index["weights"][name] = {**index["weights"]["kept"], "name": name, "file": file}
    store.index_path.write_text(json.dumps(index), encoding="utf-8")


def test_one_tampered_index_entry_is_reported_skipped_and_removable(tmp_path):
    store = WeightStore()
    source = tmp_path / "w.pt"
    source.write_bytes(b"weights")
    store.add("kept", source)
    outside = tmp_path / "secret.txt"
    outside.write_text("keep me", encoding="utf-8")
    (store.root / "link.pt").symlink_to(outside)
    _tamper(store, "evil", "../../" + outside.name)
    _tamper(store, "linked", "link.pt")
    listed = invoke("weights", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert "refused store index entry 'evil'" in listed.output and "refused store index entry 'linked'" in listed.output
    assert invoke("weights", "path", "kept").exit_code == 0  # the good entry still works
    assert "refusing 'evil'" in error_line(invoke("weights", "path", "evil"))
    assert invoke("weights", "rm", "evil").exit_code == 0
    assert outside.read_text(encoding="utf-8") == "keep me"
    repaired = invoke("weights", "verify", "--repair", "--json")
    assert repaired.exit_code == 0, repaired.output
    report = json.loads(repaired.stdout)
    assert any(item.startswith("linked") for item in report["dropped"])
    assert (
        WeightStore().problems() == {}
        and WeightStore().has("kept")
        and outside.read_text(encoding="utf-8") == "keep me"
    )


def test_verify_repair_rebuilds_an_unreadable_index(tmp_path):
    store = WeightStore()
    source = tmp_path / "w.pt"
    source.write_bytes(b"weights")
    store.add("kept", source)
    store.index_path.write_text("{ not json", encoding="utf-8")
    assert "verify --repair" in error_line(invoke("weights", "verify"))
    # `verify --repair kept` rebuilt the whole index, ignoring the name, with exit 0
    named = error_line(invoke("weights", "verify", "--repair", "kept"))
    assert "--repair rebuilds the index of the whole store; it takes no name or file (given 'kept')" in named
    assert store.index_path.read_text(encoding="utf-8") == "{ not json"  # refused before anything was touched
    assert invoke("weights", "verify", "--repair").exit_code == 0
    assert WeightStore().has("kept") and invoke("weights", "verify").exit_code == 0


def test_weights_list_says_which_entries_are_checked_by_a_prefix_only(monkeypatch):
    monkeypatch.delenv("IQA_WEIGHTS_REGISTRY", raising=False)
    listed = invoke("weights", "list")
    assert listed.exit_code == 0
    deit = next(x for x in listed.output.splitlines() if x.startswith("deit_small_patch16_224 "))
    assert "prefix only (32 bit)" in deit


def test_a_prefix_only_download_pins_its_full_digest_for_later_downloads(hostile, tmp_path, monkeypatch):
    """A forged file sharing the published 8-hex prefix passes the prefix, but not the pinned digest."""
    real = hashlib.sha256(GOOD).hexdigest()
    entry = {"name": "prefixed", "urls": [f"{hostile}/good/w.pth"], "sha256_prefix": real[:8]}
    _registry(tmp_path, monkeypatch, [entry])
    first = invoke("weights", "fetch", "prefixed")
    assert first.exit_code == 0, first.output
    assert "8-hex" not in first.output and "32 bits, not a full check" in first.output
    store = WeightStore()
    assert store.pins()["prefixed"] == real
    store.pins_path.write_text(
        json.dumps({"prefixed": "f" * 64}), encoding="utf-8"
    )  # as if another file had been pinned first
    line = error_line(invoke("weights", "fetch", "prefixed", "--force"))
    assert "pinned at its first verified download" in line
    assert WeightStore().has("prefixed")  # the earlier good file is kept
