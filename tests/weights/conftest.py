"""Fixtures for the weights tests: a local HTTP server and a registry file pointing at it."""

from __future__ import annotations

import pytest

from tests.weights.fileserver import FileServer, local_only


@pytest.fixture
def server(monkeypatch):
    local_only(monkeypatch)
    srv = FileServer().start()
    yield srv
    srv.close()
