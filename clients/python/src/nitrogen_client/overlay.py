"""One picture of a predict: the frame, and beside it what the model pressed and what the pad got.

Shared by the player's DEBUG video, the server's live page and any later tool, so it needs only Pillow
and numpy. The layout follows the original player's ``create_viz`` (frame left, a 500-px panel right:
both sticks, then the 21 buttons x the chunk's actions with the current action marked) and adds what our
clients know: why a press did not reach the pad, the step and action index, the server's time split.

Static parts (labels, grid, stick boxes) are drawn once per size, the chunk's cells once per predict;
a call only pastes the frame and draws the current column, so it keeps up with 60 fps recording.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .gamepad import MENU_BUTTONS, OPPOSITES, PAD_BUTTONS, PRESS_THRESHOLD, STICK_SCALE, TRIGGERS, PadState
from .images import to_rgb_array
from .wire import BUTTON_NAMES

PANEL_WIDTH = 500
_STACKED_MIN_HEIGHT = 480  # below this the sticks go beside the button grid instead of above it

BG, GRID, TEXT, DIM = (22, 22, 26), (70, 70, 76), (225, 225, 225), (150, 150, 155)
PRESSED, CURSOR, PATH, APPLIED_RING = (40, 125, 65), (255, 60, 60), (90, 150, 230), (255, 255, 255)
# Why a press the model made did (not) reach the pad; one colour each, explained in the legend.
STATUS_COLOURS: dict[str, tuple[int, int, int]] = {
    "applied": (110, 255, 140),
    "menu blocked": (255, 140, 20),
    "cancelled": (60, 200, 235),
    "no pad": (170, 120, 240),
    "not sent": (140, 140, 140),
}


def press_status(buttons_row: Any, applied: PadState) -> dict[str, str]:
    """For each button the model pressed (> 0.5) in one action: did the pad get it, and if not, why.

    The reasons are read off ``applied`` with the pad's own rules (gamepad.MENU_BUTTONS, PAD_BUTTONS,
    OPPOSITES), so this never disagrees with what ``action_state`` sent.
    """
    values = np.asarray(buttons_row, dtype=np.float64).reshape(-1).tolist()
    pressed = {n for n, v in zip(BUTTON_NAMES, values) if v > PRESS_THRESHOLD}
    status: dict[str, str] = {}
    for name in sorted(pressed):
        if name in TRIGGERS:
            got = applied.left_trigger if name == "LEFT_TRIGGER" else applied.right_trigger
            status[name] = "applied" if got > 0 else "not sent"
        elif name in applied.buttons:
            status[name] = "applied"
        elif name not in PAD_BUTTONS:
            status[name] = "no pad"
        elif any(name in pair and set(pair) <= pressed for pair in OPPOSITES):
            status[name] = "cancelled"
        elif name in MENU_BUTTONS:
            status[name] = "menu blocked"
        else:
            status[name] = "not sent"
    return status


@dataclass(frozen=True)
class _Layout:
    """Where everything goes in the panel, for one frame height and chunk length."""

    height: int
    horizon: int
    font_px: int
    line_h: int
    header_y: int
    sticks: tuple[tuple[int, int, int], tuple[int, int, int]]  # (x, y, side) of left and right
    grid_x: int  # left edge of the cells (labels sit left of it)
    grid_y: int
    cell_w: int
    cell_h: int
    label_px: int
    legend: tuple[int, int] | None  # (x, y) of the legend's first line, or None when there is no room


@lru_cache(maxsize=32)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


def _text_w(px: int, text: str) -> int:
    return int(_font(px).getlength(text))


@lru_cache(maxsize=16)
def _layout(height: int, horizon: int) -> _Layout:
    u = height / 720
    font_px = max(10, min(18, round(16 * u)))
    line_h = font_px + max(3, round(5 * u))
    pad = max(4, round(10 * u))
    header_y = pad
    body_y = header_y + 2 * line_h + pad // 2  # title/step line, then the timing line
    n = len(BUTTON_NAMES)
    if height >= _STACKED_MIN_HEIGHT:  # create_viz's order: sticks, then the grid below them
        side = min(180, round(150 * u))
        sy = body_y + line_h
        sticks = ((pad * 3, sy, side), (PANEL_WIDTH - pad * 3 - side, sy, side))
        grid_top = sy + side + line_h + pad
        legend_h = 2 * line_h
        cell_h = max(8, min(24, (height - grid_top - line_h - legend_h - pad) // n))
        label_px = min(font_px, cell_h - 2)
        label_w = _text_w(label_px, "RIGHT_SHOULDER") + pad
        cell_w = max(4, min(26, (PANEL_WIDTH - 2 * pad - label_w) // horizon))
        grid_y = grid_top + line_h
        legend = (pad, grid_y + n * cell_h + pad)
    else:  # short frames: the grid takes the panel's height, the sticks stand in a column beside it
        cell_h = max(6, (height - body_y - line_h - pad) // n)
        label_px = max(8, min(font_px, cell_h))
        label_w = _text_w(label_px, "RIGHT_SHOULDER") + pad
        side = max(30, min((height - body_y - 2 * line_h - pad) // 2, 140))
        sx = PANEL_WIDTH - pad - side
        sticks = ((sx, body_y + line_h, side), (sx, body_y + 2 * line_h + side, side))
        cell_w = max(3, min(26, (sx - 2 * pad - label_w) // horizon))
        grid_y = body_y + line_h
        legend = None
    return _Layout(height, horizon, font_px, line_h, header_y, sticks, pad + label_w, grid_y,
                   cell_w, cell_h, label_px, legend)


@lru_cache(maxsize=8)
def _static_panel(height: int, horizon: int) -> Image.Image:
    """Background, labels, grid lines and empty stick boxes: the same for every frame of a run."""
    lay = _layout(height, horizon)
    img = Image.new("RGB", (PANEL_WIDTH, height), BG)
    d = ImageDraw.Draw(img)
    font, small = _font(lay.font_px), _font(lay.label_px)
    for (x, y, s), name in zip(lay.sticks, ("Left stick", "Right stick")):
        d.text((x, y - lay.line_h), name, fill=DIM, font=font)
        d.rectangle((x, y, x + s, y + s), fill=(50, 50, 50), outline=(100, 100, 100))
        for q in (s // 4, 3 * s // 4):  # create_viz's 2x2 grid and centre cross
            d.line((x + q, y, x + q, y + s), fill=(100, 100, 100))
            d.line((x, y + q, x + s, y + q), fill=(100, 100, 100))
        d.line((x, y + s // 2, x + s, y + s // 2), fill=(150, 150, 150))
        d.line((x + s // 2, y, x + s // 2, y + s), fill=(150, 150, 150))
    gx, gy, cw, ch = lay.grid_x, lay.grid_y, lay.cell_w, lay.cell_h
    d.text((lay.header_y, gy - lay.line_h), f"Buttons x {horizon} actions", fill=DIM, font=font)
    for row, name in enumerate(BUTTON_NAMES):
        d.text((gx - 4, gy + row * ch + ch // 2), name, fill=DIM, font=small, anchor="rm")
    for col in range(horizon + 1):
        d.line((gx + col * cw, gy, gx + col * cw, gy + len(BUTTON_NAMES) * ch), fill=GRID)
    for row in range(len(BUTTON_NAMES) + 1):
        d.line((gx, gy + row * ch, gx + horizon * cw, gy + row * ch), fill=GRID)
    if lay.legend is not None:
        x, y = lay.legend
        box = lay.label_px
        for status, colour in STATUS_COLOURS.items():
            w = box + 4 + _text_w(lay.label_px, status) + 12
            if x + w > PANEL_WIDTH:
                x, y = lay.legend[0], y + lay.line_h
            d.rectangle((x, y, x + box, y + box), fill=colour)
            d.text((x + box + 4, y), status, fill=DIM, font=small)
            x += w
    return img


def _stick_xy(box: tuple[int, int, int], x: float, y: float) -> tuple[float, float]:
    """Model stick value -> panel pixel. y is drawn as the stick leans: the model's +y is down."""
    bx, by, s = box
    return bx + s / 2 + max(-1.0, min(1.0, x)) * s / 2, by + s / 2 + max(-1.0, min(1.0, y)) * s / 2


