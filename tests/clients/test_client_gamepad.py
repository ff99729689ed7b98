"""Pad mapping, Windows-only parts on Linux, and the CLI surface (no server needed)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from client_testkit import REPO
from nitrogen_client import BUTTON_NAMES
from nitrogen_client.gamepad import (
    MENU_BUTTONS,
    PadState,
    VGamepadPad,
    action_state,
    ds4_axis,
    ds4_hat,
    pad_states,
    stick_axis,
    stick_axis_y,
)
from nitrogen_client.windows import WindowNotFoundError, find_window, not_found_message, similar_names


def buttons(*names: str) -> np.ndarray:
    row = np.zeros(21, np.float32)
    for n in names:
        row[BUTTON_NAMES.index(n)] = 1.0
    return row


def test_sticks_scale_by_32767_and_invert_y_for_windows():
    assert [stick_axis(v) for v in (1.0, -1.0, 0.0, 0.5, -0.5)] == [32767, -32767, 0, 16383, -16383]
    # y: model screen-down positive -> XInput up positive, v -> -v - 1 in int16 units
    assert [stick_axis_y(v) for v in (1.0, -1.0, 0.0, 0.5)] == [-32768, 32766, -1, -16384]
    # out-of-range values are clamped to int16, never wrapped
    assert stick_axis(3.0) == 32767 and stick_axis(-3.0) == -32768 and stick_axis_y(-3.0) == 32767


def test_action_state_triggers_buttons_and_menu_guard():
    row = buttons("SOUTH", "LEFT_TRIGGER", "START", "BACK", "GUIDE", "DPAD_UP", "RIGHT_UP")
    s = action_state([0.25, 1.0], [-1.0, -0.5], row)
    assert s == PadState(
        left_x=8191,
        left_y=-32768,
        right_x=-32767,
        right_y=16382,
        left_trigger=255,
        right_trigger=0,
        buttons=frozenset({"SOUTH", "DPAD_UP"}),
    )
    allowed = action_state([0, 0], [0, 0], row, allow_menu=True)
    assert allowed.buttons == frozenset({"SOUTH", "DPAD_UP"}) | MENU_BUTTONS
    # RIGHT_UP & co. are model outputs without a pad control: never pressed
    assert "RIGHT_UP" not in allowed.buttons
    # buttons press strictly above 0.5
    half = np.zeros(21, np.float32)
    half[BUTTON_NAMES.index("EAST")] = 0.5
    half[BUTTON_NAMES.index("WEST")] = 0.51
    assert action_state([0, 0], [0, 0], half).buttons == frozenset({"WEST"})


def test_pad_states_one_per_step():
    pred = {
        "j_left": np.array([[0, 0], [1, 1]], np.float32),
        "j_right": np.zeros((2, 2), np.float32),
        "buttons": np.stack([buttons("RIGHT_TRIGGER"), buttons()]),
    }
    states = pad_states(pred)
    assert [s.right_trigger for s in states] == [255, 0]
    assert states[1].left_x == 32767 and states[1].left_y == -32768


def test_ds4_conversion():
    assert ds4_axis(0) == 128 and ds4_axis(32767) == 255 and ds4_axis(-32767) == 1
    # DS4 y is down-positive: model y = +1 (down) -> XInput -32768 -> DS4 255
    assert ds4_axis(stick_axis_y(1.0), flip=True) == 255
    assert ds4_axis(stick_axis_y(-1.0), flip=True) == 1
    assert ds4_axis(stick_axis_y(0.0), flip=True) == 128
    assert ds4_hat(frozenset({"DPAD_UP", "DPAD_RIGHT"})) == "NORTHEAST"
    assert ds4_hat(frozenset({"DPAD_UP", "DPAD_DOWN"})) == "NONE"
    assert ds4_hat(frozenset()) == "NONE"


def test_similar_process_names():
    running = ["Celeste64.exe", "explorer.exe", "svchost.exe", "celeste_launcher.exe", "steam.exe"]
    assert similar_names("celeste.EXE", running)[:2] == ["Celeste64.exe", "celeste_launcher.exe"]
    msg = not_found_message("Celeste.exe", running)
    assert "'Celeste.exe'" in msg and "Celeste64.exe" in msg and "svchost" not in msg
    assert "No running process has a similar name" in not_found_message("zzz.exe", running)


@pytest.mark.skipif(sys.platform == "win32", reason="checks the non-Windows error path")
def test_windows_only_parts_fail_clearly_elsewhere():
    with pytest.raises(OSError, match="needs Windows"):
        find_window("game.exe")
    with pytest.raises(RuntimeError, match="vgamepad"):
        VGamepadPad("xbox")
    from nitrogen_client.capture import DxcamCapture

    with pytest.raises(RuntimeError, match="dxcam"):
        DxcamCapture(hwnd=1)
    assert issubclass(WindowNotFoundError, LookupError)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    src = str(REPO / "clients" / "python" / "src")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from nitrogen_client.cli import main;"
        " raise SystemExit(main(sys.argv[2:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, src, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_help_lists_the_flags():
    out = run_cli("--help")
    assert out.returncode == 0
    for flag in (
        "--process",
        "--host",
        "--port",
        "--protocol",
        "--allow-menu",
        "--pad",
        "--fps",
        "--video",
        "--out",
        "--no-record",
    ):
        assert flag in out.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="checks the non-Windows error path")
def test_cli_off_windows_exits_with_a_clear_error():
    out = run_cli("--process", "game.exe", "--countdown", "0")
    assert out.returncode == 2
    assert "needs Windows" in out.stderr


def test_package_imports_without_torch():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import nitrogen_client, nitrogen_client.cli, nitrogen_client.player, nitrogen_client.capture,"
        " nitrogen_client.gamepad, nitrogen_client.windows, nitrogen_client.recording,"
        " nitrogen_client.overlay, nitrogen_client.video_capture;"
        "heavy = ('torch', 'nitrogen', 'dxcam', 'vgamepad', 'av');"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy);"
        "assert not bad, bad"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "clients" / "python" / "src")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_opposite_directions_cancel_as_in_the_lua_scripts():
    """Up+Down or Left+Right together: neither is held (one rule for every client)."""
    row = np.zeros(len(BUTTON_NAMES), np.float32)
    for name in ("DPAD_UP", "DPAD_DOWN", "DPAD_LEFT", "SOUTH"):
        row[BUTTON_NAMES.index(name)] = 1.0
    state = action_state([0, 0], [0, 0], row)
    assert state.buttons == frozenset({"DPAD_LEFT", "SOUTH"})
    row[BUTTON_NAMES.index("DPAD_RIGHT")] = 1.0
    assert action_state([0, 0], [0, 0], row).buttons == frozenset({"SOUTH"})
