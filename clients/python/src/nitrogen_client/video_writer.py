"""H.264 files with PyAV, encoded as the original player's ``VideoRecorder`` does (yuv420p, crf, preset)."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .images import to_rgb_array

log = logging.getLogger(__name__)


class VideoWriter:
    """One video stream; its size is the first frame's (H.264 in yuv420p wants even sides).

    Frames are RGB arrays or PIL images; ``close`` flushes the encoder, so a file is only complete once
    it is called (the recorder does that on every exit, Ctrl+C included).
    """

    def __init__(self, path: str | Path, fps: float = 60.0, crf: int = 28, preset: str = "medium") -> None:
        import av  # the client's dependency, imported late so a plain `import nitrogen_client` stays light

        self.path = Path(path)
        self._av = av
        self._container = av.open(str(self.path), mode="w")
        self._fps, self._crf, self._preset = fps, crf, preset
        self._stream: Any = None
        self.frames = 0

    def _open_stream(self, width: int, height: int) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"{self.path}: H.264 (yuv420p) needs even frame sides, got {width}x{height}")
        stream = self._container.add_stream("h264", rate=Fraction(self._fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(self._crf), "preset": self._preset}
        self._stream = stream

    def add(self, frame: Any) -> None:
        """Append one frame."""
        arr = to_rgb_array(frame)
        if self._stream is None:
            self._open_stream(arr.shape[1], arr.shape[0])
        elif (arr.shape[1], arr.shape[0]) != (self._stream.width, self._stream.height):
            raise ValueError(
                f"{self.path}: frame {self.frames} is {arr.shape[1]}x{arr.shape[0]}, "
                f"the video is {self._stream.width}x{self._stream.height}"
            )
        video_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush and close; safe to call twice."""
        container, self._container = self._container, None
        if container is None:
            return
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    container.mux(packet)
        finally:
            container.close()
        log.info("wrote %s (%d frames)", self.path, self.frames)
