"""The play loop: capture -> 256x256 -> predict -> play each action for ``repeat`` frames -> again.

Backends come in through the Capture and Pad interfaces, so the loop itself runs (and is tested) on any
OS. When the server goes away the pad is released and the player keeps reconnecting until it is back;
while the game window is hidden it waits. With a freezing GamePause (``--pause speedhack``) the game
runs only while an action is held; in real time the actions that fell due during the round trip are
skipped (``skip_stale``). Clock and sleep come in too, so tests drive the timing with a fake clock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .base import PolicyClient
from .capture import Capture, CaptureUnavailable
from .errors import CaptureEnded, ProtocolError, ServerError, TransportError
from .gamepad import MENU_BUTTONS, Pad, PadState, pad_states
from .images import resize_area
from .pacing import FramePacer, Waiter, fine_timer, stale_actions
from .pause import GamePause, RealTime
from .recording import RunRecorder
from .startup import press_all, wake_up
from .wire import BUTTON_NAMES, FRAME_SIDE

log = logging.getLogger(__name__)
HIDDEN_POLL_S = 0.25  # how often a hidden game window is looked at again


@dataclass
class PlayerOptions:
    """How the player paces and guards the pad; defaults are the original player's behaviour."""

    fps: float = 60.0  # pad frames per second; each predicted action lasts `repeat` of them
    allow_menu: bool = False  # let the model press START / BACK / GUIDE
    frame_size: int = FRAME_SIDE
    seed: int | None = None  # prediction i uses seed + i: a run that can be replayed exactly
    reconnect_delay_s: float = 1.0  # first wait between reconnect attempts, doubling up to the max
    reconnect_max_delay_s: float = 10.0
    give_up_after_s: float | None = None  # None: keep trying to reconnect forever
    max_server_errors: int = 5  # consecutive error replies tolerated before giving up
    skip_stale: bool = False  # real time: skip the actions that fell due during the round trip
    start_presses: tuple[str, ...] = field(default_factory=tuple)  # pressed once before the first frame
    wake_up: bool = False  # the original's L3 press (and 1 s wait) before the first frame

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.frame_size <= 0:
            raise ValueError(f"frame_size must be > 0, got {self.frame_size}")


@dataclass
class PlayerStats:
    predictions: int = 0
    pad_frames: int = 0
    reconnects: int = 0
    menu_presses_blocked: int = 0
    stale_skipped: int = 0  # actions not played because their time passed during the round trip
    last_round_trip_s: float | None = None  # capture to reply, of the last prediction


