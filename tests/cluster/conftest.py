"""Fixtures for the cluster tests: the working tree's Python client, the BizHawk script's harness
(tests/lua/luaharness.py, used as it is), lua5.4 + LuaSocket, and the golden frames as PNG files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# The client under test is the working tree's, and the Lua harness is the Lua tests' own.
for path in (REPO / "clients" / "python" / "src", REPO / "tests" / "lua"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from luaharness import find_lua, write_frames


@pytest.fixture(scope="session")
def lua_exe() -> str:
    return find_lua()


@pytest.fixture(scope="session")
def golden_pngs(golden, tmp_path_factory) -> Path:
    """tiny-a's frames as frame_0.png ... (what the BizHawk screenshot stub hands the script)."""
    return write_frames(golden("tiny-a"), tmp_path_factory.mktemp("cluster_golden_frames"))
