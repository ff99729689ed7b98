"""A stand-in server on 127.0.0.1 for what the real one will not do on demand: answer with a canned
reply (keys a newer server may add), read a request and never answer, or never read at all."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

SOUTH = 18  # index of SOUTH (Xbox A) among the model's 21 buttons


def split_requests(data: bytes) -> tuple[list[tuple[dict, bytes]], bytes]:
    """Complete (header, payload) requests at the front of `data` (payload of the header's `len`
    bytes, none without it), and the bytes left over."""
    out = []
    while b"\n" in data:
        line, rest = data.split(b"\n", 1)
        header = json.loads(line)
        size = int(header.get("len", 0))
        if len(rest) < size:
            break
        out.append((header, rest[:size]))
        data = rest[size:]
    return out, data


class LoopbackListener:
    """A listener on 127.0.0.1 (any free port) handing each connection to `on_connection` on a thread
    of its own, until `stop()`. Subclasses set up their state, then call `start()`."""

    def __init__(self, recv_buffer: int | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        if recv_buffer is not None:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            threading.Thread(target=self.on_connection, args=(conn,), daemon=True).start()

    def on_connection(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()


class FakeServer(LoopbackListener):
    """mode "reply": answer each predict with `reply` (a dict, sent as one JSON line);
    "silent": read requests, never answer; "stall": accept, never read (the client's send fills up);
    "close": read one request, then close the connection."""

    def __init__(self, mode: str, reply: dict | None = None):
        assert mode in ("reply", "silent", "stall", "close"), mode
        super().__init__(recv_buffer=4096 if mode == "stall" else None)  # stall: a client's send blocks soon
        self.mode, self.reply = mode, reply
        self.headers: list[dict] = []
        self.closed_by_client = 0  # connections that reached EOF: the client closed its socket
        self.start()

    def on_connection(self, conn: socket.socket) -> None:
        with conn:
            if self.mode == "stall":
                self._stop.wait()
                return
            conn.settimeout(0.2)
            data = b""
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    self.closed_by_client += 1
                    return
                data += chunk
                data = self._requests(conn, data)
                if self.mode == "close" and self.headers:
                    return

    def _requests(self, conn: socket.socket, data: bytes) -> bytes:
        requests, data = split_requests(data)
        for header, _payload in requests:
            self.headers.append(header)
            if self.mode == "reply":
                conn.sendall(json.dumps(self.reply).encode() + b"\n")
        return data

    def wait_closed(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.closed_by_client < self.connections and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.closed_by_client >= self.connections > 0



def canned_reply(**extra) -> dict:
    """A well-formed 4-step predict reply pressing SOUTH, plus whatever keys `extra` adds."""
    buttons = [[1.0 if i == SOUTH else 0.0 for i in range(21)]] * 4
    pred = {"buttons": buttons, "j_left": [[0.0, 0.0]] * 4, "j_right": [[0.0, 0.0]] * 4}
    return {"status": "ok", "pred": pred, "repeat": 2, **extra}


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeServer]]:
    """fake(mode, reply=None) -> a started FakeServer, stopped after the test."""
    servers: list[FakeServer] = []

    def start(mode: str, reply: dict | None = None) -> FakeServer:
        servers.append(FakeServer(mode, reply))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()
