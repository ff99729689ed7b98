"""When each pad frame happens, and which actions of a chunk are already late when it arrives.

Windows rounds lock and Event waits (and, before Python 3.11, ``time.sleep``) up to its 15.6 ms timer
tick: a pacer built on them holds 60 fps frames for 15.6 or 31.2 ms. ``Waiter`` sleeps in short
slices up to a margin before the deadline and spins the rest, so frames land on time on any OS, and a
stop request or Ctrl+C is seen within one slice (a lock wait cannot be interrupted on Windows).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

SLICE_S = 0.05  # longest single sleep: how soon a stop request or Ctrl+C is seen
MARGIN_S = 0.002  # spin this long before a deadline; grows to the worst oversleep seen
MAX_MARGIN_S = 0.05
SLACK_S = 0.0005


class Waiter:
    """Waits until a deadline on ``clock``: sleeps, then spins the last ``margin`` seconds.

    The margin adapts: when a sleep overshoots by more than the margin (a coarse OS timer), the margin
    becomes that overshoot, so a coarse timer costs CPU time, never a late frame. ``stopped`` is polled
    between slices; ``until`` returns False when it said stop.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
        stopped: Callable[[], bool] = lambda: False,
        margin_s: float = MARGIN_S,
        slice_s: float = SLICE_S,
    ) -> None:
        self.clock = clock
        self._sleep = sleep
        self._stopped = stopped
        self.margin_s = margin_s
        self.slice_s = slice_s

    def until(self, deadline: float) -> bool:
        """Return at ``deadline`` (True), or as soon as ``stopped()`` is true (False)."""
        while not self._stopped():
            now = self.clock()
            remaining = deadline - now
            if remaining <= 0:
                return True
            if remaining > self.margin_s:
                nap = min(remaining - self.margin_s, self.slice_s)
                self._sleep(nap)
                over = self.clock() - now - nap
                if over + SLACK_S > self.margin_s:
                    self.margin_s = min(over + SLACK_S, MAX_MARGIN_S)
            else:
                self._sleep(0)  # yield, then look at the clock again
        return False

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; False if stopped first."""
        return self.until(self.clock() + seconds)


class FramePacer:
    """Makes successive ``wait`` calls 1/fps apart; after a stall (a predict) it restarts the schedule
    instead of bursting frames to catch up."""

    def __init__(self, fps: float, waiter: Waiter | None = None) -> None:
        self.period = 1.0 / fps
        self.waiter = waiter or Waiter()
        self._next: float | None = None

    def wait(self) -> bool:
        """Wait for the next frame time; False if the waiter was stopped first."""
        now = self.waiter.clock()
        if self._next is None or now - self._next > self.period:
            self._next = now
        self._next += self.period
        return self.waiter.until(self._next)


def stale_actions(round_trip_s: float, fps: float, repeat: int, horizon: int) -> int:
    """How many of a chunk's first actions were due before it arrived (LeRobot's real-time chunking
    drops its first ``inference_delay`` actions the same way).

    Action i was due from ``i * repeat / fps`` after the frame was captured to ``(i + 1) * repeat / fps``;
    the ones whose time ended within the round trip are skipped. The last action is always kept, so
    a round trip longer than the chunk still plays its freshest action.
    """
    if horizon <= 0:
        return 0
    late = math.floor(max(round_trip_s, 0.0) * fps / repeat + 1e-9)
    return min(late, horizon - 1)


@contextlib.contextmanager
def fine_timer() -> Iterator[None]:
    """On Windows, ask for a 1 ms system timer while playing (timeBeginPeriod), so the waiter's
    sleeps are short and it spins little; elsewhere, nothing."""
    if sys.platform != "win32":
        yield
        return
    import ctypes

    winmm = ctypes.WinDLL("winmm")
    ok = winmm.timeBeginPeriod(1) == 0
    try:
        yield
    finally:
        if ok:
            winmm.timeEndPeriod(1)
