"""`nitrogen-server healthcheck`: exit 0 only if the running server answers `info` (for Docker)."""

from __future__ import annotations

import json
import pickle
import socket
import sys
from typing import Literal

import zmq
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .safe_pickle import safe_loads

WILDCARD_HOSTS = ("0.0.0.0", "", "*", "::")


class HealthcheckSettings(BaseSettings):
    """
    Exit 0 only if the running server answers an info request (for Docker's HEALTHCHECK).
    The host and ports also come from the server's own NITROGEN_* variables.
    """

    model_config = SettingsConfigDict(
        env_prefix="NITROGEN_", extra="ignore", cli_kebab_case=True, cli_hide_none_type=True,
        cli_avoid_json=True, cli_show_env_vars=True)

    host: str = Field("127.0.0.1", description="server address (a wildcard bind address means this machine)")
    zmq_port: int = Field(5555, ge=1, le=65535, description="ZeroMQ port")
    tcp_port: int = Field(5556, ge=1, le=65535, description="newline-JSON TCP port")
    only: Literal["zmq", "tcp"] | None = Field(None, description="check one port only; None: both")
    timeout: float = Field(5.0, gt=0, description="seconds per port")

    @field_validator("host")
    @classmethod
    def _connectable(cls, value: str) -> str:
        return "127.0.0.1" if value in WILDCARD_HOSTS else value


def run_healthcheck(settings: HealthcheckSettings) -> int:
    """0 if every checked port answers, else 1 with one `unhealthy: ...` line per failure on stderr."""
    problems = []
    if settings.only in (None, "tcp"):
        problems.append(check_tcp(settings.host, settings.tcp_port, settings.timeout))
    if settings.only in (None, "zmq"):
        problems.append(check_zmq(settings.host, settings.zmq_port, settings.timeout))
    problems = [p for p in problems if p]
    for problem in problems:
        print(f"unhealthy: {problem}", file=sys.stderr)  # the command's output (Docker keeps it)
    return 1 if problems else 0


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
