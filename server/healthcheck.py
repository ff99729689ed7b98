"""`nitrogen-server healthcheck`: exit 0 only if the running server answers `info` (for Docker)."""

from __future__ import annotations

import json
import pickle
import socket

import zmq

from .safe_pickle import safe_loads


def check_tcp(host: str, port: int, timeout: float) -> str | None:
    """None if the TCP port answers info with status ok, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b'{"type":"info"}\n')
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    return f"tcp {host}:{port} closed the connection without a reply"
                data += chunk
        reply = json.loads(data)
    except (OSError, ValueError) as exc:
        return f"tcp {host}:{port}: {exc}"
    return None if reply.get("status") == "ok" else f"tcp {host}:{port} answered {reply!r}"


def check_zmq(host: str, port: int, timeout: float) -> str | None:
    """None if the ZeroMQ port answers info with status ok, else why not."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
        sock.connect(f"tcp://{host}:{port}")
        sock.send(pickle.dumps({"type": "info"}))
        reply = safe_loads(sock.recv())
    except (zmq.ZMQError, ValueError) as exc:
        return f"zmq {host}:{port}: {exc}"
    finally:
        sock.close()
        ctx.term()
    if isinstance(reply, dict) and reply.get("status") == "ok":
        return None
    return f"zmq {host}:{port} answered {reply!r}"
