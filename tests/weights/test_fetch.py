"""Downloads against a real HTTP server on 127.0.0.1 that injects faults."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iqa_cli.errors import ConfigError, DownloadError
from iqa_cli.weights.fetch import FetchOptions, fetch
from iqa_cli.weights.store import WeightStore, sha256_file
from tests.weights.fileserver import Fault, sha256, write_registry

pytestmark = pytest.mark.timeout(60)

DATA = random.Random(0).randbytes(300_000)
FAST = FetchOptions(connect_timeout=2, read_timeout=2, retries=3, backoff=0.01, max_backoff=0.05)


class RecordingProgress:
    def __init__(self) -> None:
        self.total: int | None = None
        self.advanced = 0

    def start(self, description: str, total: int | None) -> None:
        self.total = total

    def advance(self, n: int = 1) -> None:
        self.advanced += n

    def finish(self) -> None:
        pass


@pytest.fixture
def known(server, tmp_path, monkeypatch):
    """Register `name -> served file` entries (sha256 of DATA unless given) and return the store."""

    def make(*entries: dict) -> WeightStore:
        full = []
        for e in entries:
            e = dict(e)
            path = e.pop("path", f"files/{e['name']}.pth")
            data = e.pop("data", DATA)
            if e.pop("serve", True):
                server.add(path, data)
            e.setdefault("urls", [server.url(path)])
            if "sha256_prefix" not in e:
                e.setdefault("sha256", sha256(data))
            full.append(e)
        registry = write_registry(tmp_path / "registry.json", full)
        monkeypatch.setenv("IQA_WEIGHTS_REGISTRY", str(registry))
        return WeightStore()

    return make


def test_fetch_streams_verifies_and_stores(server, known):
    store = known({"name": "net"})
    progress = RecordingProgress()
    stored = fetch("net", store=store, options=FAST, progress=progress)
    path = store.path("net")
    assert path.read_bytes() == DATA
    assert stored.sha256 == sha256(DATA) == sha256_file(path)
    assert stored.size == len(DATA) and stored.source == server.url("files/net.pth")
    assert progress.total == len(DATA) and progress.advanced == len(DATA)
    assert not list(store.root.glob("*.partial"))
    # A second fetch reuses the stored file without asking the server again.
    fetch("net", store=store, options=FAST)
    assert len(server.seen("files/net.pth")) == 1


def test_dropped_connection_is_resumed_with_range(server, known, caplog):
    caplog.set_level(logging.INFO, logger="iqa_cli")
    store = known({"name": "net"})
    server.fault("files/net.pth", Fault("drop_after", 100_000))
    progress = RecordingProgress()
    fetch("net", store=store, options=FAST, progress=progress)
    assert store.path("net").read_bytes() == DATA
    seen = server.seen("files/net.pth")
    assert [s.status for s in seen] == [200, 206]
    resumed_at = int(seen[1].range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= 100_000  # bytes received before the drop (up to one unwritten chunk) are kept
    assert any("resuming" in line for line in caplog.messages)


def test_partial_download_is_resumed_by_the_next_run(server, known):
    store = known({"name": "net"})
    server.fault("files/net.pth", Fault("drop_after", 123_456))
    with pytest.raises(DownloadError, match="partial file is kept"):
        fetch("net", store=store, options=FetchOptions(retries=0, read_timeout=2))
    kept = store.partial_path("net").stat().st_size
    assert 0 < kept <= 123_456
    assert not store.has("net")
    fetch("net", store=store, options=FAST)
    assert store.path("net").read_bytes() == DATA
    assert server.seen("files/net.pth")[-1].range == f"bytes={kept}-"
    assert not store.partial_path("net").exists()


def test_complete_partial_file_is_verified_not_downloaded_again(server, known):
    store = known({"name": "net"})
    store.root.mkdir(parents=True)
    store.partial_path("net").write_bytes(DATA)  # e.g. a crash between download and rename
    fetch("net", store=store, options=FAST)
    assert [s.status for s in server.seen("files/net.pth")] == [416]
    assert store.path("net").read_bytes() == DATA


def test_server_ignoring_range_restarts_cleanly(server, known):
    store = known({"name": "net"})
    server.fault("files/net.pth", Fault("drop_after", 50_000), Fault("ignore_range"))
    fetch("net", store=store, options=FAST)
    assert [s.status for s in server.seen("files/net.pth")] == [200, 200]
    assert store.path("net").read_bytes() == DATA


def test_wrong_hash_deletes_the_download(server, known):
    store = known({"name": "net", "sha256": sha256(b"some other file")})
    with pytest.raises(DownloadError, match="SHA-256 mismatch.*deleted"):
        fetch("net", store=store, options=FAST)
    assert not store.has("net")
    assert not store.partial_path("net").exists()
    assert [p.name for p in store.root.iterdir() if not p.name.endswith(".lock")] == []


def test_hash_prefix_from_the_file_name_is_checked(server, known):
    store = known(
        {"name": "good", "sha256_prefix": sha256(DATA)[:8]},
        {"name": "bad", "sha256_prefix": "00000000" if not sha256(DATA).startswith("0") else "ffffffff"},
    )
    assert fetch("good", store=store, options=FAST).extra["verified"] == f"sha256 prefix {sha256(DATA)[:8]}"
    with pytest.raises(DownloadError, match="mismatch"):
        fetch("bad", store=store, options=FAST)


def test_404_fails_at_once_without_retries(server, known):
    store = known({"name": "gone", "serve": False})
    options = FetchOptions(retries=5, backoff=2.0)  # a retry would take seconds
    started = time.monotonic()
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch("gone", store=store, options=options)
    assert time.monotonic() - started < 1.5
    assert len(server.seen("files/gone.pth")) == 1


def test_500_then_success_is_retried(server, known, caplog):
    caplog.set_level(logging.INFO, logger="iqa_cli")
    store = known({"name": "net"})
    server.fault("files/net.pth", Fault("status", 500), Fault("status", 503))
    progress = RecordingProgress()
    fetch("net", store=store, options=FAST, progress=progress)
    assert [s.status for s in server.seen("files/net.pth")] == [500, 503, 200]
    assert sum("retrying" in line for line in caplog.messages) == 2
    assert store.path("net").read_bytes() == DATA


def test_persistent_500_gives_up_after_the_retries(server, known):
    store = known({"name": "net"})
    server.fault("files/net.pth", *[Fault("status", 500)] * 10)
    with pytest.raises(DownloadError, match=r"HTTP 500.*3 attempts"):
        fetch("net", store=store, options=FetchOptions(retries=2, backoff=0.01))
    assert len(server.seen("files/net.pth")) == 3


@pytest.mark.parametrize("fault", [Fault("delay", 20), Fault("stall_after", 1000)], ids=["no-headers", "mid-body"])
def test_slow_server_times_out(server, known, fault):
    store = known({"name": "net"})
    server.fault("files/net.pth", fault, fault)
    started = time.monotonic()
    with pytest.raises(DownloadError, match="timed out|Read timed out"):
        fetch("net", store=store, options=FetchOptions(connect_timeout=1, read_timeout=0.3, retries=1, backoff=0.01))
    assert time.monotonic() - started < 3
    assert len(server.seen("files/net.pth")) == 2
    assert not store.has("net")


def test_offline_mode_uses_the_store_only(server, known, monkeypatch):
    store = known({"name": "net", "file_name": "net-1234abcd.pth"})
    monkeypatch.setenv("IQA_OFFLINE", "1")
    with pytest.raises(DownloadError, match=r"offline.*'net' \(net-1234abcd.pth\) is not in the weights store"):
        fetch("net", store=store, options=FAST)
    assert server.requests == []
    monkeypatch.delenv("IQA_OFFLINE")
    fetch("net", store=store, options=FAST)
    monkeypatch.setenv("IQA_OFFLINE", "1")
    assert fetch("net", store=store, options=FAST).sha256 == sha256(DATA)  # stored files still resolve
    assert len(server.requests) == 1


def test_mirror_option_and_environment(server, known, monkeypatch):
    store = known({"name": "net", "file_name": "net-v1.pth", "serve": False})
    server.add("mirror/net-v1.pth", DATA)
    fetch("net", store=store, options=FetchOptions(mirror=server.url("mirror/")))
    assert store.get("net").source == server.url("mirror/net-v1.pth")
    assert [s.path for s in server.requests] == ["/mirror/net-v1.pth"]  # the origin URL was not asked
    store.rm("net")
    monkeypatch.setenv("IQA_WEIGHTS_MIRROR", server.url("mirror"))
    fetch("net", store=store, options=FAST)
    assert store.path("net").read_bytes() == DATA


def test_only_http_urls(known, tmp_path, monkeypatch):
    store = known({"name": "net"})
    with pytest.raises(ConfigError, match="only http"):
        fetch("net", store=store, options=FetchOptions(mirror="file:///etc"))
    registry = write_registry(tmp_path / "bad.json", [{"name": "x", "urls": ["ftp://h/x.pth"], "sha256": "0" * 64}])
    monkeypatch.setenv("IQA_WEIGHTS_REGISTRY", str(registry))
    with pytest.raises(ConfigError, match="only http"):
        fetch("x", store=store)


@pytest.mark.parametrize(
    ("field", "says"),
    [
        ({"loadable": "false"}, "loadable must be true or false, got 'false'"),  # read as true
        ({"published": "no"}, "published must be true or false, got 'no'"),
        ({"size": "12a"}, "size must be a whole number of bytes, got '12a'"),  # an internal ValueError
    ],
)
def test_a_registry_file_s_fields_have_their_json_types(tmp_path, monkeypatch, field, says):
    from iqa_cli.weights.registry import known_weights

    entry = {"name": "x", "urls": ["http://h/x.pth"], "sha256": "0" * 64, **field}
    monkeypatch.setenv("IQA_WEIGHTS_REGISTRY", str(write_registry(tmp_path / "mine.json", [entry])))
    with pytest.raises(ConfigError, match=f"entry 'x': {says}"):
        known_weights()


def test_a_registry_that_is_no_regular_file_is_named_as_what_it_is(tmp_path, monkeypatch):
    """A folder or /dev/null as `$IQA_WEIGHTS_REGISTRY` was "a file that does not exist"."""
    from iqa_cli.weights.registry import known_weights

    for path, says in [(tmp_path, "a folder"), (Path(os.devnull), "no regular file"),
                       (tmp_path / "gone.json", "a file that does not exist")]:  # fmt: skip
        monkeypatch.setenv("IQA_WEIGHTS_REGISTRY", str(path))
        with pytest.raises(ConfigError, match=f"IQA_WEIGHTS_REGISTRY names {says}: {path} "):
            known_weights()


def test_proxy_from_the_environment_is_used(server, known, monkeypatch):
    # The entry's host does not exist; the request only works if requests sends it to the proxy
    # named in the environment (our local server, which also answers proxy-style requests).
    store = known({"name": "net", "urls": ["http://weights.example.invalid/files/net.pth"]})
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("NO_PROXY", "localhost")
    monkeypatch.setenv("no_proxy", "localhost")
    fetch("net", store=store, options=FAST)
    assert [s.proxied for s in server.seen("files/net.pth")] == [True]
    assert store.path("net").read_bytes() == DATA


def test_unpublished_and_refused_entries_say_what_to_do(server):
    store = WeightStore()
    with pytest.raises(DownloadError, match=r"must be downloaded by hand.*iqa weights import vtiqa FILE"):
        fetch("vtiqa_koniq10k", store=store)
    with pytest.raises(DownloadError, match="TorchScript"):
        fetch("clip_vit_b16_openai", store=store)
    with pytest.raises(ConfigError, match="unknown checkpoint"):
        fetch("no_such_checkpoint", store=store)
    assert server.requests == []


FETCH_SCRIPT = """
import logging
import sys
from iqa_cli.weights.fetch import FetchOptions, fetch
from iqa_cli.weights.store import WeightStore

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
stored = fetch("net", options=FetchOptions(retries=0, read_timeout=10))
print(WeightStore().path("net"), stored.sha256)
"""


def test_two_processes_fetching_the_same_file(server, known):
    store = known({"name": "net", "data": DATA * 4})
    server.chunk_delay = 0.04  # ~75 chunks: the first download takes ~3 s, so the second must wait
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", FETCH_SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    first = start()
    assert server.first_request.wait(20), "the first process never reached the server"
    second = start()
    outs = [p.communicate(timeout=40) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    lines = {out.strip() for out, _ in outs}
    assert len(lines) == 1  # both report the same stored file and hash
    path, digest = lines.pop().split()
    assert digest == sha256(DATA * 4) == sha256_file(path)
    assert len(server.seen("files/net.pth")) == 1  # one download, reused by the second process
    assert ".net.lock: another iqa process holds it" in outs[1][1]  # the wait names the lock file
    assert not store.partial_path("net").exists()
    assert [e.name for e in store.entries()] == ["net"]


def test_a_server_that_compresses_what_the_client_accepts_still_gives_the_file(server, known):
    """requests asks for gzip by default; a server that then compresses the file (a CDN, nginx's `gzip on`)
    sent a Content-Length of the compressed body, which the transfer compared with the decoded bytes: every
    try read as a connection closed early, and the fetch gave up on a good file. iqa asks for the bytes
    as stored (`Accept-Encoding: identity`), as curl and wget do."""
    data = bytes(300_000)  # compresses well: the two lengths differ
    store = known({"name": "net", "data": data})
    server.fault("files/net.pth", Fault("gzip"), Fault("gzip"), Fault("gzip"), Fault("gzip"))
    fetch("net", store=store, options=FAST)
    assert store.path("net").read_bytes() == data
    assert len(server.seen("files/net.pth")) == 1


def test_a_mirror_s_credentials_and_a_signed_url_s_query_never_reach_messages_or_records(server, known, monkeypatch):
    """`IQA_WEIGHTS_MIRROR=https://user:token@mirror/...` printed the token in every error and retry line
    (a shared job log), and the store recorded it as the file's source; so did a signed URL's query."""
    store = known({"name": "net"})
    secret_mirror = f"http://lab:s3cret@127.0.0.1:{server.port}/files"
    monkeypatch.setenv("IQA_WEIGHTS_MIRROR", secret_mirror + "/missing")  # 404: an error naming the URL
    with pytest.raises(DownloadError) as refused:
        fetch("net", store=store, options=FAST)
    assert "s3cret" not in str(refused.value) and "lab:" not in str(refused.value)
    assert f"http://***@127.0.0.1:{server.port}/files/missing/net.pth: HTTP 404" in str(refused.value)
    monkeypatch.setenv("IQA_WEIGHTS_MIRROR", secret_mirror)
    stored = fetch("net", store=store, options=FAST)
    assert stored.source == f"http://***@127.0.0.1:{server.port}/files/net.pth"
    assert "s3cret" not in (store.root / "index.json").read_text(encoding="utf-8")


def test_shown_urls_keep_the_host_and_path_only():
    from iqa_cli.weights.registry import scrub_url, shown_url

    url = "https://me:tok@host.org:8443/w/net.pth?X-Amz-Signature=abc123&X-Amz-Credential=k"
    assert shown_url(url) == "https://***@host.org:8443/w/net.pth?***"
    said = "GET /w/net.pth?X-Amz-Signature=abc123&X-Amz-Credential=k failed for " + url
    assert "abc123" not in scrub_url(said, url) and "tok" not in scrub_url(said, url)
    assert shown_url("https://host.org/w/net.pth") == "https://host.org/w/net.pth"
