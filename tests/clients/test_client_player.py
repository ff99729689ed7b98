"""The player's loop against a real server, with a synthetic capture and a pad that records its calls."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np
import pytest
from nitrogen_client import BUTTON_NAMES, ModelClient, PolicyClient, TcpClient
from nitrogen_client.capture import Capture
from nitrogen_client.gamepad import Pad, PadState
from nitrogen_client.player import Player, PlayerOptions
from nitrogen_client.recording import RunRecorder
from PIL import Image

FAST = 5000.0  # pad frames per second: keeps the loop quick; pacing itself is not under test
MENU = {"START", "BACK", "GUIDE"}
NOT_ON_A_PAD = {"RIGHT_BOTTOM", "RIGHT_LEFT", "RIGHT_RIGHT", "RIGHT_UP", "LEFT_TRIGGER", "RIGHT_TRIGGER"}


class FrameSource(Capture):
    """Synthetic frames, in order, cycling; counts how many were taken."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.taken = 0

    def latest(self) -> np.ndarray:
        frame = self.frames[self.taken % len(self.frames)]
        self.taken += 1
        return frame


class RecordingPad(Pad):
    """Records every call; optionally raises KeyboardInterrupt at a given apply (a Ctrl+C)."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.interrupt_at = interrupt_at
        self._lock = threading.Lock()

    def apply(self, state: PadState) -> None:
        with self._lock:
            self.calls.append(("apply", state))
            if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
                raise KeyboardInterrupt

    def reset(self) -> None:
        with self._lock:
            self.calls.append(("reset",))


class ReplySpy(PolicyClient):
    """Passes every call to the real client and keeps what was sent and what came back.

    ``ratio`` stands in for a checkpoint whose action_downsample_ratio is not 1 (every released one,
    like the original code, reports 1), so that holding an action for several frames is tested.
    """

    def __init__(self, inner: PolicyClient, ratio: int | None = None) -> None:
        self.inner = inner
        self.ratio = ratio
        self.sent: list[tuple[np.ndarray, int | None]] = []
        self.replies: list[dict[str, np.ndarray]] = []

    def predict(self, image, seed=None):
        pred = self.inner.predict(image, seed=seed)
        self.sent.append((np.array(image), seed))
        self.replies.append(pred)
        return pred

    def request(self, message: dict) -> dict:
        return self.inner.request(message)

    @property
    def last_timing(self) -> dict | None:
        return self.inner.last_timing

    def info(self) -> dict:
        info = self.inner.info()
        return info if self.ratio is None else {**info, "action_downsample_ratio": self.ratio}

    def close(self) -> None:
        self.inner.close()


def expected_state(j_left, j_right, row, allow_menu: bool) -> PadState:
    """The documented mapping, written out independently of the client's code."""

    def clamp(v: int) -> int:
        return max(-32768, min(32767, v))

    pressed = {BUTTON_NAMES[k] for k in np.flatnonzero(row > 0.5)}
    for pair in ({"DPAD_UP", "DPAD_DOWN"}, {"DPAD_LEFT", "DPAD_RIGHT"}):  # opposites cancel out
        if pair <= pressed:
            pressed -= pair
    held = pressed - NOT_ON_A_PAD - (set() if allow_menu else MENU)
    return PadState(
        left_x=clamp(int(j_left[0] * 32767)),
        left_y=clamp(-int(j_left[1] * 32767) - 1),
        right_x=clamp(int(j_right[0] * 32767)),
        right_y=clamp(-int(j_right[1] * 32767) - 1),
        left_trigger=255 if "LEFT_TRIGGER" in pressed else 0,
        right_trigger=255 if "RIGHT_TRIGGER" in pressed else 0,
        buttons=frozenset(held),
    )


def expected_calls(replies, repeat: int, allow_menu: bool) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    for pred in replies:
        for jl, jr, row in zip(pred["j_left"], pred["j_right"], pred["buttons"]):
            calls += [("apply", expected_state(jl, jr, row, allow_menu))] * repeat
    return calls


def client_for(server, protocol: str, timeout_s: float = 30.0) -> PolicyClient:
    if protocol == "zmq":
        return ModelClient("127.0.0.1", server.zmq_port, timeout_ms=int(timeout_s * 1000))
    return TcpClient("127.0.0.1", server.tcp_port, timeout_s=timeout_s)


