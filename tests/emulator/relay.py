"""A TCP relay on 127.0.0.1 between an emulator script and the real server: it forwards every byte
unchanged and records each predict request (header + the frame's bytes) and each reply line, so a test
can see what the server received and what it answered."""

from __future__ import annotations

import json
import socket
import threading

from fakeserver import LoopbackListener, split_requests


class Relay(LoopbackListener):
    def __init__(self, upstream_port: int):
        super().__init__()
        self.upstream_port = upstream_port
        self.requests: list[tuple[dict, bytes]] = []
        self.replies: list[dict] = []
        self.start()

    def on_connection(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=self._pump, args=(server, client, self._replies), daemon=True).start()
        self._pump(client, server, self._requests)

    def _pump(self, src: socket.socket, dst: socket.socket, parse) -> None:
        data = b""
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
                data = parse(data + chunk)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _requests(self, data: bytes) -> bytes:
        requests, data = split_requests(data)
        self.requests += requests
        return data

    def _replies(self, data: bytes) -> bytes:
        while b"\n" in data:
            line, data = data.split(b"\n", 1)
            self.replies.append(json.loads(line))
        return data
