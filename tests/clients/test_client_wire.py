"""The wire constants, the TCP client's resize default and the server's timings in replies.

The clients keep their own copy of the wire facts (a gaming PC has neither the server nor the model);
these tests hold that copy to the model's, and check what the clients send and keep over real sockets
on 127.0.0.1. A small scripted peer plays the server where a reply must carry (or lack) a key the
real server may not send yet.
"""

from __future__ import annotations

import ast
import json
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from client_testkit import REPO
from nitrogen_client import ModelClient, TcpClient, wire
from nitrogen_client.player import Player, PlayerOptions
from nitrogen_client.recording import RunRecorder
from test_client_player import FrameSource, RecordingPad

CLIENT_SRC = REPO / "clients" / "python" / "src" / "nitrogen_client"
HORIZON = 4


def test_button_order_is_the_models():
    from nitrogen.actions import BUTTON_NAMES as MODEL_BUTTONS

    assert wire.BUTTON_NAMES == MODEL_BUTTONS


def test_the_client_never_imports_the_server_the_model_or_torch():
    for path in CLIENT_SRC.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] not in {"nitrogen", "nitrogen_server", "torch"}, f"{path.name}: {name}"
    modules = sorted(p.stem for p in CLIENT_SRC.glob("*.py") if p.stem not in {"__init__", "__main__"})
    code = (f"import sys; sys.path.insert(0, {str(CLIENT_SRC.parent)!r}); import importlib\n"
            f"for m in {modules!r}: importlib.import_module('nitrogen_client.' + m)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('nitrogen', 'nitrogen_server', 'torch')]\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr


def _pred() -> dict[str, np.ndarray]:
    return {"j_left": np.full((HORIZON, 2), 0.5, np.float32), "j_right": np.zeros((HORIZON, 2), np.float32),
            "buttons": np.eye(HORIZON, 21, dtype=np.float32)}


class ScriptedServer:
    """Both ports on 127.0.0.1 answering reset/info/predict; predict i carries server_timing unless
    `timing` is False. Keeps every request header it received."""

    def __init__(self, timing: bool) -> None:
        self.timing = timing
        self.headers: list[dict[str, Any]] = []
        self.predicts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.tcp_port = self._listener.getsockname()[1]
        self._ctx = zmq.Context()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self.zmq_port = self._router.bind_to_random_port("tcp://127.0.0.1")
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._serve_tcp, self._serve_zmq)]
        for t in self._threads:
            t.start()

    def reply(self, request: dict[str, Any]) -> dict[str, Any]:
        self.headers.append({k: v for k, v in request.items() if k != "image"})
        kind = request.get("type")
        if kind == "info":
            return {"status": "ok", "info": {"action_downsample_ratio": 1, "action_horizon": HORIZON}}
        if kind != "predict":
            return {"status": "ok"}
        self.predicts += 1
        reply: dict[str, Any] = {"status": "ok", "pred": _pred(), "repeat": 1}
        if self.timing:
            n = float(self.predicts)
            reply[wire.SERVER_TIMING] = {"queue_ms": n, "infer_ms": 10 * n, "total_ms": 11 * n + 0.5}
        return reply

    def _serve_tcp(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            with conn, conn.makefile("rb") as stream:
                for line in stream:
                    header = json.loads(line)
                    stream.read(int(header.get("len", 0)))
                    reply = self.reply(header)
                    if "pred" in reply:
                        reply["pred"] = {k: v.tolist() for k, v in reply["pred"].items()}
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    def _serve_zmq(self) -> None:
        while not self._stop.is_set():
            if self._router.poll(200):
                peer, empty, data = self._router.recv_multipart()
                self._router.send_multipart([peer, empty, pickle.dumps(self.reply(pickle.loads(data)))])

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._listener.close()
        self._router.close()
        self._ctx.term()


@pytest.fixture(params=[True, False], ids=["with-timing", "without-timing"])
def scripted(request) -> Iterator[ScriptedServer]:
    srv = ScriptedServer(timing=request.param)
    yield srv
    srv.close()


def make(kind: str, srv: ScriptedServer, **kwargs: Any):
    if kind == "zmq":
        return ModelClient("127.0.0.1", srv.zmq_port, timeout_ms=10_000, **kwargs)
    return TcpClient("127.0.0.1", srv.tcp_port, timeout_s=10, **kwargs)


@pytest.mark.parametrize("kind", ["zmq", "tcp"])
def test_last_timing_is_the_last_replys_and_predict_is_unchanged(scripted, kind):
    frame = np.zeros((240, 320, 3), np.uint8)
    with make(kind, scripted) as client:
        assert client.last_timing is None  # nothing predicted yet
        for n in (1, 2):
            pred = client.predict(frame)
            assert set(pred) == {"j_left", "j_right", "buttons"}  # the timing is not mixed into the result
            np.testing.assert_array_equal(pred["buttons"], _pred()["buttons"])
            expected = {"queue_ms": n, "infer_ms": 10.0 * n, "total_ms": 11.0 * n + 0.5} if scripted.timing else None
            assert client.last_timing == expected


def test_tcp_client_asks_for_stretch_unless_told_otherwise():
    srv = ScriptedServer(timing=False)
    frame = np.zeros((240, 320, 3), np.uint8)
    try:
        for kwargs, sent in (({}, "stretch"), ({"resize_mode": "pad"}, "pad"), ({"resize_mode": None}, None)):
            with make("tcp", srv, **kwargs) as client:
                client.predict(frame)
            assert srv.headers[-1].get("resize_mode") == sent, kwargs
    finally:
        srv.close()
    with pytest.raises(ValueError, match="resize_mode must be None or one of"):
        TcpClient("127.0.0.1", 1, resize_mode="squash")


@pytest.mark.parametrize("kind", ["zmq", "tcp"])
def test_player_records_the_server_timing_of_each_predict(scripted, kind, tmp_path: Path):
    recorder = RunRecorder(tmp_path / "out", videos=False)
    frames = [np.full((256, 256, 3), i, np.uint8) for i in range(3)]
    with make(kind, scripted) as client:
        Player(client, FrameSource(frames), RecordingPad(), PlayerOptions(fps=5000.0), recorder=recorder).run(
            max_predictions=3)
    recorder.close()
    lines = [json.loads(x) for x in recorder.path("PLAYER.jsonl").read_text().splitlines()]
    lines = [ln for ln in lines if ln["type"] == "predict"]
    assert [ln["step"] for ln in lines] == [0, 1, 2]
    for ln in lines:
        n = ln["step"] + 1
        expected = {"queue_ms": n, "infer_ms": 10.0 * n, "total_ms": 11.0 * n + 0.5} if scripted.timing else None
        assert ln["server_timing"] == expected
