"""``nitrogen-play --video ... --pad none`` end to end: a real server process, a real video file decoded by
PyAV, the player as a user starts it, and the original player's three files read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from client_testkit import REPO
from nitrogen_client import BUTTON_NAMES, ModelClient
from nitrogen_client.errors import CaptureEnded
from nitrogen_client.recording import checkpoint_stem, next_run_number
from nitrogen_client.video_capture import VideoCapture
from PIL import Image

# The original player's ACTIONS keys, in the order its JSON lines have them (its zero_action dict, then
# the four model outputs its button loop adds), then step and substep.
ORIGINAL_KEYS = [
    "WEST", "SOUTH", "BACK", "DPAD_DOWN", "DPAD_LEFT", "DPAD_RIGHT", "DPAD_UP", "GUIDE", "AXIS_LEFTX",
    "AXIS_LEFTY", "LEFT_SHOULDER", "LEFT_TRIGGER", "AXIS_RIGHTX", "AXIS_RIGHTY", "LEFT_THUMB", "RIGHT_THUMB",
    "RIGHT_SHOULDER", "RIGHT_TRIGGER", "START", "EAST", "NORTH", "RIGHT_BOTTOM", "RIGHT_LEFT", "RIGHT_RIGHT",
    "RIGHT_UP", "step", "substep",
]
AXIS_TOLERANCE = int(2e-3 * 32767) + 1  # the server's sticks match the golden ones to 2e-3 (player test)
GOLDEN_FRAMES = (0, 1)  # the 256x256 golden frames: sent unchanged, so the golden actions are the answer


def original_rule(j_left, j_right, buttons, allow_menu: bool = False) -> dict:
    """The original scripts/play.py conversion, written out: axes int(v * 32767) (no sign flip), triggers
    int(v * 255), other buttons v > 0.5, START/BACK/GUIDE zeroed unless --allow-menu."""
    action = {}
    for name, value in zip(BUTTON_NAMES, buttons):
        action[name] = [int(value * 255)] if "TRIGGER" in name else int(value > 0.5)
    action.update(AXIS_LEFTX=[int(j_left[0] * 32767)], AXIS_LEFTY=[int(j_left[1] * 32767)],
                  AXIS_RIGHTX=[int(j_right[0] * 32767)], AXIS_RIGHTY=[int(j_right[1] * 32767)])
    if not allow_menu:
        action.update(START=0, BACK=0, GUIDE=0)
    return action


def write_video(path: Path, frames: list[np.ndarray], repeat: int) -> None:
    """A lossless 60 fps video (FFV1): each frame shown ``repeat`` times, decoded back bit-exact."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=60)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "bgr0"
        for frame in frames:
            for _ in range(repeat):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def play(server, source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "clients" / "python" / "src")}
    cmd = [sys.executable, "-m", "nitrogen_client", "--video", str(source), "--pad", "none", "--host",
           "127.0.0.1", "--port", str(server.zmq_port), "--seed", "100", "--out", str(out), *extra]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def chunk(server) -> tuple[int, int]:
    """(actions per predict, pad frames each action is held) as the server's info says."""
    with ModelClient("127.0.0.1", server.zmq_port) as client:
        info = client.info()
    return int(info["action_horizon"]), int(info["action_downsample_ratio"])


