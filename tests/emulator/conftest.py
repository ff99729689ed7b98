"""Fixtures for the real-emulator tests: the headless mGBA host (compiled once per session), real
nitrogen-server subprocesses (the demo model and the golden tiny-a checkpoint) and a recording relay."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lua"))  # luaharness: server, pad spec

from fakeserver import fake  # noqa: F401 - the fixture, shared with tests/lua
from luaharness import ServerProcess
from mgba_host import Host, build_host
from relay import Relay


@pytest.fixture(scope="session")
def mgba_exe(tmp_path_factory) -> Path:
    return build_host(tmp_path_factory.mktemp("mgba_host"))


@pytest.fixture
def host(mgba_exe, tmp_path) -> Host:
    return Host(mgba_exe, tmp_path)


@pytest.fixture(scope="session", params=["demo", "golden"])
def server(request, golden_dir) -> Iterator[ServerProcess]:
    checkpoint = "demo" if request.param == "demo" else str(golden_dir / "tiny-a.pt")
    proc = ServerProcess(checkpoint)
    yield proc
    proc.stop()


@pytest.fixture
def relay(server) -> Iterator[Relay]:
    r = Relay(server.port)
    yield r
    r.stop()
