"""The pad before and after play: start presses, the wake-up press, and unplugging the vgamepad pad.

vgamepad needs Windows and its ViGEmBus driver; ``standin_vgamepad`` keeps the surface of vgamepad
0.2.0 that the player uses, including what matters here: it has no ``close()``, and a pad is unplugged
(vigem_target_remove) by its ``__del__``. The player and the server are real.
"""

from __future__ import annotations

import sys
import types

import pytest
from client_testkit import FakeClock
from nitrogen_client import ModelClient
from nitrogen_client.cli import main
from nitrogen_client.gamepad import PadState, VGamepadPad, pad_states
from nitrogen_client.player import Player, PlayerOptions
from nitrogen_client.startup import GAP_S, PRESS_S, WAKE_UP_SETTLE_S, parse_presses, presses_for
from test_client_player import FrameSource, RecordingPad, ReplySpy


class TimedPad(RecordingPad):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.times: list[float] = []

    def apply(self, state) -> None:
        super().apply(state)
        self.times.append(self.clock.t)

    def reset(self) -> None:
        super().reset()
        self.times.append(self.clock.t)


def press(*names: str) -> tuple:
    return ("apply", PadState(buttons=frozenset(names)))


def test_start_presses_then_wake_up_come_before_the_first_frame(server, tiny_a):
    clock = FakeClock()
    pad = TimedPad(clock)
    spy = ReplySpy(ModelClient("127.0.0.1", server.zmq_port))
    frames = FrameSource([tiny_a["image_0"]])
    options = PlayerOptions(seed=100, start_presses=presses_for("Cuphead.exe", "auto"), wake_up=True)
    player = Player(spy, frames, pad, options, clock=clock.now, sleep=clock.sleep)
    with spy:
        player.run(max_predictions=1)
    startup = [press("SOUTH"), ("reset",)] + [press("EAST"), ("reset",)] * 5 + [press("LEFT_THUMB"), ("reset",)]
    n = len(startup)
    assert pad.calls[:n] == startup
    assert pad.calls[n:] == [("apply", s) for s in pad_states(spy.replies[0])] + [("reset",)]
    assert frames.taken == 1  # the first frame was taken after the presses
    held = [pad.times[i + 1] - pad.times[i] for i in range(0, n - 2, 2)]
    assert held == pytest.approx([PRESS_S] * 6, abs=1e-3)  # 50 ms each, 0.3 s apart
    assert pad.times[2] - pad.times[1] == pytest.approx(GAP_S, abs=1e-3)
    assert pad.times[n] - pad.times[n - 1] >= WAKE_UP_SETTLE_S  # the game had a second to see the pad


def test_start_press_settings():
    assert presses_for("isaac-ng.exe", "auto") == ("SOUTH",) + ("EAST",) * 5
    assert presses_for("celeste.exe", "auto") == () and presses_for("Cuphead.exe", "none") == ()
    assert parse_presses("south, EAST*2 ,start") == ("SOUTH", "EAST", "EAST", "START")
    with pytest.raises(ValueError, match="'JUMP' is not a pad button"):
        parse_presses("SOUTH,JUMP")
    with pytest.raises(ValueError, match="whole number"):
        parse_presses("EAST*x")


def test_a_bad_start_press_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--process", "game.exe", "--start-presses", "SOUTH,JUMP"])
    assert exit_info.value.code == 2 and "'JUMP' is not a pad button" in capsys.readouterr().err


@pytest.fixture
def standin_vgamepad(monkeypatch):
    mod = types.ModuleType("vgamepad")
    mod.unplugged = []
    mod.XUSB_BUTTON = types.SimpleNamespace(XUSB_GAMEPAD_A="A", XUSB_GAMEPAD_LEFT_THUMB="L3")

    class VX360Gamepad:
        def __init__(self) -> None:
            self.sent: list[tuple] = []
            self._report: list = []

        def reset(self) -> None:
            self._report = []

        def press_button(self, button) -> None:
            self._report.append(button)

        def left_joystick(self, x_value, y_value) -> None:
            self._report.append(("left", x_value, y_value))

        def right_joystick(self, x_value, y_value) -> None:
            self._report.append(("right", x_value, y_value))

        def left_trigger(self, value) -> None:
            self._report.append(("lt", value))

        def right_trigger(self, value) -> None:
            self._report.append(("rt", value))

        def update(self) -> None:
            mod.last_report = list(self._report)

        def __del__(self) -> None:  # vgamepad: vigem_target_remove + vigem_target_free
            mod.unplugged.append("x360")

    mod.VX360Gamepad = VX360Gamepad
    monkeypatch.setitem(sys.modules, "vgamepad", mod)
    return mod


def test_closing_the_pad_unplugs_it(standin_vgamepad):
    """vgamepad 0.2.0 has no close(): before, the pad stayed plugged in until the process exited."""
    pad = VGamepadPad("xbox")
    pad.apply(PadState(buttons=frozenset({"SOUTH"})))
    assert "A" in standin_vgamepad.last_report and standin_vgamepad.unplugged == []
    pad.close()
    assert standin_vgamepad.unplugged == ["x360"]
    assert standin_vgamepad.last_report == []  # released before it went
    pad.close()  # twice is fine
    assert standin_vgamepad.unplugged == ["x360"]
