"""Frame sources for the player: the Capture interface and the dxcam (Windows) backend.

dxcam runs continuously in its own thread and we always take the latest frame, so a slow predict
never makes the player act on a stale, queued screenshot.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from typing import TypeVar

import numpy as np

from .windows import Rect, client_rect, make_dpi_aware, monitor_rect

log = logging.getLogger(__name__)
_T = TypeVar("_T", bound="Capture")


class Capture(ABC):
    """Something that yields the game's current frame as an H x W x 3 uint8 RGB array."""

    @abstractmethod
    def latest(self) -> np.ndarray:
        """The most recent frame (blocking only until the first one exists)."""

    def close(self) -> None:
        """Stop capturing; safe to call twice."""

    def __enter__(self: _T) -> _T:  # noqa: PYI019 (typing.Self needs 3.11; we support 3.10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DxcamCapture(Capture):
    """Continuous Desktop Duplication capture of a window's client area.

    The region follows the window: its position is checked every ``recheck_s`` seconds and the
    capture restarts when the window moved or was resized. ``output_idx`` is the dxcam output
    (monitor) the window is on; 0 is the primary one.
    """

    def __init__(self, hwnd: int, fps: float = 60.0, output_idx: int = 0, recheck_s: float = 1.0) -> None:
        try:
            import dxcam  # Windows-only: imported here so the package loads anywhere
        except Exception as exc:
            raise RuntimeError(f"screen capture needs dxcam (Windows only): {exc}") from exc
        make_dpi_aware()
        self.hwnd = hwnd
        self.fps = fps
        self.recheck_s = recheck_s
        # The numpy processor (compiled kernels in dxcam's wheels) avoids needing OpenCV.
        self._camera = dxcam.create(output_idx=output_idx, output_color="RGB", processor_backend="numpy")
        self._region: tuple[int, int, int, int] | None = None
        self._checked_at = 0.0
        self._last: np.ndarray | None = None
        self._restart_if_moved(force=True)

    def _region_now(self) -> tuple[int, int, int, int]:
        client, mon = client_rect(self.hwnd), monitor_rect(self.hwnd)
        # Monitor-relative and clipped to it: dxcam refuses regions outside its output.
        r = Rect(
            max(client.left - mon.left, 0),
            max(client.top - mon.top, 0),
            min(client.right - mon.left, mon.width),
            min(client.bottom - mon.top, mon.height),
        )
        if r.width <= 0 or r.height <= 0:
            raise RuntimeError(f"the game window's client area {client} is not on the captured monitor {mon}")
        return (r.left, r.top, r.right, r.bottom)

    def _restart_if_moved(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < self.recheck_s:
            return
        self._checked_at = now
        region = self._region_now()
        if region == self._region and not force:
            return
        if self._camera.is_capturing:
            self._camera.stop()
        log.info("capturing region %s at %g fps", region, self.fps)
        self._camera.start(region=region, target_fps=round(self.fps), video_mode=True)
        self._region = region

    def latest(self) -> np.ndarray:
        self._restart_if_moved()
        frame = self._camera.get_latest_frame()
        if frame is None:  # dxcam hiccup (e.g. a mode switch): reuse the last good frame
            if self._last is None:
                raise RuntimeError("dxcam returned no frame")
            log.warning("dxcam returned no frame; reusing the previous one")
            return self._last
        self._last = np.ascontiguousarray(frame[:, :, :3])
        return self._last

    def close(self) -> None:
        camera, self._camera = getattr(self, "_camera", None), None
        if camera is not None:
            if camera.is_capturing:
                camera.stop()
            release = getattr(camera, "release", None)
            if callable(release):
                release()
