"""The window capture's logic, with stand-ins for Win32 and dxcam (neither runs off Windows).

``Desktop`` is a picture spanning two monitors; ``StandInCamera`` keeps dxcam 0.3's contract (a region
in its output's own coordinates, refused with ValueError when it leaves the output) and returns that
part of the picture; ``StandInWindow`` answers what Win32 would. The player and the server are real.
"""

from __future__ import annotations

import numpy as np
import pytest
from client_testkit import FakeClock
from nitrogen_client import ModelClient
from nitrogen_client.capture import CaptureUnavailable, DxcamCapture, DxcamOutput
from nitrogen_client.cli import build_parser
from nitrogen_client.gamepad import pad_states
from nitrogen_client.player import Player, PlayerOptions
from nitrogen_client.windows import Monitor, Rect
from test_client_player import RecordingPad, ReplySpy

OUTPUTS = [
    DxcamOutput(0, 0, r"\\.\DISPLAY1", Rect(0, 0, 1920, 1080)),
    DxcamOutput(0, 1, r"\\.\DISPLAY2", Rect(1920, 0, 4480, 1440)),
]
DESKTOP = np.random.default_rng(5).integers(0, 256, (1440, 4480, 3), dtype=np.uint8)


class StandInCamera:
    def __init__(self, output: DxcamOutput) -> None:
        self.output = output
        self.is_capturing = False
        self.region = None
        self.released = False

    def start(self, region, target_fps, video_mode):
        left, top, right, bottom = region
        w, h = self.output.rect.width, self.output.rect.height
        if not (w >= right > left >= 0 and h >= bottom > top >= 0):
            raise ValueError(f"Invalid Region: Region should be in {w}x{h}")  # dxcam's own check
        self.region, self.is_capturing = region, True

    def stop(self):
        self.is_capturing = False

    def release(self):
        self.released = True

    def get_latest_frame(self):
        left, top, right, bottom = self.region
        ox, oy = self.output.rect.left, self.output.rect.top
        return DESKTOP[oy + top : oy + bottom, ox + left : ox + right].copy()


class StandInWindow:
    """The game window: ``client`` on the desktop; ``hide(n, how)`` hides it for the next n looks."""

    def __init__(self, client: Rect) -> None:
        self.client = client
        self.hidden: list[str] = []
        self.front_requests = 0

    def client_rect(self) -> Rect:
        return self.client

    def monitor(self) -> Monitor:
        def overlap(o: DxcamOutput) -> int:
            r = o.rect
            return max(0, min(r.right, self.client.right) - max(r.left, self.client.left)) * max(
                0, min(r.bottom, self.client.bottom) - max(r.top, self.client.top))
        best = max(OUTPUTS, key=overlap)  # MonitorFromWindow: the monitor showing most of it
        return Monitor(best.name, best.rect)

    def hide(self, looks: int, how: str) -> None:
        self.hidden += [how] * looks

    def is_minimized(self) -> bool:
        if self.hidden and self.hidden[0] == "minimised":
            self.hidden.pop(0)
            return True
        return False

    def is_foreground(self) -> bool:
        if self.hidden and self.hidden[0] == "behind":
            self.hidden.pop(0)
            return False
        return True

    def bring_to_front(self) -> bool:
        self.front_requests += 1
        return True


def capture_for(window: StandInWindow, clock: FakeClock | None = None, output_idx: int | None = None):
    cameras: list[StandInCamera] = []

    def create(output: DxcamOutput) -> StandInCamera:
        cameras.append(StandInCamera(output))
        return cameras[-1]

    clock = clock or FakeClock()
    capture = DxcamCapture(window=window, outputs=OUTPUTS, create_camera=create, output_idx=output_idx,
                           clock=clock.now)
    return capture, cameras


def test_a_game_on_the_second_monitor_is_captured_from_it():
    window = StandInWindow(Rect(2100, 200, 2100 + 1280, 200 + 720))
    capture, cameras = capture_for(window)
    np.testing.assert_array_equal(capture.latest(), DESKTOP[200:920, 2100:3380])
    assert cameras[-1].output.output_idx == 1 and cameras[-1].region == (180, 200, 1460, 920)


def test_the_capture_follows_the_window_to_another_monitor():
    clock = FakeClock()
    window = StandInWindow(Rect(2100, 200, 3380, 920))
    capture, cameras = capture_for(window, clock)
    capture.latest()
    window.client = Rect(100, 50, 1380, 770)  # dragged to the first monitor
    clock.t += capture.recheck_s
    np.testing.assert_array_equal(capture.latest(), DESKTOP[50:770, 100:1380])
    assert [c.output.output_idx for c in cameras] == [1, 0] and cameras[0].released


def test_a_window_across_two_monitors_is_clipped_to_its_own():
    window = StandInWindow(Rect(1500, 100, 2780, 820))  # mostly on DISPLAY2
    capture, cameras = capture_for(window)
    assert cameras[-1].output.output_idx == 1
    np.testing.assert_array_equal(capture.latest(), DESKTOP[100:820, 1920:2780])


def test_a_pinned_monitor_the_game_is_not_on_is_an_error_at_start():
    window = StandInWindow(Rect(2100, 200, 3380, 920))
    with pytest.raises(ValueError, match=r"not on the captured screen \\\\.\\DISPLAY1"):
        capture_for(window, output_idx=0)
    with pytest.raises(ValueError, match="--monitor 5 does not exist"):
        capture_for(window, output_idx=5)
    capture, _ = capture_for(window, output_idx=1)  # the right one, pinned
    np.testing.assert_array_equal(capture.latest(), DESKTOP[200:920, 2100:3380])


def test_monitor_flag():
    parse = build_parser().parse_args
    assert parse(["--process", "g.exe"]).monitor is None
    assert parse(["--process", "g.exe", "--monitor", "auto"]).monitor is None
    assert parse(["--process", "g.exe", "--monitor", "1"]).monitor == 1
    with pytest.raises(SystemExit):
        parse(["--process", "g.exe", "--monitor", "second"])


class HidingReplies(ReplySpy):
    """After predict n, the window hides for a few looks: minimised after the first, behind another
    window (alt-tab) after the second."""

    def __init__(self, inner, window: StandInWindow) -> None:
        super().__init__(inner)
        self.window = window

    def predict(self, image, seed=None):
        pred = super().predict(image, seed=seed)
        if len(self.replies) == 1:
            self.window.hide(3, "minimised")
        elif len(self.replies) == 2:
            self.window.hide(2, "behind")
        return pred


def test_minimising_or_alt_tabbing_waits_instead_of_stopping(server):
    """The game is brought to the front before play; while it is minimised or behind another window the
    pad is released and nothing is sent; when it is back, play goes on where it was."""
    clock = FakeClock()
    window = StandInWindow(Rect(2100, 200, 3380, 920))
    capture, _ = capture_for(window, clock)
    spy = HidingReplies(ModelClient("127.0.0.1", server.zmq_port), window)
    pad = RecordingPad()
    player = Player(spy, capture, pad, PlayerOptions(fps=60.0, seed=1), clock=clock.now, sleep=clock.sleep)
    with spy:
        stats = player.run(max_predictions=3)
    assert window.front_requests == 1 and stats.predictions == 3
    chunks = [[("apply", s) for s in pad_states(p)] for p in spy.replies]
    assert pad.calls == chunks[0] + [("reset",)] * 3 + chunks[1] + [("reset",)] * 2 + chunks[2] + [("reset",)]
    with pytest.raises(CaptureUnavailable, match="minimised"):
        window.hide(1, "minimised")
        capture.latest()
