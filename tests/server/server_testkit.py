"""Clients for the server tests, written from the wire spec (docs/protocol.md), not from server code."""

from __future__ import annotations

import io
import json
import pickle
import socket
from typing import Any

import numpy as np
import zmq
from nitrogen_server.config import ServerSettings
from PIL import Image

RAW_BYTES = 256 * 256 * 3
READ_TIMEOUT_S = 1.0  # shortened so the slow-client tests finish quickly (default 30 s)


def server_settings(checkpoint: str = "demo", **overrides: object) -> ServerSettings:
    base = {"checkpoint": checkpoint, "device": "cpu", "host": "127.0.0.1", "zmq_port": 0, "tcp_port": 0,
            "read_timeout_s": READ_TIMEOUT_S, "max_wait_ms": 1.0}
    return ServerSettings(**{**base, **overrides})


class ModelClient:
    """What the original NitroGen ModelClient does: pickle.dumps a dict, send, recv, pickle.loads."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout_ms: int = 30000) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.REQ)
        self.socket.setsockopt(zmq.RCVTIMEO, timeout_ms)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(f"tcp://{host}:{port}")

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        self.socket.send(pickle.dumps(request))
        return pickle.loads(self.socket.recv())

    def send_bytes(self, data: bytes) -> dict[str, Any]:
        self.socket.send(data)
        return pickle.loads(self.socket.recv())

    def predict(self, image: Any, **extra: Any) -> dict[str, Any]:
        return self.call({"type": "predict", "image": image, **extra})

    def close(self) -> None:
        self.socket.close()
        self.context.term()

    def __enter__(self) -> ModelClient:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TcpClient:
    """A newline-JSON client: header line, optional payload, one reply line per request."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, header: dict[str, Any] | bytes, payload: bytes = b"") -> None:
        line = header if isinstance(header, bytes) else json.dumps(header).encode() + b"\n"
        self.sock.sendall(line + payload)

    def read_line(self) -> bytes:
        """One reply line (without the newline); b"" if the server closed the connection first."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def reply(self) -> dict[str, Any]:
        line = self.read_line()
        assert line, "server closed the connection without a reply"
        return json.loads(line)

    def request(self, header: dict[str, Any] | bytes, payload: bytes = b"") -> dict[str, Any]:
        self.send(header, payload)
        return self.reply()

    def read_until_closed(self) -> list[bytes]:
        """All remaining reply lines up to EOF (for requests that end the connection)."""
        lines = []
        while True:
            try:
                line = self.read_line()
            except ConnectionResetError:
                break
            if not line:
                break
            lines.append(line)
        return lines

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TcpClient:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode(image: np.ndarray, fmt: str, **save_args: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, fmt, **save_args)
    return buf.getvalue()


def bmp_top_down(image: np.ndarray) -> bytes:
    """A 24-bit top-down BMP (negative height), written by hand: Pillow only writes bottom-up."""
    h, w, _ = image.shape
    stride = (w * 3 + 3) // 4 * 4
    rows = b"".join(image[y, :, ::-1].tobytes().ljust(stride, b"\0") for y in range(h))
    header = (b"BM" + (54 + len(rows)).to_bytes(4, "little") + bytes(4) + (54).to_bytes(4, "little")
              + (40).to_bytes(4, "little") + w.to_bytes(4, "little", signed=True)
              + (-h).to_bytes(4, "little", signed=True) + (1).to_bytes(2, "little")
              + (24).to_bytes(2, "little") + bytes(24))
    return header + rows


def frame(seed: int, h: int = 256, w: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def assert_tcp_pred(reply: dict[str, Any], horizon: int = 16) -> None:
    assert reply["status"] == "ok", reply
    pred = reply["pred"]
    assert len(pred["j_left"]) == len(pred["j_right"]) == len(pred["buttons"]) == horizon
    assert all(len(row) == 21 and set(row) <= {0, 1} for row in pred["buttons"])
    assert all(len(xy) == 2 and all(-1 <= v <= 1 for v in xy) for xy in pred["j_left"] + pred["j_right"])
    assert isinstance(reply["repeat"], int)


def assert_zmq_pred(reply: dict[str, Any], horizon: int = 16) -> None:
    assert reply["status"] == "ok", reply
    pred = reply["pred"]
    assert pred["j_left"].shape == pred["j_right"].shape == (horizon, 2)
    assert pred["buttons"].shape == (horizon, 21)
    assert all(v.dtype == np.float32 for v in pred.values())
