"""The console maps as the Lua core defines them, read by running it in lua5.4; and the generator of
their Python copy (``nitrogen_client/evaluate/console_maps.json``), which a test keeps equal to this.

Regenerate after editing ``core.MAPS`` in clients/lua/nitrogen_core.lua:
``python tests/evaluate/mapsource.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "lua"))
from luaharness import EVAL, SCRIPT, find_lua

TARGET = REPO / "clients" / "python" / "src" / "nitrogen_client" / "evaluate" / "console_maps.json"
SOURCE_NOTE = ("generated from clients/lua/nitrogen_core.lua (core.MAPS, core.SYSTEM_ALIASES, "
               "core.DEFAULTS.stick_deadzone) by tests/evaluate/mapsource.py; do not edit")
SNIPPET = "emit({maps = M.MAPS, aliases = M.SYSTEM_ALIASES, stick_deadzone = M.DEFAULTS.stick_deadzone})\n"


def lua_emit(snippet: str) -> list[Any]:
    """Run a Lua snippet against the BizHawk script's internals (``M``); the values it ``emit``s."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snippet.lua"
        path.write_text(snippet)
        proc = subprocess.run([find_lua(), str(EVAL), str(SCRIPT), str(path)], capture_output=True,
                              text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"lua5.4 failed:\n{proc.stderr}"
    return [json.loads(line) for line in proc.stdout.splitlines()]


def lua_console_maps() -> dict[str, Any]:
    """``{"maps", "aliases", "stick_deadzone"}`` straight from the Lua core (lua5.4 must be installed)."""
    return lua_emit(SNIPPET)[0]


def render(data: dict[str, Any]) -> str:
    """The package file's exact text: the note first, then the Lua data, keys sorted."""
    return json.dumps({"_source": SOURCE_NOTE, **data}, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render(lua_console_maps()))
    print(f"wrote {TARGET}")
