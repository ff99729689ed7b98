"""`nitrogen-server render`: a recording the server made in this test, turned into an MP4 by the real
command, decoded back with PyAV (frame count, size, and that its frames are the recorded ones)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from nitrogen_server.app import ServerThread
from nitrogen_server.recorder import safe_dir_name
from server_testkit import TcpClient, assert_tcp_pred, encode, server_settings

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230)]
HORIZON = 16  # the demo model's actions per predict


def solid(rgb: tuple[int, int, int]) -> bytes:
    return encode(np.full((144, 160, 3), rgb, np.uint8), "PNG")


@pytest.fixture(scope="module")
def recording(tmp_path_factory, server_errors) -> Path:
    """A --record directory: tcp:1 with three good predicts (red, green, blue) and a failed one,
    named:other with one (yellow)."""
    root = tmp_path_factory.mktemp("render") / "rec"
    srv = ServerThread(server_settings(record=str(root))).start()
    try:
        with TcpClient(srv.tcp_port) as tcp, TcpClient(srv.tcp_port) as other:
            for i, colour in enumerate(COLOURS):
                png = solid(colour)
                assert_tcp_pred(tcp.request({"type": "predict", "len": len(png), "seed": i}, png))
            assert tcp.request({"type": "predict", "len": 9}, b"not a png")["status"] == "error"
            png = solid((230, 220, 30))
            assert_tcp_pred(other.request({"type": "predict", "len": len(png), "session": "other"}, png))
    finally:
        srv.stop()  # the recorder writes what is queued
    return root


def render(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "nitrogen_server", "render", *args], check=False,
                          capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def decode(path: Path) -> tuple[list[np.ndarray], float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate)


def test_a_session_becomes_one_frame_per_action(recording, tmp_path):
    out = tmp_path / "tcp1.mp4"
    done = render(str(recording), "--session", "tcp:1", "-o", str(out), "--height", "144")
    assert done.returncode == 0, done.stderr
    assert "3 predicts of session tcp:1, 48 frames" in done.stderr
    frames, fps = decode(out)
    assert len(frames) == len(COLOURS) * HORIZON and fps == 60
    assert frames[0].shape == (144, 160 + 500, 3)
    for i, colour in enumerate(COLOURS):  # the recorded frames, in order, each held for its chunk
        for j in (i * HORIZON, (i + 1) * HORIZON - 1):
            assert np.abs(frames[j][72, 80].astype(int) - colour).max() < 40, (j, frames[j][72, 80], colour)
    panel = [f[:, 160:].astype(int) for f in frames[:HORIZON]]
    assert all(np.abs(panel[0] - p).mean() > 0.1 for p in panel[1:]), "the action cursor did not move"


def test_the_only_session_and_the_default_file_name(recording, tmp_path):
    run = next(p for p in recording.iterdir() if p.is_dir())
    session_dir = run / safe_dir_name("named:other")
    done = render(str(session_dir), "--height", "72", cwd=tmp_path)  # one session below this directory
    assert done.returncode == 0, done.stderr
    frames, _ = decode(tmp_path / f"{safe_dir_name('named:other')}.mp4")
    assert len(frames) == HORIZON and frames[0].shape == (72, 80 + 500, 3)
    assert np.abs(frames[0][36, 40].astype(int) - (230, 220, 30)).max() < 40


def test_mistakes_are_named(recording, tmp_path):
    several = render(str(recording), "-o", str(tmp_path / "x.mp4"))
    assert several.returncode == 2 and "--session" in several.stderr
    assert "tcp:1 (3 predicts)" in several.stderr and "named:other (1 predicts)" in several.stderr
    unknown = render(str(recording), "--session", "tcp:9")
    assert unknown.returncode == 2 and "'tcp:9' is not in this recording" in unknown.stderr
    empty = render(str(tmp_path))
    assert empty.returncode == 2 and "no recording here" in empty.stderr
    assert not (tmp_path / "x.mp4").exists()
