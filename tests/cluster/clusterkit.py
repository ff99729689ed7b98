"""Helpers for the cluster tests: nitrogen-server processes with metrics, an HAProxy in front of them,
a /metrics scraper and the golden-answer check. Everything listens on and talks to 127.0.0.1 only."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
LISTENING = {
    "tcp": re.compile(r"listening tcp on [\d.]+:(\d+)"),
    "zmq": re.compile(r"listening zmq on tcp://[\d.]+:(\d+)"),
    "metrics": re.compile(r"metrics on http://[\d.]+:(\d+)/metrics"),
}
STICK_ATOL = 1e-4  # TCP replies round sticks to 4 decimals (5e-5)
RESIZED_FRAME_ATOL = 2e-2  # tiny-a's 320x240 frame goes through a bicubic resize (tests/server/test_server_golden)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class ServerProcess:
    """`nitrogen-server` (the installed console script) on 127.0.0.1, every port chosen by the kernel;
    the ports are read from its log, like an operator would."""

    def __init__(self, checkpoint: str, *extra: str, name: str = "server") -> None:
        exe = shutil.which("nitrogen-server", path=str(Path(sys.executable).parent))
        assert exe, f"nitrogen-server is not installed next to {sys.executable} (pip install -e .)"
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        cmd = [exe, "--checkpoint", checkpoint, "--device", "cpu", "--host", HOST, "--zmq-port", "0",
               "--tcp-port", "0", "--http-port", "0", "--no-warmup", *extra]
        self.name = name
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     cwd=REPO)
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            for what, pattern in LISTENING.items():
                m = pattern.search(line)
                if m:
                    self.ports[what] = int(m.group(1))
            if len(self.ports) == len(LISTENING):
                self._ready.set()

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not start (ports seen: {self.ports}):\n" + self.log(40))
        return self

    @property
    def tcp_port(self) -> int:
        return self.ports["tcp"]

    @property
    def zmq_port(self) -> int:
        return self.ports["zmq"]

    @property
    def metrics_port(self) -> int:
        return self.ports["metrics"]

    def log(self, last: int = 0) -> str:
        return "\n".join(self.lines[-last:])

    def kill(self) -> None:
        """SIGKILL: the replica dies mid-request, as on a node failure or an OOM kill."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM, as Kubernetes and Docker stop it; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


def scrape(port: int, timeout: float = 5.0) -> Samples:
    """GET http://127.0.0.1:port/metrics and parse it: {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=timeout) as reply:
        assert reply.status == 200, reply.status
        assert reply.headers.get_content_type() == "text/plain", reply.headers["Content-Type"]
        text = reply.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a sample over every label set that includes `labels` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and want <= set(lbls))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def check_golden(pred: Mapping[str, object], g: Mapping[str, np.ndarray], i: int) -> None:
    """A reply equals golden call i: buttons exactly, sticks to the reply's rounding."""
    atol = STICK_ATOL if g[f"image_{i}"].shape[:2] == (256, 256) else RESIZED_FRAME_ATOL
    np.testing.assert_array_equal(np.asarray(pred["buttons"], np.float32), g[f"buttons_{i}"])
    for key in ("j_left", "j_right"):
        np.testing.assert_allclose(np.asarray(pred[key], np.float32), g[f"{key}_{i}"], atol=atol, rtol=0)


class HAProxy:
    """Debian's haproxy in TCP mode in front of the replicas; config written into `folder`.

    `frontends` maps a name to (listen port, balance algorithm, backend port per replica); every
    listener is on 127.0.0.1. Health checks find a dead replica within ~0.3 s, and a connection the
    dead replica refuses is redispatched to a live one.
    """

    def __init__(self, folder: Path, frontends: Mapping[str, tuple[int, str, Sequence[int]]]) -> None:
        exe = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
        assert exe, "haproxy not found: apt-get install haproxy (.ci/setup.sh does)"
        self.config = folder / "haproxy.cfg"
        self.config.write_text(haproxy_config(frontends))
        check = subprocess.run([exe, "-c", "-f", str(self.config)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, f"haproxy rejected {self.config}:\n{check.stdout}{check.stderr}"
        self.ports = {name: spec[0] for name, spec in frontends.items()}
        self.proc = subprocess.Popen([exe, "-db", "-f", str(self.config)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + 10
        while not all(_accepts(p) for p in self.ports.values()):
            assert self.proc.poll() is None, "haproxy exited:\n" + "\n".join(self.lines)
            assert time.monotonic() < deadline, "haproxy did not listen within 10 s:\n" + "\n".join(self.lines)
            time.sleep(0.05)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def haproxy_config(frontends: Mapping[str, tuple[int, str, Sequence[int]]]) -> str:
    """TCP-mode HAProxy config: one frontend + backend per entry, replicas checked every 200 ms."""
    parts = [
        "global",
        "    maxconn 512",
        "defaults",
        "    mode tcp",
        "    log stdout format raw local0",  # one line per connection, kept in HAProxy.lines
        "    option tcplog",
        "    timeout connect 1s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    retries 3",
        "    option redispatch",  # a connection a dead replica refuses goes to a live one
        # A dead replica's connections are closed by its kernel; a live but failing one keeps them
        # (like kube-proxy, which only stops sending new connections to a pod that is not ready).
        "    default-server inter 200ms fall 1 rise 2",
    ]
    for name, (port, balance, backends) in frontends.items():
        parts += [f"frontend {name}", f"    bind {HOST}:{port}", f"    default_backend {name}_replicas",
                  f"backend {name}_replicas", f"    balance {balance}"]
        if balance == "source":
            parts.append("    hash-type consistent")  # a replica's death moves only its own clients
        parts += [f"    server r{i} {HOST}:{p} check" for i, p in enumerate(backends)]
    return "\n".join(parts) + "\n"
