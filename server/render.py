"""`nitrogen-server render DIR`: a `--record` directory as the player's DEBUG-style video (MP4).

BizHawk and mGBA users have no Windows player to make one; the server's recording has what it needs:
the frame each predict received and the reply's full-precision actions. Each predict becomes one
video frame per action (held `repeat` frames, as a client plays them), drawn by the client package's
`render_overlay` and encoded by its `VideoWriter`: the same picture and file as the player's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, CliPositionalArg, SettingsConfigDict

from .recorder import safe_dir_name

log = logging.getLogger("nitrogen_server.render")
DEBUG_CRF = 32  # the player's NNNN_DEBUG.mp4 quality (README, Python client section)


class RenderSettings(BaseSettings):
    """
    Turn a `nitrogen-server --record DIR` recording into an MP4: each predict's received frame with the
    actions the model sent back (sticks, buttons, the action being played, the server's timing).
    """

    model_config = SettingsConfigDict(env_prefix="NITROGEN_RENDER_", extra="ignore", cli_kebab_case=True,
                                      cli_hide_none_type=True, cli_avoid_json=True)

    directory: CliPositionalArg[Path] = Field(description="the --record directory (or one run or session in it)")
    output: Path | None = Field(None, validation_alias=AliasChoices("o", "output"),
                                description="the MP4 to write; None: <session>.mp4 in the current directory")
    session: str | None = Field(None, description="the session key to render (tcp:1, named:alice...); "
                                "None: the only one recorded")
    fps: float = Field(60.0, gt=0, le=240, description="video frames per second (one per action played)")
    height: int = Field(720, ge=64, le=2160, description="height of the frame part (the panel beside it is 500 px)")


@dataclass(frozen=True)
class Record:
    """One recorded predict that can be drawn: its received frame and its reply."""

    session: str
    at: str
    seq: int
    frame: Path
    reply: dict[str, Any]


def read_records(directory: Path) -> tuple[dict[str, list[Record]], dict[str, int]]:
    """Drawable predicts under `directory` by session, oldest first, and per session how many were
    skipped (failed predicts, undecodable frames, files pruned by --record-max-mb)."""
    if not directory.is_dir():
        raise ValueError(f"{directory}: not a directory (expected one given to nitrogen-server --record)")
    parts = sorted(directory.rglob("requests-*.jsonl"))
    if not parts:
        raise ValueError(f"{directory}: no recording here (no requests-*.jsonl below it; "
                         "expected a directory given to nitrogen-server --record)")
    sessions: dict[str, list[Record]] = {}
    skipped: dict[str, int] = {}
    for part in parts:
        for line in part.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            reply, received = rec.get("reply") or {}, rec.get("received")
            if reply.get("status") != "ok" or not received or not (part.parent / received).is_file():
                skipped[rec["session"]] = skipped.get(rec["session"], 0) + 1
                continue
            sessions.setdefault(rec["session"], []).append(
                Record(rec["session"], rec["time"], rec["seq"], part.parent / received, reply))
    for records in sessions.values():
        records.sort(key=lambda r: (r.at, r.seq))
    return sessions, skipped


def pick_session(sessions: dict[str, list[Record]], wanted: str | None) -> str:
    """The session to render: the one asked for, or the only one; else an error listing them."""
    listed = ", ".join(f"{k} ({len(v)} predicts)" for k, v in sorted(sessions.items())[:20])
    if wanted is not None:
        if wanted not in sessions:
            raise ValueError(f"--session {wanted!r} is not in this recording; it has: {listed or 'none'}")
        return wanted
    if len(sessions) != 1:
        raise ValueError(f"this recording has {len(sessions)} sessions with frames; pick one with "
                         f"--session: {listed or 'none'}")
    return next(iter(sessions))


def frame_size(first: Path, height: int) -> tuple[int, int]:
    """The first frame's aspect at `height`, with an even width (H.264 in yuv420p)."""
    with Image.open(first) as img:
        w, h = img.size
    return max(2, round(height * w / h / 2) * 2), height - height % 2


def render_video(records: list[Record], output: Path, fps: float = 60.0, height: int = 720) -> int:
    """Write the video; returns its frame count."""
    from nitrogen_client.overlay import render_overlay  # the client package: pip install ./clients/python
    from nitrogen_client.video_writer import VideoWriter

    size = frame_size(records[0].frame, height)
    writer = VideoWriter(output, fps=fps, crf=DEBUG_CRF)
    try:
        for step, rec in enumerate(records, 1):
            with Image.open(rec.frame) as img:
                frame = img.convert("RGB")
            pred = rec.reply["pred"]
            for action in range(len(pred["buttons"])):
                picture = render_overlay(frame, pred, action_index=action, step=step, size=size,
                                         server_timing=rec.reply.get("server_timing"), title=rec.session[:40])
                for _ in range(max(1, int(rec.reply.get("repeat", 1)))):
                    writer.add(picture)
    finally:
        writer.close()
    return writer.frames


def run_render(settings: RenderSettings) -> int:
    """The `render` command: 0 with the video written, 2 with a message naming what was wrong."""
    try:
        sessions, skipped = read_records(settings.directory)
        key = pick_session(sessions, settings.session)
    except (OSError, ValueError) as exc:
        log.error("render: %s", exc)
        return 2
    output = settings.output or Path(f"{safe_dir_name(key)}.mp4")
    records = sessions[key]
    if skipped.get(key):
        log.info("render: %d predicts of %s have no frame or no actions (failed, or pruned): skipped",
                 skipped[key], key)
    frames = render_video(records, output, settings.fps, settings.height)
    log.info("render: %s: %d predicts of session %s, %d frames at %g fps", output, len(records), key, frames,
             settings.fps)
    return 0
