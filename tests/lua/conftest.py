"""Fixtures for the BizHawk script tests: the real lua5.4 + LuaSocket, a real nitrogen-server subprocess
(golden tiny-a checkpoint), the tiny-a frames as PNG files, and the harness runner."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from fakeserver import fake  # noqa: F401 - the fixture, shared with tests/emulator
from luaharness import EVAL, SCRIPT, Harness, ServerProcess, find_lua, write_frames


@pytest.fixture(scope="session")
def lua() -> str:
    return find_lua()


@pytest.fixture(scope="session")
def lua_eval(lua, tmp_path_factory):
    """lua_eval(snippet) -> the JSON values the Lua snippet emit()s, run against the script's internals."""
    folder = tmp_path_factory.mktemp("lua_eval")

    def run(snippet: str) -> list:
        path = folder / f"snippet_{time.monotonic_ns()}.lua"
        path.write_text(snippet)
        proc = subprocess.run(
            [lua, str(EVAL), str(SCRIPT), str(path)], capture_output=True, text=True, timeout=30, check=False
        )
        assert proc.returncode == 0, f"lua5.4 failed:\n{proc.stderr}"
        return [json.loads(line) for line in proc.stdout.splitlines()]

    return run


@pytest.fixture(scope="module")
def tiny_server(golden_dir):
    server = ServerProcess(str(golden_dir / "tiny-a.pt"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def golden_frames(golden, tmp_path_factory) -> Path:
    """The tiny-a frames as PNG files frame_0.png ... (what the screenshot stub hands the script)."""
    return write_frames(golden("tiny-a"), tmp_path_factory.mktemp("golden_frames"))


@pytest.fixture
def harness(lua, tmp_path) -> Harness:
    return Harness(lua, tmp_path)
