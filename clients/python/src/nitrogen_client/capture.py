"""Frame sources for the player: the Capture interface and the dxcam (Windows) backend.

dxcam runs continuously in its own thread and we always take the latest frame, so a slow predict
never makes the player act on a stale, queued screenshot. The capture follows the game window from
monitor to monitor; while the window is minimised or behind another one it reports
``CaptureUnavailable`` and the player waits instead of stopping.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from .windows import Monitor, Rect, Win32Window, make_dpi_aware

log = logging.getLogger(__name__)
_T = TypeVar("_T", bound="Capture")


class CaptureUnavailable(RuntimeError):
    """No frame of the game right now (its window is minimised, or another window is in front):
    the player releases the pad and waits for it to come back."""


class Capture(ABC):
    """Something that yields the game's current frame as an H x W x 3 uint8 RGB array."""

    @abstractmethod
    def latest(self) -> np.ndarray:
        """The most recent frame (blocking only until the first one exists)."""

    def close(self) -> None:
        """Stop capturing; safe to call twice."""

    def focus(self) -> None:
        """Bring the game to the front before play starts (a window capture does; others need not)."""

    def __enter__(self: _T) -> _T:  # noqa: PYI019 (typing.Self needs 3.11; we support 3.10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GameWindowApi(Protocol):
    """What the capture needs of the game window (``windows.Win32Window``; a stand-in in tests)."""

    def client_rect(self) -> Rect: ...
    def monitor(self) -> Monitor: ...
    def is_minimized(self) -> bool: ...
    def is_foreground(self) -> bool: ...
    def bring_to_front(self) -> bool: ...


@dataclass(frozen=True)
class DxcamOutput:
    """One screen dxcam can capture: ``dxcam.create(device_idx, output_idx)``; ``name`` is the GDI
    device name (``Monitor.device``) and ``rect`` its place on the desktop."""

    device_idx: int
    output_idx: int
    name: str
    rect: Rect


def dxcam_outputs(dxcam: Any) -> list[DxcamOutput]:
    """Every output dxcam 0.3 found (its factory keeps them; no public call lists names or places)."""
    factory = vars(dxcam).get("__factory")
    found = []
    for d, outputs in enumerate(getattr(factory, "outputs", [])):
        for o, out in enumerate(outputs):
            c = out.desc.DesktopCoordinates
            found.append(DxcamOutput(d, o, str(out.devicename), Rect(c.left, c.top, c.right, c.bottom)))
    return found


def pick_output(outputs: list[DxcamOutput], monitor: Monitor, requested: int | None = None) -> DxcamOutput:
    """The output to capture: the ``requested`` one (``--monitor N``), else the one showing the
    window's monitor."""
    names = ", ".join(f"{i}: {o.name} {o.rect.width}x{o.rect.height}" for i, o in enumerate(outputs))
    if requested is not None:
        if not 0 <= requested < len(outputs):
            raise ValueError(f"--monitor {requested} does not exist; dxcam's outputs are {names or 'none'}")
        return outputs[requested]
    for out in outputs:
        if out.name == monitor.device:
            return out
    raise ValueError(
        f"the game window is on {monitor.device}, which no dxcam output shows ({names or 'none'}); "
        "pass --monitor N"
    )


def region_on(client: Rect, output: DxcamOutput) -> tuple[int, int, int, int]:
    """The window's client area in the output's own coordinates, clipped to it (dxcam refuses a
    region outside its output)."""
    o = output.rect
    r = Rect(max(client.left, o.left) - o.left, max(client.top, o.top) - o.top,
             min(client.right, o.right) - o.left, min(client.bottom, o.bottom) - o.top)
    if r.width <= 0 or r.height <= 0:
        raise ValueError(
            f"the game window's client area {client} is not on the captured screen {output.name} {o}; "
            "move the window there, or pass the --monitor it is on"
        )
    return (r.left, r.top, r.right, r.bottom)


