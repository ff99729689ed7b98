"""The files of one player run, named and written as the original NitroGen player writes them.

``OUT/<checkpoint stem>/NNNN_DEBUG.mp4`` (the game frame at 1280x720 with the action panel of
``overlay.render_overlay``), ``NNNN_CLEAN.mp4`` (the game frame at 1920x1080), one video frame per pad
frame at 60 fps, and ``NNNN_ACTIONS.json`` (one JSON line per action, the original's keys and integer
conversions, so tools written for the original read it). NNNN is one more than the highest run already
in the folder, so a run never overwrites another. What we record beyond the original goes in files of
our own: ``NNNN_PLAYER.jsonl`` (server info, raw outputs, pad states, server timing per predict) and
``NNNN_INPUTS/SSSSSS.png`` (the 256x256 frame each predict sent).

Rendering and encoding run on a thread of their own so the pad keeps its pace; when they fall more than
``max_queued_frames`` behind, the pad waits for them (a video frame per pad frame is the contract).
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .base import Prediction
from .gamepad import MENU_BUTTONS, PRESS_THRESHOLD, STICK_SCALE, TRIGGER_MAX, PadState
from .overlay import fit_frame, render_overlay
from .video_writer import VideoWriter
from .wire import BUTTON_NAMES

log = logging.getLogger(__name__)

DEBUG_SIZE, CLEAN_SIZE = (1280, 720), (1920, 1080)
DEBUG_CRF, CLEAN_CRF, PRESET, VIDEO_FPS = 32, 28, "medium", 60  # the original's VideoRecorder settings
# The original's ACTIONS keys in its order: its zero action, then the outputs it copies in that no pad has.
ACTION_KEYS: tuple[str, ...] = (
    "WEST", "SOUTH", "BACK", "DPAD_DOWN", "DPAD_LEFT", "DPAD_RIGHT", "DPAD_UP", "GUIDE", "AXIS_LEFTX",
    "AXIS_LEFTY", "LEFT_SHOULDER", "LEFT_TRIGGER", "AXIS_RIGHTX", "AXIS_RIGHTY", "LEFT_THUMB", "RIGHT_THUMB",
    "RIGHT_SHOULDER", "RIGHT_TRIGGER", "START", "EAST", "NORTH", "RIGHT_BOTTOM", "RIGHT_LEFT", "RIGHT_RIGHT",
    "RIGHT_UP",
)
_RUN_FILE = re.compile(r"^(\d{4})_")


def original_action(j_left: Any, j_right: Any, buttons: Any, allow_menu: bool = False) -> dict[str, Any]:
    """One action as the original writes it: buttons 0/1 (> 0.5), triggers ``[int(v * 255)]``, axes
    ``[int(v * 32767)]`` (float32 products, no clamp, y as the model gives it), START/BACK/GUIDE 0
    unless ``allow_menu``. Keys in ACTION_KEYS order; the caller adds ``step`` and ``substep``."""
    f32 = np.float32
    row = dict(zip(BUTTON_NAMES, np.asarray(buttons, dtype=np.float32).tolist()))
    action: dict[str, Any] = {}
    for key in ACTION_KEYS:
        if key.startswith("AXIS_"):
            stick = j_left if key.startswith("AXIS_LEFT") else j_right
            value = f32(np.asarray(stick, dtype=np.float32)[0 if key.endswith("X") else 1])
            action[key] = [int(value * f32(STICK_SCALE))]
        elif key.endswith("_TRIGGER"):
            action[key] = [int(f32(row[key]) * f32(TRIGGER_MAX))]
        else:
            action[key] = 1 if row[key] > PRESS_THRESHOLD else 0
    if not allow_menu:
        action.update({name: 0 for name in MENU_BUTTONS})
    return action


def checkpoint_stem(info: dict[str, Any]) -> str:
    """The folder name for a server's checkpoint: ``ng`` for models/ng.pt, ``demo`` for the demo model."""
    name = re.split(r"[\\/]", str(info.get("ckpt_path") or ""))[-1]
    stem = name.rsplit(".", 1)[0] if "." in name.strip(".") else name
    stem = re.sub(r"[^\w.+-]", "_", stem).strip(".")
    return stem or "unknown"


def next_run_number(folder: Path) -> int:
    """One more than the highest NNNN_ in ``folder`` (1 in an empty or new folder)."""
    if not folder.is_dir():
        return 1
    return max((int(m.group(1)) for p in folder.iterdir() if (m := _RUN_FILE.match(p.name))), default=0) + 1


@dataclass(frozen=True)
class _Chunk:
    step: int
    pred: Prediction
    timing: dict[str, Any] | None


