"""Pad-frame timing and late actions, on a fake clock (no timing depends on this machine's speed).

The player's loop runs against the real server (tiny-a); only time is faked: a predict "takes" what
the test says, and sleeps round up like Windows' 15.6 ms timer where the test says so.
"""

from __future__ import annotations

import numpy as np
import pytest
from client_testkit import FakeClock
from nitrogen_client import ModelClient
from nitrogen_client.gamepad import PadState, pad_states
from nitrogen_client.images import resize_area
from nitrogen_client.pacing import SLICE_S, FramePacer, Waiter, stale_actions
from nitrogen_client.player import Player, PlayerOptions
from test_client_player import FrameSource, RecordingPad, ReplySpy

WINDOWS_TICK = 0.015625


@pytest.mark.parametrize("fps", [60.0, 144.0, 30.0])
def test_pad_frames_are_one_period_apart_on_a_windows_timer(fps):
    """Sleeps that round up to 15.6 ms (Windows' default timer, what Event.wait gives there) held 60 fps
    frames for 15.6 or 31.2 ms; the waiter spins the last stretch, so every frame lands on time once it
    has seen how coarse the timer is (at most the first few frames)."""
    clock = FakeClock(tick=WINDOWS_TICK)
    pacer = FramePacer(fps, Waiter(clock.now, clock.sleep))
    times = []
    for _ in range(200):
        pacer.wait()
        times.append(clock.t)
    gaps = np.diff(times)[5:]
    np.testing.assert_allclose(gaps, 1 / fps, atol=1e-4)


def test_a_stop_is_seen_within_one_slice():
    """No single sleep is longer than SLICE_S: Ctrl+C (and stop()) get through on Windows, where a
    sleeping lock wait cannot be interrupted."""
    clock = FakeClock()
    stop_at = 1.0
    waiter = Waiter(clock.now, clock.sleep, stopped=lambda: clock.t >= stop_at)
    assert waiter.sleep(30.0) is False
    assert clock.t < stop_at + SLICE_S + 1e-3 and max(clock.naps) <= SLICE_S


def test_stale_action_count():
    assert stale_actions(0.100, 60, 1, 16) == 6  # the example
    assert stale_actions(0.100, 60, 2, 16) == 3  # each action lasts two pad frames
    assert stale_actions(0.010, 60, 1, 16) == 0  # under one frame: nothing is late
    assert stale_actions(2.0, 60, 1, 16) == 15  # later than the whole chunk: its last action still plays


class SlowReplies(ReplySpy):
    """The real server's reply, arriving ``round_trip_s`` after the request on the fake clock."""

    def __init__(self, inner, clock: FakeClock, round_trip_s: float) -> None:
        super().__init__(inner)
        self.clock = clock
        self.round_trip_s = round_trip_s

    def predict(self, image, seed=None):
        pred = super().predict(image, seed=seed)
        self.clock.t += self.round_trip_s
        return pred


def play(server, tiny_a, *, skip_stale: bool, round_trip_s: float = 0.100):
    frames = [tiny_a[f"image_{i}"] for i in range(int(tiny_a["n_steps"]))]
    clock = FakeClock()
    spy = SlowReplies(ModelClient("127.0.0.1", server.zmq_port), clock, round_trip_s)
    pad = RecordingPad()
    options = PlayerOptions(fps=60.0, seed=100, skip_stale=skip_stale)
    player = Player(spy, FrameSource(frames), pad, options, clock=clock.now, sleep=clock.sleep)
    with spy:
        stats = player.run(max_predictions=len(frames))
    for i, (sent, _) in enumerate(spy.sent):  # what was sent is the original's INTER_AREA resize
        np.testing.assert_array_equal(sent, resize_area(frames[i]))
    return player, stats, spy, pad


def applied(pad: RecordingPad) -> list[PadState]:
    assert pad.calls[-1] == ("reset",) and ("reset",) not in pad.calls[:-1]  # nothing released mid-run
    return [c[1] for c in pad.calls[:-1]]


def test_real_time_skips_the_actions_already_late(server, tiny_a):
    """A 100 ms round trip at 60 fps, repeat 1: the first 6 actions of each chunk were due while the
    reply was on its way; they are skipped, the 7th plays at once, and between chunks the pad holds the
    last action played."""
    player, stats, spy, pad = play(server, tiny_a, skip_stale=True)
    assert player.repeat == 1 and len(spy.replies) == 4
    horizon = len(spy.replies[0]["buttons"])
    expected = [s for pred in spy.replies for s in pad_states(pred)[6:]]
    assert applied(pad) == expected
    assert stats.stale_skipped == 6 * len(spy.replies) and stats.pad_frames == (horizon - 6) * len(spy.replies)
    assert stats.last_round_trip_s == pytest.approx(0.100, abs=1e-3)


def test_no_skip_stale_plays_every_action(server, tiny_a):
    _, stats, spy, pad = play(server, tiny_a, skip_stale=False)
    assert applied(pad) == [s for pred in spy.replies for s in pad_states(pred)]
    assert stats.stale_skipped == 0