def _fmt_timing(timing: Mapping[str, Any] | None) -> str:
    if not timing:
        return "server timing: -"
    parts = [f"{k.removesuffix('_ms')} {float(timing[k]):.1f}" for k in ("queue_ms", "infer_ms", "total_ms")
             if timing.get(k) is not None]
    return "server ms: " + "  ".join(parts)


@lru_cache(maxsize=4)
def _chunk_panel(height: int, key: bytes, horizon: int, header: str, timing: str) -> Image.Image:
    """The static panel plus this chunk's cells, stick paths and text: drawn once per predict."""
    arrays = np.frombuffer(key, dtype=np.float64)
    buttons = arrays[: horizon * len(BUTTON_NAMES)].reshape(horizon, len(BUTTON_NAMES))
    sticks = arrays[horizon * len(BUTTON_NAMES):].reshape(2, horizon, 2)
    lay = _layout(height, horizon)
    img = _static_panel(height, horizon).copy()
    d = ImageDraw.Draw(img)
    font = _font(lay.font_px)
    d.text((lay.header_y, lay.header_y), header + " | ", fill=TEXT, font=font)
    d.text((lay.header_y, lay.header_y + lay.line_h), timing, fill=DIM, font=font)
    gx, gy, cw, ch = lay.grid_x, lay.grid_y, lay.cell_w, lay.cell_h
    for col, row in zip(*np.nonzero(buttons > PRESS_THRESHOLD)):
        d.rectangle((gx + col * cw + 1, gy + row * ch + 1, gx + (col + 1) * cw - 1, gy + (row + 1) * ch - 1),
                    fill=PRESSED)
    dot = max(1, lay.cell_h // 8)
    for box, path in zip(lay.sticks, sticks):
        points = [_stick_xy(box, float(x), float(y)) for x, y in path]
        if len(points) > 1:
            d.line(points, fill=PATH, width=max(1, dot))
        for px, py in points:
            d.ellipse((px - dot, py - dot, px + dot, py + dot), fill=PATH)
    return img


def _chunk_key(pred: Mapping[str, Any]) -> tuple[bytes, int]:
    buttons = np.asarray(pred["buttons"], dtype=np.float64)
    j_left = np.asarray(pred["j_left"], dtype=np.float64)
    j_right = np.asarray(pred["j_right"], dtype=np.float64)
    horizon = buttons.shape[0] if buttons.ndim == 2 else -1
    for name, arr, width in (("buttons", buttons, len(BUTTON_NAMES)), ("j_left", j_left, 2),
                             ("j_right", j_right, 2)):
        if arr.ndim != 2 or arr.shape != (horizon, width) or horizon < 1:
            raise ValueError(
                f"pred[{name!r}] must be (A, {width}) with A >= 1 and the same A for all, got {arr.shape}")
    return np.concatenate([buttons.ravel(), j_left.ravel(), j_right.ravel()]).tobytes(), horizon


def fit_frame(frame: Any, size: tuple[int, int]) -> Image.Image:
    """The frame at ``size`` as the original's cv2 INTER_AREA would make it: box filter to shrink,
    bilinear to enlarge."""
    img = frame.convert("RGB") if isinstance(frame, Image.Image) else Image.fromarray(to_rgb_array(frame))
    if img.size != size:
        shrink = img.size[0] >= size[0] and img.size[1] >= size[1]
        img = img.resize(size, Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
    return img


def render_overlay(
    frame: Any,
    pred: Mapping[str, Any],
    *,
    action_index: int = 0,
    step: int | None = None,
    applied: PadState | None = None,
    server_timing: Mapping[str, Any] | None = None,
    size: tuple[int, int] = (1280, 720),
    title: str | None = None,
) -> Image.Image:
    """The frame scaled to ``size`` with the 500-px action panel at its right: an RGB (w + 500) x h image.

    ``pred`` holds the chunk (``j_left``/``j_right`` (A, 2), ``buttons`` (A, 21)); ``action_index`` is the
    action being played (its column is outlined, its stick positions drawn as red dots). With ``applied``
    (the PadState sent for that action), each press of that action is coloured by what the pad did with it.
    """
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 64:
        raise ValueError(f"size must be (w >= 1, h >= 64) pixels, got {size!r}")
    key, horizon = _chunk_key(pred)
    if not 0 <= action_index < horizon:
        raise ValueError(f"action_index must be in 0..{horizon - 1} for this chunk, got {action_index}")
    header = " | ".join(p for p in (title, "step -" if step is None else f"step {step}") if p)
    panel = _chunk_panel(h, key, horizon, header, _fmt_timing(server_timing)).copy()
    lay = _layout(h, horizon)
    d = ImageDraw.Draw(panel)
    font = _font(lay.font_px)
    d.text((lay.header_y + _text_w(lay.font_px, header + " | "), lay.header_y),
           f"action {action_index + 1}/{horizon}", fill=TEXT, font=font)
    gx, gy, cw, ch = lay.grid_x, lay.grid_y, lay.cell_w, lay.cell_h
    if applied is not None:
        row_values = np.asarray(pred["buttons"], dtype=np.float64)[action_index]
        for name, status in press_status(row_values, applied).items():
            row = BUTTON_NAMES.index(name)
            x0, y0 = gx + action_index * cw + 1, gy + row * ch + 1
            d.rectangle((x0, y0, x0 + cw - 2, y0 + ch - 2), fill=STATUS_COLOURS[status])
    d.rectangle((gx + action_index * cw - 1, gy - 2, gx + (action_index + 1) * cw + 1,
                 gy + len(BUTTON_NAMES) * ch + 2), outline=CURSOR, width=2)
    r = max(3, lay.sticks[0][2] // 24)
    for box, stick in zip(lay.sticks, ("j_left", "j_right")):
        x, y = (float(v) for v in np.asarray(pred[stick], dtype=np.float64)[action_index])
        px, py = _stick_xy(box, x, y)
        d.ellipse((px - r, py - r, px + r, py + r), fill=CURSOR)
        if lay.legend is not None:  # the stacked layout has room for the numbers under each stick
            d.text((box[0], box[1] + box[2] + 2), f"x {x:+.2f} y {y:+.2f}", fill=DIM,
                   font=_font(lay.label_px))
    if applied is not None:  # where the pad's stick really is (int16, y up-positive), as a ring
        pad_sticks = ((applied.left_x, applied.left_y), (applied.right_x, applied.right_y))
        for box, (ax, ay) in zip(lay.sticks, pad_sticks):
            px, py = _stick_xy(box, ax / STICK_SCALE, -(ay + 1) / STICK_SCALE)
            d.ellipse((px - r - 3, py - r - 3, px + r + 3, py + r + 3), outline=APPLIED_RING, width=1)
    out = Image.new("RGB", (w + PANEL_WIDTH, h))
    out.paste(fit_frame(frame, (w, h)), (0, 0))
    out.paste(panel, (w, 0))
    return out