class RunRecorder:
    """Records one run under ``out_dir``; its files open at the first server info (the folder is named
    after the checkpoint). ``videos=False`` keeps the JSON files and skips the two videos."""

    def __init__(self, out_dir: str | Path = "out", *, allow_menu: bool = False, videos: bool = True,
                 max_queued_frames: int = 60) -> None:
        self.out_dir = Path(out_dir)
        self.allow_menu = allow_menu
        self.videos = videos
        self.folder: Path | None = None
        self.number: int | None = None
        self._actions: Any = None
        self._extra: Any = None
        self._chunk: _Chunk | None = None
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=max(1, max_queued_frames))
        self._worker: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._warned_slow = False
        self.pad_frames = 0

    def path(self, suffix: str) -> Path:
        """``<folder>/NNNN_<suffix>`` of this run (after the first info)."""
        if self.folder is None or self.number is None:
            raise RuntimeError("the run's files open at the first server info; none has come yet")
        return self.folder / f"{self.number:04d}_{suffix}"

    def _open(self, info: dict[str, Any]) -> None:
        self.folder = self.out_dir / checkpoint_stem(info)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.number = next_run_number(self.folder)
        while True:
            try:  # "x": a run started at the same moment in the same folder takes the next number
                self._actions = self.path("ACTIONS.json").open("x", encoding="utf-8")
                break
            except FileExistsError:
                self.number += 1
        self._extra = self.path("PLAYER.jsonl").open("x", encoding="utf-8")
        self.path("INPUTS").mkdir()
        self._worker = threading.Thread(target=self._work, name="nitrogen-recorder", daemon=True)
        self._worker.start()
        log.info("recording run %04d to %s", self.number, self.folder)

    def _write_extra(self, record: dict[str, Any]) -> None:
        self._extra.write(json.dumps(record, default=str) + "\n")
        self._extra.flush()

    def record_info(self, info: dict[str, Any]) -> None:
        """The server's info at each (re)connect: opens the run's files at the first one."""
        if self.folder is None:
            self._open(info)
        self._write_extra({"type": "info", "info": info})

    def record(self, step: int, frame: Any, pred: Prediction, states: list[PadState], repeat: int,
               timing: dict[str, float] | None = None) -> None:
        """One predict: its ACTIONS lines, its PLAYER line and the frame it sent."""
        self._check_worker()
        for i, (jl, jr, b) in enumerate(zip(pred["j_left"], pred["j_right"], pred["buttons"])):
            line = {**original_action(jl, jr, b, self.allow_menu), "step": step, "substep": i}
            self._actions.write(json.dumps(line) + "\n")
        self._actions.flush()
        self._write_extra({
            "type": "predict", "step": step, "repeat": repeat, "server_timing": timing,
            "j_left": np.asarray(pred["j_left"]).tolist(), "j_right": np.asarray(pred["j_right"]).tolist(),
            "buttons": np.asarray(pred["buttons"]).tolist(), "pad": [s.to_json() for s in states],
        })
        self._chunk = _Chunk(step, pred, timing)
        self._put(("input", step, np.array(frame, copy=True)))

    def pad_frame(self, grab: Callable[[], Any], action_index: int, state: PadState) -> None:
        """One pad frame: the action the pad holds and, when videos are recorded, the game frame of that
        moment from ``grab()`` (so a run without videos never captures more than it predicts on)."""
        if self._chunk is None:
            raise RuntimeError("pad_frame before record: the chunk being played is unknown")
        self._check_worker()
        self.pad_frames += 1
        if self.videos:
            self._put(("frame", grab(), self._chunk, action_index, state))

    def _put(self, item: tuple[Any, ...]) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            if not self._warned_slow:
                self._warned_slow = True
                log.warning("video encoding is %d frames behind: the pad now waits for it (--no-record "
                            "turns recording off)", self._queue.maxsize)
            while self._worker is not None and self._worker.is_alive():
                try:
                    self._queue.put(item, timeout=0.5)
                    return
                except queue.Full:
                    continue
            self._check_worker()

    def _check_worker(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"recording to {self.folder} failed: {self._failure}") from self._failure

    def _work(self) -> None:
        debug = clean = None
        source = scaled = None  # a frame shown for several pad frames is scaled once (that is the cost)
        try:
            while (item := self._queue.get()) is not None:
                if item[0] == "input":
                    inputs = self.path("INPUTS") / f"{item[1]:06d}.png"
                    Image.fromarray(item[2]).save(inputs, compress_level=1)
                    continue
                _, frame, chunk, index, state = item
                if debug is None:
                    debug = VideoWriter(self.path("DEBUG.mp4"), VIDEO_FPS, DEBUG_CRF, PRESET)
                    clean = VideoWriter(self.path("CLEAN.mp4"), VIDEO_FPS, CLEAN_CRF, PRESET)
                if frame is not source:
                    source, scaled = frame, (fit_frame(frame, DEBUG_SIZE), fit_frame(frame, CLEAN_SIZE))
                title = f"{self.folder.name} #{self.number:04d}"
                debug.add(render_overlay(
                    scaled[0], chunk.pred, action_index=index, step=chunk.step, applied=state,
                    server_timing=chunk.timing, size=DEBUG_SIZE, title=title))
                clean.add(scaled[1])
        except BaseException as exc:  # noqa: BLE001 (reported to the player thread by _check_worker)
            self._failure = exc
            log.error("recording failed: %s", exc)
            while self._queue.get() is not None:  # drain so that the player never blocks on a dead worker
                pass
        finally:
            for writer in (debug, clean):  # each closed even if the other fails; the first failure is reported
                if writer is not None:
                    try:
                        writer.close()
                    except Exception as exc:  # noqa: BLE001 - e.g. disk full while writing the trailer
                        log.error("recording failed: could not finish %s: %s", writer, exc)
                        self._failure = self._failure or exc

    def close(self) -> None:
        """Finish the videos and close every file; safe to call twice."""
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None
        for f in (self._actions, self._extra):
            if f is not None and not f.closed:
                f.close()
        if self.number is not None:
            log.info("run %04d: %d pad frames recorded in %s", self.number, self.pad_frames, self.folder)
        self._check_worker()
