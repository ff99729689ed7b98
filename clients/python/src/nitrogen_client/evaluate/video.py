"""``--video``: one H.264 MP4 per episode, each env step's frame beside the action overlay.

The picture is ``nitrogen_client.overlay.render_overlay`` and the file ``video_writer.VideoWriter`` (the
renderer and the encoder the player and the live page share); this module only sizes the picture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..overlay import render_overlay
from ..video_writer import VideoWriter


def frame_size(frame_hw: tuple[int, int], height: int) -> tuple[int, int]:
    """The game frame's (w, h) in the video: ``height`` high, aspect kept, both even (H.264 wants that)."""
    h, w = frame_hw
    height -= height % 2
    width = max(2, round(w * height / h / 2) * 2)
    return width, height


class EpisodeVideo:
    """Frames as they come; ``close`` finishes the file."""

    def __init__(self, path: str | Path, fps: float, height: int = 480) -> None:
        self.path = Path(path)
        self.height = height
        self.size: tuple[int, int] | None = None  # the game frame's size in the video, from the first frame
        self._writer = VideoWriter(self.path, fps=fps, crf=26, preset="veryfast")

    @property
    def frames(self) -> int:
        return self._writer.frames

    def add(self, frame: np.ndarray, pred: dict[str, Any], action_index: int, step: int, title: str,
            timing: dict[str, float] | None) -> None:
        """One env step: the frame the action was played on, and the chunk with that action marked."""
        if self.size is None:
            self.size = frame_size(frame.shape[:2], self.height)
        self._writer.add(render_overlay(frame, pred, action_index=action_index, step=step,
                                        server_timing=timing, size=self.size, title=title))

    def close(self) -> None:
        self._writer.close()