def test_video_play_writes_the_original_files(server, tiny_a, tmp_path, chunk):
    horizon, repeat = chunk
    frames = [tiny_a[f"image_{i}"] for i in GOLDEN_FRAMES]
    per_chunk = horizon * repeat  # pad frames per predict: the video shows each golden frame that long
    video = tmp_path / "gameplay.mkv"
    write_video(video, frames, per_chunk)
    out = tmp_path / "out"
    play(server, video, out)

    run = out / "tiny-a"  # the checkpoint's stem, as the original names the folder
    assert sorted(p.name for p in run.iterdir()) == [
        "0001_ACTIONS.json", "0001_CLEAN.mp4", "0001_DEBUG.mp4", "0001_INPUTS", "0001_PLAYER.jsonl"]
    lines = (run / "0001_ACTIONS.json").read_text().splitlines()
    assert len(lines) == len(frames) * horizon
    for n, text in enumerate(lines):
        got = json.loads(text)
        step, substep = divmod(n, horizon)
        assert list(got) == ORIGINAL_KEYS, f"line {n}"
        assert (got["step"], got["substep"]) == (step, substep)
        i = GOLDEN_FRAMES[step]
        want = original_rule(tiny_a[f"j_left_{i}"][substep], tiny_a[f"j_right_{i}"][substep],
                             tiny_a[f"buttons_{i}"][substep].tolist())
        for key, value in want.items():
            if key.startswith("AXIS_"):
                assert abs(got[key][0] - value[0]) <= AXIS_TOLERANCE, f"line {n} {key}: {got[key]} vs {value}"
            else:
                assert got[key] == value, f"line {n} {key}"
    assert any(json.loads(t)["LEFT_TRIGGER"] == [255] for t in lines)  # the golden chunk exercises triggers

    # one video frame per pad frame, at the original's sizes
    pad_frames = len(frames) * per_chunk
    debug, clean = decode(run / "0001_DEBUG.mp4"), decode(run / "0001_CLEAN.mp4")
    assert [f.shape for f in debug] == [(720, 1280 + 500, 3)] * pad_frames
    assert [f.shape for f in clean] == [(1080, 1920, 3)] * pad_frames
    # the frame at pad time t is the video's frame at t: pad frame n shows golden frame n // per_chunk
    for n, shown in enumerate(clean):
        scaled = [np.asarray(Image.fromarray(f).resize((1920, 1080), Image.Resampling.BILINEAR), np.float32)
                  for f in frames]
        errors = [np.abs(shown.astype(np.float32) - s).mean() for s in scaled]
        assert int(np.argmin(errors)) == n // per_chunk, f"pad frame {n}: distance to each source {errors}"
    # and what the model was sent is kept beside them
    for step, i in enumerate(GOLDEN_FRAMES):
        np.testing.assert_array_equal(np.asarray(Image.open(run / "0001_INPUTS" / f"{step:06d}.png")),
                                      tiny_a[f"image_{i}"])

    # a second run, from a folder holding the first frame this time, is 0002 and leaves 0001 as it was
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(frames[0]).save(folder / "000.png")
    before = (run / "0001_ACTIONS.json").read_text()
    play(server, folder, out, "--video-fps", str(60 / per_chunk))
    assert (run / "0001_ACTIONS.json").read_text() == before
    # same frame, same seed: the first chunk's lines again
    assert (run / "0002_ACTIONS.json").read_text().splitlines() == before.splitlines()[:horizon]
    assert len(decode(run / "0002_DEBUG.mp4")) == len(decode(run / "0002_CLEAN.mp4")) == per_chunk


def test_record_says_what_replaced_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "clients" / "python" / "src")}
    cmd = [sys.executable, "-m", "nitrogen_client", "--video", str(tmp_path), "--record", "rec"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert "--record was replaced by --out" in proc.stderr and "--out rec" in proc.stderr


def test_video_capture_follows_the_clock(tmp_path):
    frames = [np.full((32, 48, 3), 40 * k, np.uint8) for k in range(5)]
    write_video(tmp_path / "v.mkv", frames, 1)
    now = [0.0]
    with VideoCapture(tmp_path / "v.mkv", clock=lambda: now[0]) as capture:
        for n in (0, 0, 1, 3, 4):  # pad frame n at 60 fps shows video frame n; repeats are fine
            now[0] = n / 60
            np.testing.assert_array_equal(capture.latest(), frames[n])
        now[0] = 5 / 60
        with pytest.raises(CaptureEnded):
            capture.latest()
    for k, frame in enumerate(frames[:2]):
        Image.fromarray(frame).save(tmp_path / f"{k}.png")
    with VideoCapture(tmp_path, clock=lambda: now[0], folder_fps=2) as capture:  # 0.5 s per image
        now[0] = 0.49
        np.testing.assert_array_equal(capture.latest(), frames[0])
        now[0] = 0.5
        np.testing.assert_array_equal(capture.latest(), frames[1])
    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(ValueError, match="notes.txt"):
        VideoCapture(tmp_path / "notes.txt").latest()


def test_run_folder_and_number():
    assert checkpoint_stem({"ckpt_path": "models/ng.pt"}) == "ng"
    assert checkpoint_stem({"ckpt_path": "C:\\models\\ng-v2.pt"}) == "ng-v2"
    assert checkpoint_stem({"ckpt_path": "demo"}) == "demo"
    assert checkpoint_stem({}) == "unknown"


def test_next_run_number(tmp_path):
    assert next_run_number(tmp_path / "missing") == 1
    for name in ("0001_DEBUG.mp4", "0007_ACTIONS.json", "notes.txt", "12_x"):
        (tmp_path / name).write_text("")
    assert next_run_number(tmp_path) == 8
