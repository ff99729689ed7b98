"""Timeouts: a peer that never answers gives ServerTimeout, and the client is never left wedged."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
import zmq
from nitrogen_client import ModelClient, ServerTimeout, TcpClient, TransportError


def test_zmq_timeout_replaces_the_socket():
    """A ROUTER that reads requests and never replies: each call times out, none hits a wedged REQ."""
    ctx = zmq.Context()
    silent = ctx.socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        with ModelClient("127.0.0.1", port, timeout_ms=300) as client:
            with pytest.raises(ServerTimeout, match="within 0.3 s"):
                client.info()
            with pytest.raises(ServerTimeout):  # a wedged REQ would raise ZMQError (EFSM) here
                client.reset()
        peers = set()
        while silent.poll(1000):
            peers.add(silent.recv_multipart()[0])
        assert len(peers) == 2, "the second request should come from a fresh socket (new identity)"
    finally:
        silent.close()
        ctx.term()


def test_tcp_timeout_drops_the_connection():
    """A listener that accepts and never answers: timeout, then the next call reconnects."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        listener.settimeout(10)
        for _ in range(2):
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        with TcpClient("127.0.0.1", listener.getsockname()[1], timeout_s=0.3) as client:
            with pytest.raises(ServerTimeout, match="within 0.3 s"):
                client.info()
            with pytest.raises(ServerTimeout):
                client.reset()
        t.join(10)
        assert len(accepted) == 2, "the call after a timeout should open a new connection"
    finally:
        for s in accepted:
            s.close()
        listener.close()


def test_unreachable_tcp_server_is_a_transport_error():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with (
        TcpClient("127.0.0.1", port, timeout_s=2) as client,
        pytest.raises(TransportError, match=f"127.0.0.1:{port}"),
    ):
        client.info()


@pytest.mark.parametrize("protocol", ["zmq", "tcp"])
def test_late_reply_after_timeout_is_not_taken_for_the_next(server, protocol):
    """Against the real server: a request that outlives a 1 ms timeout, then normal calls work and
    get their own replies (not the late predict reply)."""
    big = np.random.default_rng(1).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    if protocol == "zmq":
        client = ModelClient("127.0.0.1", server.zmq_port, timeout_ms=1)
    else:
        client = TcpClient("127.0.0.1", server.tcp_port, timeout_s=0.001, encoding="raw")
    with client:
        with pytest.raises(ServerTimeout):
            client.predict(big)
        if protocol == "zmq":
            client.timeout_ms = 30_000
        else:
            client.timeout_s = 30.0
        info = client.info()
        assert "action_downsample_ratio" in info
        pred = client.predict(big[:256, :256])
        assert pred["buttons"].shape == (info["action_horizon"], 21)
        assert "action_horizon" in client.info()
