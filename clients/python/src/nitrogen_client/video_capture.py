"""A gameplay video, or a folder of frames, as the player's screen (``nitrogen-play --video``).

The frame returned at pad time t is the source's frame at time t, t read from a clock the player
drives (its pad frames / fps), so a run over the same video sends the same frames on any machine,
however long each predict takes. That makes the whole player (loop, pacing, recording) testable
without a game, a screen or a gamepad.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from .capture import Capture
from .errors import CaptureEnded
from .images import to_rgb_array

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
# Container timestamps are rounded (Matroska keeps milliseconds): a frame due within this of the pad
# time counts as shown, so frame n of a 60 fps file is frame n at pad time n / 60.
_TOLERANCE_S = 1e-3


def _folder_frames(folder: Path, fps: float) -> Iterator[tuple[float, float, np.ndarray]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"--video folder {folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    log.info("playing %d images from %s at %g fps", len(files), folder, fps)
    for i, path in enumerate(files):
        with Image.open(path) as img:
            yield i / fps, 1 / fps, to_rgb_array(img)


def _video_frames(path: Path) -> Iterator[tuple[float, float, np.ndarray]]:
    import av  # the client's dependency, imported late so a plain `import nitrogen_client` stays light

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise ValueError(f"--video {path} is not a video PyAV can read: {exc}") from exc
    with container:
        if not container.streams.video:
            raise ValueError(f"--video {path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 60)
        log.info("playing %s: %dx%d at %.3g fps", path, stream.width, stream.height, rate)
        start = None
        for frame in container.decode(stream):
            t = frame.time if frame.time is not None else 0.0
            start = t if start is None else start  # a stream may begin at a non-zero timestamp
            known = frame.duration and frame.time_base
            duration = float(frame.duration * frame.time_base) if known else 1 / rate
            yield t - start, duration, frame.to_ndarray(format="rgb24")


class VideoCapture(Capture):
    """Frames of a video file (anything PyAV decodes) or of a folder of images, by the clock's time.

    ``clock`` returns the pad time in seconds; it only moves forward, so the source is decoded once,
    in order. A folder's images, sorted by name, are one frame each at ``folder_fps``. Past the last
    frame ``latest`` raises CaptureEnded, which ends the player's run.
    """

    def __init__(self, source: str | Path, clock: Callable[[], float] | None = None,
                 folder_fps: float = 60.0) -> None:
        path = Path(source)
        if not path.exists():
            raise ValueError(f"--video {path}: no such file or folder")
        if not folder_fps > 0:
            raise ValueError(f"folder_fps must be > 0, got {folder_fps}")
        self.path = path
        self.clock: Callable[[], float] = clock or (lambda: 0.0)
        self._frames = _folder_frames(path, folder_fps) if path.is_dir() else _video_frames(path)
        self._current: tuple[float, float, np.ndarray] | None = None
        self._next: tuple[float, float, np.ndarray] | None = None
        self._exhausted = False
        self.frames_decoded = 0

    def _pull(self) -> tuple[float, float, np.ndarray] | None:
        if self._next is None and not self._exhausted:
            self._next = next(self._frames, None)
            self._exhausted = self._next is None
            self.frames_decoded += self._next is not None
        return self._next

    def latest(self) -> np.ndarray:
        t = self.clock() + _TOLERANCE_S
        while (nxt := self._pull()) is not None and (self._current is None or nxt[0] <= t):
            self._current, self._next = nxt, None
        if self._current is None:
            raise ValueError(f"--video {self.path} has no frames")
        start, duration, frame = self._current
        if self._exhausted and t >= start + duration:
            raise CaptureEnded(f"{self.path} ended at {start + duration:.3f} s")
        return frame

    def close(self) -> None:
        frames, self._frames = self._frames, iter(())
        close = getattr(frames, "close", None)
        if callable(close):
            close()  # runs the generator's `with container:` exit
