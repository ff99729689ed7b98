"""The console button maps, in lua5.4: name resolution against the core's buttons and action -> pad."""

from __future__ import annotations

import itertools

import pytest
from luaharness import MODEL_BUTTONS, PAD_SPEC, expected_n64_stick, expected_pad

SYSTEMS = ["NES", "SNES", "GB", "GBC", "GBA", "GEN", "N64"]


def lua_list(values) -> str:
    return "{" + ", ".join(repr(float(v)) if not isinstance(v, str) else f'"{v}"' for v in values) + "}"


def pads(lua_eval, system: str, actions: list[tuple], allow_menu: bool = False) -> list[dict]:
    """M.action_to_pad for `system` on (buttons, j_left, j_right) tuples, with the core's BizHawk names."""
    names = lua_list(PAD_SPEC[system])
    map_name = {"GBC": "GB"}.get(system, system)
    calls = "\n".join(f"emit(call({lua_list(b)}, {lua_list(jl)}, {lua_list(jr)}))" for b, jl, jr in actions)
    return lua_eval(f"""
        local available = {{}}
        for _, n in ipairs({names}) do available[n] = true end
        available["P1 X Axis"], available["P1 Y Axis"] = true, true
        local rmap = M.resolve_map(M.MAPS["{map_name}"], available)
        local cfg = {{allow_menu = {str(allow_menu).lower()}, stick_deadzone = 0.5, analog_deadzone = 0.15}}
        function call(b, jl, jr)
          local pad, analog = M.action_to_pad(rmap, b, jl, jr, cfg)
          return {{pad = pad, analog = analog or {{}}}}
        end
        {calls}""")


def one_hot(name: str) -> list[int]:
    return [int(n == name) for n in MODEL_BUTTONS]


@pytest.mark.parametrize("system", SYSTEMS)
def test_each_model_button_alone(lua_eval, system):
    centre = (0.0, 0.0)
    actions = [(one_hot(name), centre, centre) for name in MODEL_BUTTONS] + [([0] * 21, centre, centre)]
    for allow_menu in (False, True):
        got = pads(lua_eval, system, actions, allow_menu)
        for (b, jl, jr), out in zip(actions, got, strict=True):
            want, _ = expected_pad(system, b, jl, jr, allow_menu)
            assert out["pad"] == want, (system, [MODEL_BUTTONS[i] for i, v in enumerate(b) if v], allow_menu)


@pytest.mark.parametrize("system", SYSTEMS)
def test_sticks_through_the_deadzone(lua_eval, system):
    values = [-1.0, -0.51, -0.49, 0.0, 0.49, 0.51, 1.0]
    actions = [([0] * 21, (x, y), (y, x)) for x, y in itertools.product(values, values)]
    for (b, jl, jr), out in zip(actions, pads(lua_eval, system, actions), strict=True):
        want, _ = expected_pad(system, b, jl, jr)
        assert out["pad"] == want, (system, jl, jr)
        if system == "N64":
            assert tuple(out["analog"][a] for a in ("P1 X Axis", "P1 Y Axis")) == expected_n64_stick(jl), jl
        else:
            assert out["analog"] == {}


def test_n64_stick_scale_direction_and_deadzone(lua_eval):
    actions = [
        ([0] * 21, jl, (0.0, 0.0))
        for jl in [(1.0, 0.0), (-1.0, 0.0), (0.0, -1.0), (0.0, 1.0), (0.1, 0.1), (0.5, -0.25), (0.12, 0.0)]
    ]
    got = [(o["analog"]["P1 X Axis"], o["analog"]["P1 Y Axis"]) for o in pads(lua_eval, "N64", actions)]
    # stick right = +X, stick up (model y < 0) = +Y; radius 0.14 is inside the 0.15 dead-zone
    assert got == [(127, 0), (-127, 0), (0, 127), (0, -127), (0, 0), (64, 32), (0, 0)]


def test_menu_buttons_need_allow_menu(lua_eval):
    start_select = [
        (one_hot("START"), (0, 0), (0, 0)),
        (one_hot("BACK"), (0, 0), (0, 0)),
        (one_hot("GUIDE"), (0, 0), (0, 0)),
    ]
    assert [o["pad"]["P1 Start"] or o["pad"]["P1 Select"] for o in pads(lua_eval, "SNES", start_select)] == [
        False,
        False,
        False,
    ]
    assert [
        (o["pad"]["P1 Start"], o["pad"]["P1 Select"]) for o in pads(lua_eval, "SNES", start_select, True)
    ] == [(True, False), (False, True), (False, False)]


