"""``--record DIR``: what the model saw and what the pad did, for debugging a run afterwards.

Layout: ``DIR/info.json`` (server info at each (re)connect, as a list), ``DIR/actions.jsonl`` (one
line per predicted step, with the server's ``server_timing`` of that predict, or null from servers
that do not send it) and ``DIR/frames/NNNNNN.png`` (the 256x256 frame sent for prediction NNNNNN).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from PIL import Image

from .base import Prediction
from .gamepad import PadState
from .images import to_rgb_array
from .wire import BUTTON_NAMES

log = logging.getLogger(__name__)


class Recorder:
    """Appends to a directory; an existing recording there is continued, never overwritten."""

    def __init__(self, directory: str | Path, save_frames: bool = True) -> None:
        self.directory = Path(directory)
        self.frames_dir = self.directory / "frames"
        self.save_frames = save_frames
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        self.actions_path = self.directory / "actions.jsonl"
        self._actions = self.actions_path.open("a", encoding="utf-8")
        self._infos: list[dict[str, Any]] = []
        log.info("recording to %s", self.directory)

    def record_info(self, info: dict[str, Any]) -> None:
        """Keep the server's info for each connection (the checkpoint and repeat in force)."""
        self._infos.append(info)
        (self.directory / "info.json").write_text(
            json.dumps(self._infos, indent=1, default=str), encoding="utf-8"
        )

    def record(self, step: int, frame: Any, pred: Prediction, states: list[PadState], repeat: int,
               timing: dict[str, float] | None = None) -> None:
        """One prediction: the frame as PNG and one JSON line per step (raw outputs, pad state, timing)."""
        if self.save_frames:
            Image.fromarray(to_rgb_array(frame)).save(self.frames_dir / f"{step:06d}.png", compress_level=1)
        for i, state in enumerate(states):
            line = {
                "step": step,
                "substep": i,
                "repeat": repeat,
                "j_left": pred["j_left"][i].tolist(),
                "j_right": pred["j_right"][i].tolist(),
                "buttons": {n: int(v > 0.5) for n, v in zip(BUTTON_NAMES, pred["buttons"][i].tolist())},
                "pad": state.to_json(),
                "server_timing": timing,
            }
            self._actions.write(json.dumps(line) + "\n")
        self._actions.flush()

    def close(self) -> None:
        if not self._actions.closed:
            self._actions.close()
