"""Ctrl+C while the server does not answer, and ``localhost`` resolving to ::1 first, as on Windows.

On Windows, Ctrl+C runs Python's handler only when the main thread next executes Python code: a
blocked ZeroMQ receive or a lock wait is not interrupted. ``windows_like_ctrl_c`` gives Linux the same
rule: the main thread blocks SIGINT, so the kernel delivers it to another thread, whose C handler only
flags it for the main thread. The sockets are real.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import zmq
from nitrogen_client import ModelClient, TcpClient
from nitrogen_client.player import Player, PlayerOptions
from test_client_player import FrameSource, RecordingPad

TIMEOUT_S = 30.0  # the player's default reply timeout: what a press of Ctrl+C waited for before
CTRL_C_AFTER_S = 1.0


@contextmanager
def windows_like_ctrl_c() -> Iterator[None]:
    quiet = threading.Event()
    catcher = threading.Thread(target=quiet.wait, daemon=True)  # started before the mask: takes SIGINT
    catcher.start()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        quiet.set()


@contextmanager
def silent_zmq() -> Iterator[int]:
    """A ZeroMQ peer that takes requests and never answers."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    try:
        yield port
    finally:
        sock.close(linger=0)
        ctx.term()


@contextmanager
def silent_tcp(host: str = "127.0.0.1", family: int = socket.AF_INET, port: int = 0) -> Iterator[int]:
    """A TCP listener whose backlog completes connections that nobody ever answers."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.listen(8)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextmanager
def refused_port() -> Iterator[int]:
    """A port nobody listens on: every connect is refused at once, and the player waits to retry."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def ctrl_c_latency(client) -> float:
    """Seconds from Ctrl+C to the player's KeyboardInterrupt (the pad is released either way)."""
    pad = RecordingPad()
    frame = np.zeros((256, 256, 3), np.uint8)
    options = PlayerOptions(reconnect_delay_s=TIMEOUT_S, reconnect_max_delay_s=TIMEOUT_S)
    player = Player(client, FrameSource([frame]), pad, options)
    timer = threading.Timer(CTRL_C_AFTER_S, os.kill, (os.getpid(), signal.SIGINT))
    with windows_like_ctrl_c():
        started = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                player.run()
        finally:
            timer.join()  # never let the signal land after this test
    assert pad.calls[-1] == ("reset",)
    return time.monotonic() - started - CTRL_C_AFTER_S


@pytest.mark.parametrize("case", ["zmq-silent", "tcp-silent", "tcp-refused"])
def test_ctrl_c_stops_a_player_waiting_on_the_server(case):
    """Before: up to the 30 s reply timeout (or the 10 s retry wait) passed before Ctrl+C took effect."""
    if case == "zmq-silent":
        with silent_zmq() as port, ModelClient("127.0.0.1", port, timeout_ms=int(TIMEOUT_S * 1000)) as client:
            latency = ctrl_c_latency(client)
    else:
        server = silent_tcp() if case == "tcp-silent" else refused_port()
        with server as port, TcpClient("127.0.0.1", port, timeout_s=TIMEOUT_S) as client:
            latency = ctrl_c_latency(client)
    assert latency < 5.0, f"Ctrl+C took {latency:.1f} s"


def test_localhost_reaches_an_ipv4_server_first(server, monkeypatch):
    """Windows lists ::1 before 127.0.0.1 for localhost, and the server listens on IPv4 only: each
    connect first spent ~2 s on ::1. Here ::1 answers nothing at the server's port (a stand-in for that
    wasted attempt, and the resolver lists it first): the client must reach the server on IPv4."""
    real = socket.getaddrinfo

    def windows_order(host, port, *args, **kwargs):
        if host == "localhost":
            v6 = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))
            v4 = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))
            return [v6, v4]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", windows_order)
    with silent_tcp("::1", socket.AF_INET6, server.tcp_port), TcpClient("localhost", server.tcp_port,
                                                                        timeout_s=3.0) as client:
        client.reset()
        pred = client.predict(np.zeros((256, 256, 3), np.uint8), seed=1)
        assert pred["buttons"].shape[1] == 21
        assert client._sock.getpeername()[0] == "127.0.0.1"
