"""The pad -> game maps: the console table is the Lua core's (same data, same presses), and the README
shows exactly the tables the code uses."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import CLIENT_SRC, REPO, eval_env, run_eval
from mapsource import TARGET, lua_console_maps, lua_emit, render

sys.path.insert(0, str(CLIENT_SRC))
from nitrogen_client.evaluate.atari import ATARI_MAP, action_name
from nitrogen_client.evaluate.doom import DOOM_MAP
from nitrogen_client.evaluate.padmap import console_map, pad_inputs
from nitrogen_client.wire import BUTTON_NAMES

CONSOLES = ["NES", "SNES", "GB", "GBC", "GBA", "GEN", "32X"]


def test_console_maps_file_is_the_lua_table():
    assert TARGET.read_text() == render(lua_console_maps()), (
        "console_maps.json differs from clients/lua/nitrogen_core.lua: run python tests/evaluate/mapsource.py")


def actions(seed: int, n: int) -> list[tuple[list[float], list[float], list[float]]]:
    """Buttons at random (menu buttons included), sticks on and around the dead-zone."""
    rng = np.random.default_rng(seed)
    edges = [-1.0, -0.51, -0.5, -0.49, 0.0, 0.49, 0.5, 0.51, 1.0]
    out = []
    for _ in range(n):
        buttons = (rng.random(len(BUTTON_NAMES)) < 0.3).astype(float).tolist()
        jl, jr = (rng.choice(edges, 2).tolist() if rng.random() < 0.5 else rng.uniform(-1, 1, 2).tolist()
                  for _ in range(2))
        out.append((buttons, jl, jr))
    return out


def lua_table(values: list[float]) -> str:
    return "{" + ", ".join(repr(float(v)) for v in values) + "}"


@pytest.mark.parametrize("allow_menu", [False, True])
def test_python_presses_what_the_lua_clients_press(allow_menu):
    """Same console, same action -> the same buttons in BizHawk/mGBA (Lua) and stable-retro (Python)."""
    acts = actions(7, 300)
    calls = "\n".join(
        f"emit(press(M.MAPS[M.SYSTEM_ALIASES['{c}'] or '{c}'], {lua_table(b)}, {lua_table(jl)}, {lua_table(jr)}))"
        for c in CONSOLES for b, jl, jr in acts)
    lua = lua_emit(f"""
        local cfg = {{allow_menu = {str(allow_menu).lower()}, stick_deadzone = M.DEFAULTS.stick_deadzone,
                      analog_deadzone = M.DEFAULTS.analog_deadzone}}
        function press(map, b, jl, jr)
          local rmap = M.resolve_map(map, {{}})
          local pad, out = M.action_to_pad(rmap, b, jl, jr, cfg), {{}}
          for name, on in pairs(pad) do if on then out[#out + 1] = name:sub(#map.prefix + 1) end end
          table.sort(out)
          return {{n = #out, pressed = out}}
        end
        {calls}""")
    python = [sorted(console_map(c).press(pad_inputs(jl, jr, b, allow_menu=allow_menu)))
              for c in CONSOLES for b, jl, jr in acts]
    assert [x["pressed"] if x["n"] else [] for x in lua] == python
    assert sum(map(len, python)) > len(python), "the actions press something"


def one(*names: str) -> list[float]:
    return [float(n in names) for n in BUTTON_NAMES]


@pytest.mark.parametrize(("buttons", "jl", "want"), [
    (one(), (0.0, 0.0), "NOOP"),
    (one("SOUTH"), (0.0, 0.0), "FIRE"),
    (one("NORTH"), (0.51, 0.0), "RIGHTFIRE"),
    (one(), (0.5, 0.0), "NOOP"),  # on the dead-zone is inside it
    (one(), (-0.9, -0.9), "UPLEFT"),  # model y < 0 is up
    (one("DPAD_UP"), (0.0, 0.9), "NOOP"),  # d-pad Up + stick Down cancel
    (one("DPAD_UP", "DPAD_DOWN", "WEST"), (0.0, 0.0), "FIRE"),
    (one("DPAD_DOWN", "DPAD_RIGHT", "EAST"), (0.0, 0.0), "DOWNRIGHTFIRE"),
    (one("START", "BACK", "LEFT_TRIGGER"), (0.0, 0.0), "NOOP"),
])
def test_atari_actions(buttons, jl, want):
    assert action_name(ATARI_MAP.press(pad_inputs(jl, (0.0, 0.0), buttons))) == want


def test_doom_twin_stick_layout():
    pressed = DOOM_MAP.press(pad_inputs((0.0, -0.8), (-0.7, 0.0), one("RIGHT_TRIGGER", "EAST")))
    assert pressed == {"MOVE_FORWARD", "TURN_LEFT", "ATTACK", "USE"}
    assert DOOM_MAP.press(pad_inputs((0.6, 0.0), (0.9, 0.0), one("DPAD_LEFT"))) == {"TURN_RIGHT"}


def test_readme_shows_the_tables_the_code_uses():
    proc = run_eval("--maps", timeout=60)
    assert proc.returncode == 0, proc.stderr
    readme = (REPO / "README.md").read_text()
    section = re.search(r"## Evaluate on real games\n(.*?)\n## ", readme, re.DOTALL)
    assert section, "README has no 'Evaluate on real games' section"
    assert proc.stdout in section.group(1), "README's pad tables differ from `nitrogen-eval --maps`"


def test_eval_never_imports_torch():
    """nitrogen-eval belongs to the torch-free client: making all three games must not pull torch in."""
    code = ("import sys\nfrom nitrogen_client.evaluate import cli, worker\n"
            "from nitrogen_client.evaluate.registry import backend_for\n"
            "for env_id in ('ALE/Breakout-v5', 'Airstriker-Genesis-v0', 'VizdoomBasic-MultiBinary-v1'):\n"
            "    backend = backend_for(env_id)\n    backend.check()\n    backend.make().close()\n"
            "print(sorted(m for m in ('torch', 'gymnasium') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], env=eval_env(), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "['gymnasium']"