@pytest.mark.parametrize("protocol", ["zmq", "tcp"])
def test_player_plays_the_exact_pad_calls(server, tiny_a, tmp_path, protocol):
    frames = [tiny_a[f"image_{i}"] for i in range(int(tiny_a["n_steps"]))]
    spy = ReplySpy(client_for(server, protocol), ratio=3)
    pad = RecordingPad()
    recorder = RunRecorder(tmp_path / "out", videos=False)  # the videos: test_client_video_play.py
    player = Player(spy, FrameSource(frames), pad, PlayerOptions(fps=FAST, seed=100), recorder=recorder)
    with spy:
        stats = player.run(max_predictions=len(frames))
    recorder.close()
    repeat = player.repeat
    assert repeat == 3

    assert stats.predictions == len(frames) and len(spy.replies) == len(frames)
    # exactly: each predicted step held `repeat` frames, then the pad released at the end
    assert pad.calls == expected_calls(spy.replies, repeat, allow_menu=False) + [("reset",)]
    assert stats.pad_frames == len(frames) * len(tiny_a["j_left_0"]) * repeat

    # the reply is the known one: the golden actions for frames sent unchanged with seeds 100 + i
    for i, ((sent, seed), pred) in enumerate(zip(spy.sent, spy.replies)):
        assert seed == 100 + i and sent.shape == (256, 256, 3)
        if frames[i].shape == (256, 256, 3):  # other sizes are resized by the player, not the golden way
            np.testing.assert_array_equal(sent, frames[i])
            np.testing.assert_allclose(pred["j_left"], tiny_a[f"j_left_{i}"], atol=2e-3)
            np.testing.assert_allclose(pred["j_right"], tiny_a[f"j_right_{i}"], atol=2e-3)
            np.testing.assert_array_equal(pred["buttons"], tiny_a[f"buttons_{i}"])

    # the golden replies exercise the guard and the triggers
    menu_idx = [BUTTON_NAMES.index(b) for b in MENU]
    assert sum(int(p["buttons"][:, menu_idx].sum()) for p in spy.replies) > 0
    states = [c[1] for c in pad.calls if c[0] == "apply"]
    assert not any(s.buttons & MENU for s in states)
    assert {s.left_trigger for s in states} == {0, 255} and {s.right_trigger for s in states} == {0, 255}
    assert stats.menu_presses_blocked > 0

    # the recording: the original's ACTIONS lines, and ours: a PLAYER line per predict with the pad
    # states, and the frames sent
    run = tmp_path / "out" / "tiny-a"
    assert len((run / "0001_ACTIONS.json").read_text().splitlines()) == len(frames) * len(tiny_a["j_left_0"])
    lines = [json.loads(x) for x in (run / "0001_PLAYER.jsonl").read_text().splitlines()]
    assert [ln["type"] for ln in lines] == ["info"] + ["predict"] * len(frames)
    assert [s for ln in lines[1:] for s in ln["pad"]] == [s.to_json() for s in states[::repeat]]
    assert all(ln["repeat"] == repeat for ln in lines[1:])
    assert all("server_timing" in ln for ln in lines[1:])  # its values: test_client_wire.py
    for i, (sent, _) in enumerate(spy.sent):
        np.testing.assert_array_equal(np.asarray(Image.open(run / "0001_INPUTS" / f"{i:06d}.png")), sent)


def test_allow_menu_passes_menu_buttons(server, tiny_a):
    frames = [tiny_a["image_0"], tiny_a["image_1"]]
    spy = ReplySpy(client_for(server, "zmq"))
    pad = RecordingPad()
    player = Player(spy, FrameSource(frames), pad, PlayerOptions(fps=FAST, seed=100, allow_menu=True))
    with spy:
        player.run(max_predictions=2)
    assert player.repeat == player.info["action_downsample_ratio"]  # the server's own value
    assert pad.calls == expected_calls(spy.replies, player.repeat, allow_menu=True) + [("reset",)]
    assert any(c[1].buttons & MENU for c in pad.calls if c[0] == "apply")


def test_ctrl_c_releases_the_pad(server, tiny_a):
    pad = RecordingPad(interrupt_at=5)
    with ModelClient("127.0.0.1", server.zmq_port) as client:
        player = Player(client, FrameSource([tiny_a["image_0"]]), pad, PlayerOptions(fps=FAST))
        with pytest.raises(KeyboardInterrupt):
            player.run()
    assert len(pad.calls) == 6 and pad.calls[-1] == ("reset",)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_reconnect_after_server_restart(server):
    """Kill the server (SIGKILL) under two running players, restart it on the same ports: both
    release the pad while it is gone, reconnect, and go on playing. (The suite's shared server is
    used, so it is running again afterwards: restarting one costs seconds of torch import.)"""
    srv = server
    old_pid = srv.proc.pid
    try:
        opts = PlayerOptions(fps=FAST, reconnect_delay_s=0.2, reconnect_max_delay_s=0.5)
        frame = np.random.default_rng(3).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        runs = {}
        for protocol in ("zmq", "tcp"):
            client = client_for(srv, protocol, timeout_s=1.0)
            pad = RecordingPad()
            player = Player(client, FrameSource([frame]), pad, opts)
            thread = threading.Thread(target=player.run, daemon=True)
            runs[protocol] = (client, pad, player, thread)
            thread.start()
        for _, _, player, _ in runs.values():
            wait_for(lambda p=player: p.stats.predictions >= 2, 60, "predictions before the restart")

        srv.kill()
        time.sleep(1.5)  # longer than the client timeout: requests in flight must time out
        before = {k: r[2].stats.predictions for k, r in runs.items()}
        srv.start()  # same ports as before
        for k, (_, _, player, _) in runs.items():
            wait_for(
                lambda p=player, n=before[k]: p.stats.predictions >= n + 2,
                90,
                f"{k} predictions after restart",
            )
        for client, pad, player, thread in runs.values():
            player.stop()
            thread.join(30)
            assert not thread.is_alive()
            client.close()
    finally:
        if srv.proc.poll() is not None:  # leave a running server to the tests after this one
            srv.start()
    assert srv.proc.pid != old_pid

    for protocol, (_, pad, player, _) in runs.items():
        assert player.stats.reconnects >= 1, protocol
        # the pad was released when the server went away, before the next press
        first_reset = pad.calls.index(("reset",))
        assert any(c[0] == "apply" for c in pad.calls[first_reset:]), protocol
        assert pad.calls[-1] == ("reset",), protocol