class Player:
    """Drives ``pad`` from ``client`` predictions on ``capture`` frames. ``run`` blocks; ``stop`` ends it
    from another thread. The pad is reset whenever the loop ends, Ctrl+C included."""

    def __init__(
        self,
        client: PolicyClient,
        capture: Capture,
        pad: Pad,
        options: PlayerOptions | None = None,
        recorder: RunRecorder | None = None,
        pause: GamePause | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.capture = capture
        self.pad = pad
        self.options = options or PlayerOptions()
        self.recorder = recorder
        self.stats = PlayerStats()
        self.repeat = 1
        self.info: dict | None = None
        self.pause = pause or RealTime()
        self._stop = threading.Event()
        self._clock = clock
        self._waiter = Waiter(clock, sleep, stopped=self._stop.is_set)
        self._pacer = FramePacer(self.options.fps, self._waiter)

    def stop(self) -> None:
        """Ask the loop to end after the current pad frame."""
        self._stop.set()

    def _sleep(self, seconds: float) -> None:
        self._waiter.sleep(seconds)  # in short slices: returns early on stop(), sees Ctrl+C on Windows

    def run(self, max_predictions: int | None = None) -> PlayerStats:
        """Play until stop(), Ctrl+C, a fatal error, or ``max_predictions`` predictions."""
        server_errors = 0
        hidden = False
        cleanup = contextlib.ExitStack()
        try:
            cleanup.enter_context(fine_timer())
            cleanup.callback(self.pause.close)  # never leave the game frozen
            self.capture.focus()
            self._connect()
            self._start_presses()
            self.pause.freeze()
            while not self._stop.is_set():
                if max_predictions is not None and self.stats.predictions >= max_predictions:
                    break
                try:
                    self._predict_and_play()
                    server_errors = 0
                    if hidden:
                        log.info("the game window is back; playing")
                    hidden = False
                except CaptureUnavailable as exc:
                    if not hidden:
                        log.warning("%s: pad released, waiting for the game", exc)
                    hidden = True
                    self.pad.reset()
                    self._sleep(HIDDEN_POLL_S)
                except CaptureEnded as exc:  # a --video source played to its end
                    log.info("%s; stopping", exc)
                    break
                except TransportError as exc:
                    log.warning("lost the server (%s); pad released, reconnecting", exc)
                    self.pad.reset()
                    self.stats.reconnects += 1
                    self._connect()
                except ServerError as exc:
                    server_errors += 1
                    self.pad.reset()
                    if server_errors >= self.options.max_server_errors:
                        raise
                    log.error(
                        "server error %d/%d: %s", server_errors, self.options.max_server_errors, exc.message
                    )
                    self._sleep(self.options.reconnect_delay_s)
        finally:
            try:
                self.pad.reset()
            finally:
                cleanup.close()
                log.info(
                    "player stopped: %d predictions, %d pad frames, %d reconnects",
                    self.stats.predictions,
                    self.stats.pad_frames,
                    self.stats.reconnects,
                )
        return self.stats

    def _connect(self) -> None:
        """reset + info until the server answers; learn ``repeat`` from action_downsample_ratio."""
        delay = self.options.reconnect_delay_s
        started = time.monotonic()
        while not self._stop.is_set():
            try:
                self.client.reset()
                info = self.client.info()
            except TransportError as exc:
                waited = time.monotonic() - started
                if self.options.give_up_after_s is not None and waited >= self.options.give_up_after_s:
                    raise
                log.warning("server not reachable (%s); retrying in %.1f s", exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, self.options.reconnect_max_delay_s)
                continue
            repeat = info.get("action_downsample_ratio")
            if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
                raise ProtocolError(
                    f"server info has action_downsample_ratio={repeat!r}; expected an int >= 1"
                )
            self.repeat, self.info = repeat, info
            if self.recorder is not None:
                self.recorder.record_info(info)
            log.info(
                "connected: checkpoint %s, horizon %s, each action held %d frames at %g fps",
                info.get("ckpt_path"),
                info.get("action_horizon"),
                repeat,
                self.options.fps,
            )
            return

    def _start_presses(self) -> None:
        """What some games need before they take a virtual pad, then the original's wake-up press."""
        if self.options.start_presses:
            log.info("start presses: %s", ", ".join(self.options.start_presses))
            press_all(self.pad, self.options.start_presses, self._sleep)
        if self.options.wake_up:
            wake_up(self.pad, self._sleep)

    def _predict_and_play(self) -> None:
        captured = self._clock()
        frame = resize_area(self.capture.latest(), self.options.frame_size)
        step = self.stats.predictions
        seed = None if self.options.seed is None else self.options.seed + step
        pred = self.client.predict(frame, seed=seed)
        self.stats.last_round_trip_s = self._clock() - captured
        states = pad_states(pred, allow_menu=self.options.allow_menu)
        skip = 0
        if self.options.skip_stale and not self.pause.freezes:
            skip = stale_actions(self.stats.last_round_trip_s, self.options.fps, self.repeat, len(states))
            self.stats.stale_skipped += skip
        if not self.options.allow_menu:
            self._count_blocked(pred["buttons"])
        self.stats.predictions += 1
        if self.recorder is not None:
            self.recorder.record(step, frame, pred, states, self.repeat, self.client.last_timing)
        self._play(states, skip)

    def _count_blocked(self, buttons: np.ndarray) -> None:
        idx = [BUTTON_NAMES.index(b) for b in sorted(MENU_BUTTONS)]
        blocked = int((buttons[:, idx] > 0.5).sum())
        if blocked:
            self.stats.menu_presses_blocked += blocked
            log.debug("suppressed %d START/BACK/GUIDE presses (use --allow-menu to allow them)", blocked)

    def _play(self, states: list[PadState], first: int = 0) -> None:
        """Hold each action from ``first`` on for ``repeat`` pad frames: paced in real time, or one
        resume-hold-freeze of the game per frame when the pause freezes it."""
        for index in range(first, len(states)):
            state = states[index]
            for _ in range(self.repeat):
                if self._stop.is_set():
                    return
                self.pad.apply(state)
                if self.recorder is not None:  # it grabs the frame the game shows while the pad holds `state`
                    self.recorder.pad_frame(self.capture.latest, index, state)
                self.stats.pad_frames += 1
                if self.pause.freezes:
                    self.pause.hold(self._pacer.period, self._waiter)
                else:
                    self._pacer.wait()