class DxcamCapture(Capture):
    """Continuous Desktop Duplication capture of a window's client area.

    Every ``recheck_s`` seconds the window's place is read again; the capture restarts when the window
    moved or was resized, and moves to another output when the window went to another monitor.
    ``output_idx`` None follows the window; a number pins one output (``--monitor``). With
    ``require_foreground`` a window that is not the active one counts as unavailable: what would be
    captured is whatever covers it, and many games ignore a pad while in the background.
    ``window``, ``outputs`` and ``create_camera`` default to Win32 and dxcam; tests pass stand-ins.
    """

    def __init__(
        self,
        hwnd: int | None = None,
        fps: float = 60.0,
        output_idx: int | None = None,
        recheck_s: float = 1.0,
        *,
        window: GameWindowApi | None = None,
        outputs: list[DxcamOutput] | None = None,
        create_camera: Callable[[DxcamOutput], Any] | None = None,
        require_foreground: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if create_camera is None:
            try:
                import dxcam  # Windows-only: imported here so the package loads anywhere
            except Exception as exc:
                raise RuntimeError(f"screen capture needs dxcam (Windows only): {exc}") from exc
            make_dpi_aware()
            outputs = dxcam_outputs(dxcam) if outputs is None else outputs

            def create_camera(out: DxcamOutput) -> Any:
                # The numpy processor (compiled kernels in dxcam's wheels) avoids needing OpenCV.
                return dxcam.create(device_idx=out.device_idx, output_idx=out.output_idx, output_color="RGB",
                                    processor_backend="numpy")

        if window is None:
            if hwnd is None:
                raise ValueError("DxcamCapture needs the game window (hwnd or window)")
            window = Win32Window(hwnd)
        self.window = window
        self.fps = fps
        self.output_idx = output_idx
        self.recheck_s = recheck_s
        self.require_foreground = require_foreground
        self.outputs = list(outputs or [])
        self._create_camera = create_camera
        self._clock = clock
        self._camera: Any = None
        self._output: DxcamOutput | None = None
        self._region: tuple[int, int, int, int] | None = None
        self._checked_at: float | None = None
        self._last: np.ndarray | None = None
        if not self.outputs:
            raise RuntimeError("dxcam lists no outputs (no display attached, or a dxcam other than 0.3)")
        if not window.is_minimized():
            self._follow_window(force=True)  # a wrong --monitor fails here, before play starts

    def focus(self) -> None:
        if not self.window.bring_to_front():
            log.warning("could not bring the game window to the front: click on it")

    def _follow_window(self, force: bool = False) -> None:
        now = self._clock()
        if not force and self._checked_at is not None and now - self._checked_at < self.recheck_s:
            return
        self._checked_at = now
        client = self.window.client_rect()
        output = pick_output(self.outputs, self.window.monitor(), self.output_idx)
        region = region_on(client, output)
        if output == self._output and region == self._region and self._camera is not None:
            return
        if output != self._output:
            self._release_camera()
            self._camera = self._create_camera(output)
            self._output = output
        elif self._camera.is_capturing:
            self._camera.stop()
        log.info("capturing %s region %s at %g fps", output.name, region, self.fps)
        self._camera.start(region=region, target_fps=round(self.fps), video_mode=True)
        self._region = region

    def latest(self) -> np.ndarray:
        if self.window.is_minimized():
            self._checked_at = None  # look again at once when it is back
            raise CaptureUnavailable("the game window is minimised")
        if self.require_foreground and not self.window.is_foreground():
            self._checked_at = None
            raise CaptureUnavailable("the game window is not the active window (alt-tab?)")
        try:
            self._follow_window()
        except ValueError as exc:  # moved off a pinned --monitor: wait for it to come back
            raise CaptureUnavailable(str(exc)) from exc
        frame = self._camera.get_latest_frame()
        if frame is None:  # dxcam hiccup (e.g. a mode switch): reuse the last good frame
            if self._last is None:
                raise RuntimeError("dxcam returned no frame")
            log.warning("dxcam returned no frame; reusing the previous one")
            return self._last
        self._last = np.ascontiguousarray(frame[:, :, :3])
        return self._last

    def _release_camera(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            if camera.is_capturing:
                camera.stop()
            release = getattr(camera, "release", None)
            if callable(release):
                release()

    def close(self) -> None:
        self._release_camera()