def test_names_follow_the_running_core(lua_eval):
    """Gambatte has "A"; GBHawk has "P1 A"; with no joypad.get() answer the map's own prefix is used."""
    out = lua_eval("""
        local function names(map, available)
          local r, t = M.resolve_map(M.MAPS[map], available), {}
          for n in pairs(r.buttons) do t[#t + 1] = n end
          table.sort(t)
          return {names = t, missing = r.missing}
        end
        emit(names("GB", {A = true, B = true, Up = true, Down = true, Left = true, Right = true,
                          Start = true, Select = true, Power = true}))
        emit(names("GB", {["P1 A"] = true, ["P1 B"] = true, ["P1 Up"] = true, ["P1 Down"] = true,
                          ["P1 Left"] = true, ["P1 Right"] = true, ["P1 Start"] = true,
                          ["P1 Select"] = true}))
        emit(names("GEN", {["P1 A"] = true, ["P1 B"] = true, ["P1 C"] = true, ["P1 Start"] = true,
                           ["P1 Up"] = true, ["P1 Down"] = true, ["P1 Left"] = true, ["P1 Right"] = true}))
        emit(names("NES", {}))
        emit(names("N64", {["P1 A"] = true}))""")
    assert out[0] == {"names": sorted(PAD_SPEC["GB"]), "missing": {}}
    assert out[1]["names"] == sorted("P1 " + n for n in PAD_SPEC["GB"])
    assert out[2] == {
        "names": sorted(["P1 A", "P1 B", "P1 C", "P1 Start", "P1 Up", "P1 Down", "P1 Left", "P1 Right"]),
        "missing": ["Mode", "X", "Y", "Z"],  # a 3-button Genesis pad
    }
    assert out[3]["names"] == sorted(PAD_SPEC["NES"])
    assert out[4]["names"] == ["P1 A"] and "X Axis/Y Axis" in out[4]["missing"]


def test_unknown_console_is_named(harness):
    run = harness.run("PSX", {"port": 9})
    assert run.returncode == 1
    assert 'console "PSX" has no button map' in run.end["error"]


@pytest.mark.parametrize("system", SYSTEMS)
def test_opposite_directions_cancel(lua_eval, system):
    """The one rule (README): a d-pad pair pressed together, by buttons or stick, presses neither."""
    up, down, left, right = (
        ("P1 DPad U", "P1 DPad D", "P1 DPad L", "P1 DPad R")
        if system == "N64"
        else tuple(("" if system.startswith("GB") else "P1 ") + d for d in ("Up", "Down", "Left", "Right"))
    )
    both = [int(n in ("DPAD_UP", "DPAD_DOWN", "DPAD_LEFT")) for n in MODEL_BUTTONS]
    centre = (0.0, 0.0)
    actions = [
        (both, centre, centre),
        ([0] * 21, (0.0, 0.9), centre),
        (one_hot("DPAD_UP"), (0.0, 0.9), centre),
    ]
    if system != "N64":  # the N64 stick is analog: it never presses the d-pad
        actions.append((one_hot("DPAD_RIGHT"), (-0.9, 0.0), centre))
    got = [o["pad"] for o in pads(lua_eval, system, actions)]
    assert not got[0][up] and not got[0][down], "Up+Down cancel"
    assert got[0][left] and not got[0][right], "Left alone stays pressed"
    if system != "N64":
        assert got[1][down] and not got[1][up], "the stick alone presses Down"
        assert not got[2][up] and not got[2][down], "d-pad Up + stick Down cancel"
        assert not got[3][left] and not got[3][right], "d-pad Right + stick Left cancel"


def test_n64_diagonals_stay_on_the_stick_circle(lua_eval):
    corners = [(x, y) for x in (-1.0, 1.0) for y in (-1.0, 1.0)] + [(0.8, 0.7), (1.0, 0.3)]
    got = pads(lua_eval, "N64", [([0] * 21, jl, (0.0, 0.0)) for jl in corners])
    for jl, out in zip(corners, got, strict=True):
        x, y = out["analog"]["P1 X Axis"], out["analog"]["P1 Y Axis"]
        assert x * x + y * y <= 127 * 127, (jl, x, y)
        assert (x, y) == expected_n64_stick(jl)
    assert got[3]["analog"] == {"P1 X Axis": 89, "P1 Y Axis": -89}, "(1, 1) points right and down"
