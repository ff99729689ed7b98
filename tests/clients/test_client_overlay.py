"""The overlay renderer: sizes, the frame kept as given, the current action marked, and each press coloured
by what the pad did with it (the reasons come from the pad's own rules)."""

from __future__ import annotations

import numpy as np
import pytest
from nitrogen_client import BUTTON_NAMES
from nitrogen_client.gamepad import action_state
from nitrogen_client.overlay import PANEL_WIDTH, STATUS_COLOURS, press_status, render_overlay
from PIL import Image

HORIZON = 8


def chunk(*pressed: str) -> dict[str, np.ndarray]:
    """A chunk whose every action presses ``pressed``, sticks walking from left to right."""
    buttons = np.zeros((HORIZON, len(BUTTON_NAMES)), np.float32)
    for name in pressed:
        buttons[:, BUTTON_NAMES.index(name)] = 1.0
    x = np.linspace(-1, 1, HORIZON, dtype=np.float32)
    sticks = np.stack([x, np.zeros_like(x)], axis=1)
    return {"j_left": sticks, "j_right": -sticks, "buttons": buttons}


def pixels_of(image: Image.Image, colour: tuple[int, int, int]) -> np.ndarray:
    """(x, y) of every pixel of exactly ``colour``."""
    ys, xs = np.nonzero((np.asarray(image) == np.array(colour, np.uint8)).all(axis=2))
    return np.stack([xs, ys], axis=1)


PRESSED = ("SOUTH", "START", "DPAD_UP", "DPAD_DOWN", "RIGHT_BOTTOM", "LEFT_TRIGGER")


def test_press_status_follows_the_pad_rules():
    pred = chunk(*PRESSED)
    row = pred["buttons"][0]
    applied = action_state(pred["j_left"][0], pred["j_right"][0], row)
    assert press_status(row, applied) == {
        "SOUTH": "applied",
        "LEFT_TRIGGER": "applied",
        "START": "menu blocked",
        "DPAD_UP": "cancelled",
        "DPAD_DOWN": "cancelled",
        "RIGHT_BOTTOM": "no pad",
    }
    with_menu = action_state(pred["j_left"][0], pred["j_right"][0], row, allow_menu=True)
    assert press_status(row, with_menu)["START"] == "applied"
    # the pad released everything (e.g. a skipped, stale action): nothing the model pressed was sent
    neutral = action_state([0, 0], [0, 0], np.zeros(len(BUTTON_NAMES)))
    assert press_status(row, neutral)["SOUTH"] == "not sent"


@pytest.mark.parametrize("size", [(1280, 720), (256, 256), (640, 360)])
def test_the_frame_sits_left_of_the_panel(size):
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = render_overlay(frame, chunk("SOUTH"), action_index=3, step=7, size=size, title="run")
    assert out.mode == "RGB" and out.size == (size[0] + PANEL_WIDTH, size[1])
    np.testing.assert_array_equal(np.asarray(out)[:, : size[0]], frame)  # already at size: untouched
    # any frame size and PIL images are scaled into the area
    small = render_overlay(Image.fromarray(frame[:100, :120]), chunk(), size=size)
    assert small.size == out.size


def test_statuses_are_drawn_on_the_current_action_only():
    pred = chunk(*PRESSED)
    frame = np.zeros((256, 256, 3), np.uint8)
    plain = render_overlay(frame, pred, action_index=2, size=(256, 256))
    for colour in STATUS_COLOURS.values():  # no `applied`: no verdicts (the small layout has no legend)
        assert len(pixels_of(plain, colour)) == 0

    def marked(index: int) -> dict[str, np.ndarray]:
        applied = action_state(pred["j_left"][index], pred["j_right"][index], pred["buttons"][index])
        image = render_overlay(frame, pred, action_index=index, applied=applied, size=(256, 256))
        return {status: pixels_of(image, colour) for status, colour in STATUS_COLOURS.items()}

    early, late = marked(1), marked(6)
    for status in ("applied", "menu blocked", "cancelled", "no pad"):
        assert len(early[status]) > 0 and len(late[status]) > 0, status
        assert (early[status][:, 0] >= 256).all()  # in the panel, not on the frame
        # one column per action: the marks move right by five columns' width
        shift = late[status][:, 0].mean() - early[status][:, 0].mean()
        width = early[status][:, 0].max() - early[status][:, 0].min() + 1
        assert 4 * width < shift < 7 * width, (status, shift, width)
    assert len(early["not sent"]) == 0


def test_stick_positions_are_drawn_where_the_model_put_them():
    pred = chunk()
    frame = np.zeros((720, 1280, 3), np.uint8)
    red = (255, 60, 60)  # the current position's dot; the current column's outline below is red too
    left_box = (1280, 0, 1280 + PANEL_WIDTH // 2, 250)
    dots = [pixels_of(render_overlay(frame, pred, action_index=i).crop(left_box), red)
            for i in (0, HORIZON - 1)]
    assert all(len(d) for d in dots)
    assert dots[1][:, 0].mean() - dots[0][:, 0].mean() > 100  # x from -1 to +1 across a box of ~150 px


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="buttons"):
        render_overlay(np.zeros((8, 8, 3), np.uint8), {**chunk(), "buttons": np.zeros((HORIZON, 5))})
    with pytest.raises(ValueError, match="action_index"):
        render_overlay(np.zeros((8, 8, 3), np.uint8), chunk(), action_index=HORIZON)
    with pytest.raises(ValueError, match="size"):
        render_overlay(np.zeros((8, 8, 3), np.uint8), chunk(), size=(100, 10))
