"""A real nitrogen-server subprocess for the client tests (ports 0 are read back from its log)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOLDEN_DIR = Path(
    os.environ.get("NITROGEN_GOLDEN", REPO.parent / "shared" / "golden")
)  # as tests/conftest.py
_ZMQ_READY = re.compile(r"listening zmq on tcp://(\S+):(\d+)")
_TCP_READY = re.compile(r"listening tcp on (\S+):(\d+)")


class ServerProcess:
    """``python -m nitrogen_server`` as a subprocess; ports 0 are resolved from its ready log lines."""

    def __init__(self, checkpoint: str, zmq_port: int = 0, tcp_port: int = 0, *extra: str) -> None:
        self.checkpoint = checkpoint
        self.zmq_port = zmq_port
        self.tcp_port = tcp_port
        self.extra = extra
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    def start(self, timeout: float = 120.0) -> ServerProcess:
        cmd = [
            sys.executable,
            "-m",
            "nitrogen_server",
            "--checkpoint",
            self.checkpoint,
            "--host",
            "127.0.0.1",
            "--zmq-port",
            str(self.zmq_port),
            "--tcp-port",
            str(self.tcp_port),
            "--device",
            "cpu",
            *self.extra,
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.lines = []
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO
        )
        ports: dict[str, int] = {}
        ready = threading.Event()

        def pump(proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:  # keep draining so the server never blocks on a full pipe
                self.lines.append(line)
                for kind, pattern in (("zmq", _ZMQ_READY), ("tcp", _TCP_READY)):
                    m = pattern.search(line)
                    if m:
                        ports[kind] = int(m.group(2))
                if len(ports) == 2:
                    ready.set()
            ready.set()  # EOF: the server exited

        threading.Thread(target=pump, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.2):
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()}")
        if len(ports) != 2:
            self.kill()
            raise RuntimeError(f"server exited before listening (rc={self.proc.poll()}):\n{self.log()}")
        self.zmq_port, self.tcp_port = ports["zmq"], ports["tcp"]
        return self

    def log(self) -> str:
        return "".join(self.lines[-60:])

    def kill(self) -> None:
        """SIGKILL, like a crash: no goodbye to connected clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class FakeClock:
    """Time that moves only when the code under test sleeps (and by ``read_cost`` per reading, as a
    spinning loop would see). ``tick`` rounds every sleep up to a multiple of it: Windows' default
    15.625 ms timer. ``naps`` keeps every sleep asked for."""

    def __init__(self, tick: float = 0.0, read_cost: float = 1e-6) -> None:
        self.t = 0.0
        self.tick = tick
        self.read_cost = read_cost
        self.naps: list[float] = []

    def now(self) -> float:
        self.t += self.read_cost
        return self.t

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        if seconds > 0 and self.tick:
            seconds = -(-seconds // self.tick) * self.tick
        self.t += max(seconds, self.read_cost)
