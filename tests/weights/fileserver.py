"""A real HTTP file server on 127.0.0.1 for the download tests, with Range support and fault injection.

Faults are queued per path and consumed one per request, so a test can say "the first request drops
the connection after 100 kB, the second succeeds". Every request is recorded (path, Range header,
whether it came through as a proxy request), so tests can check what the client actually did.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import threading
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

CHUNK = 16 * 1024


@dataclass(frozen=True)
class Fault:
    kind: str  # "status", "drop_after", "delay" (no answer), "stall_after", "ignore_range", "gzip"
    value: float = 0


@dataclass(frozen=True)
class Seen:
    path: str
    range: str | None
    proxied: bool
    status: int


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[Fault]] = defaultdict(list)
        self.requests: list[Seen] = []
        self.chunk_delay = 0.0  # seconds between body chunks (to make transfers overlap)
        self.stop = threading.Event()
        self.first_request = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def add(self, path: str, data: bytes) -> str:
        self.files["/" + path.lstrip("/")] = data
        return self.url(path)

    def fault(self, path: str, *faults: Fault) -> None:
        self.faults["/" + path.lstrip("/")].extend(faults)

    def seen(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == "/" + path.lstrip("/")]

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()  # wakes handlers that are sleeping to simulate a slow server
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler_for(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        def _record(self, path: str, proxied: bool, status: int) -> None:
            with server._lock:
                server.requests.append(Seen(path, self.headers.get("Range"), proxied, status))
            server.first_request.set()

        def _status(self, path: str, proxied: bool, code: int, extra: dict[str, str] | None = None) -> None:
            self._record(path, proxied, code)
            body = f"status {code}\n".encode()
            self.send_response(code)
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            proxied = self.path.startswith("http://")
            path = urlparse(self.path).path if proxied else self.path.split("?")[0]
            with server._lock:
                queue = server.faults.get(path)
                fault = queue.pop(0) if queue else None
            if fault and fault.kind == "delay":  # say nothing at all, then hang up
                self._record(path, proxied, 0)
                server.stop.wait(fault.value)
                return
            if fault and fault.kind == "status":
                return self._status(path, proxied, int(fault.value))
            data = server.files.get(path)
            if data is None:
                return self._status(path, proxied, 404)
            if fault and fault.kind == "gzip" and "gzip" in (self.headers.get("Accept-Encoding") or ""):
                # A server compressing what the client accepts (a CDN, nginx's `gzip on`): the body and its
                # Content-Length are the compressed representation's, ranges included.
                return self._gzipped(path, proxied, gzip.compress(data, mtime=0))
            start, total = 0, len(data)
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match and not (fault and fault.kind == "ignore_range"):
                start = int(match.group(1))
                if start >= total:
                    return self._status(path, proxied, 416, {"Content-Range": f"bytes */{total}"})
                self._record(path, proxied, 206)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
            else:
                self._record(path, proxied, 200)
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total - start))
            self.end_headers()
            limit = total
            if fault and fault.kind in ("drop_after", "stall_after"):
                limit = min(total, start + int(fault.value))
            pos = start
            try:
                while pos < limit and not server.stop.is_set():
                    end = min(limit, pos + CHUNK)
                    self.wfile.write(data[pos:end])
                    pos = end
                    if server.chunk_delay:
                        server.stop.wait(server.chunk_delay)
                self.wfile.flush()
                if fault and fault.kind == "stall_after":
                    server.stop.wait(30)  # headers and some bytes sent, then silence
            except (BrokenPipeError, ConnectionResetError):
                pass
            # drop_after: returning closes the connection (HTTP/1.0) before Content-Length bytes arrived

        def _gzipped(self, path: str, proxied: bool, body: bytes) -> None:
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            start = int(match.group(1)) if match else 0
            self._record(path, proxied, 206 if match else 200)
            self.send_response(206 if match else 200)
            if match:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start:])

    return Handler


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_registry(path: Path, entries: list[dict[str, Any]]) -> Path:
    """A registry file of the packaged format, for `$IQA_WEIGHTS_REGISTRY`."""
    full = []
    for e in entries:
        full.append(
            {
                "kind": "backbone",
                "method": None,
                "dataset": "test",
                "licence": "test",
                "origin": "tests",
                "published": True,
                "note": "",
                **e,
            }
        )
    path.write_text(json.dumps({"format": 1, "entries": full}), encoding="utf-8")
    return path


PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def local_only(monkeypatch: Any) -> None:
    """No proxy from the machine's environment: every test request goes straight to 127.0.0.1."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
