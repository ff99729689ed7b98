"""A real server process for the hostile-input tests, and what a user can measure of it from outside.

`ServerProcess` runs `python -m nitrogen_server` on 127.0.0.1 with ports 0 (read back from its log);
its descriptor count and resident memory come from /proc. `GoldenWatch` is a well-behaved client that
keeps asking for golden answers on one port while a test abuses the other, and checks every answer
exactly (as tests/server/test_server_golden.py does).
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from server_testkit import ModelClient, TcpClient

REPO = Path(__file__).resolve().parents[2]
READY = {"zmq": re.compile(r"listening zmq on tcp://127\.0\.0\.1:(\d+)"),
         "tcp": re.compile(r"listening tcp on 127\.0\.0\.1:(\d+)")}
STICK_ATOL = 1e-4  # 256x256 frames; resized ones get the core tests' 2e-2 (see test_server_golden.py)
RESIZED_ATOL = 2e-2


class ServerProcess:
    """`python -m nitrogen_server CHECKPOINT` on 127.0.0.1, any free ports, stopped with SIGTERM.

    ``launcher`` replaces ``-m nitrogen_server`` (e.g. ``-c SCRIPT`` that alters the server, then runs
    its CLI with the same arguments)."""

    def __init__(self, checkpoint: str, *args: str, nofile: int | None = None,
                 launcher: tuple[str, ...] = ("-m", "nitrogen_server")) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, *launcher, checkpoint, "--device", "cpu", "--host", "127.0.0.1",
               "--zmq-port", "0", "--tcp-port", "0", "--read-timeout-s", "2", "--max-wait-ms", "1", *args]
        limit = None if nofile is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, errors="replace", preexec_fn=limit)  # noqa: PLW1509
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()
        self.zmq_port, self.tcp_port = (int(self.wait_for(READY[k]).group(1)) for k in ("zmq", "tcp"))

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<EOF>")
            self._changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if m := pattern.search(line):
                        return m
                left = deadline - time.monotonic()
                assert left > 0 and "<EOF>" not in self.lines, f"no {pattern.pattern!r} in log:\n{self.log()}"
                self._changed.wait(left)

    def log(self, last: int = 60) -> str:
        with self._changed:
            return "".join(self.lines[-last:])

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"server died (exit {self.proc.returncode}):\n{self.log()}"

    def fds(self) -> int:
        self.assert_alive()
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def _status_kib(self, field: str) -> int:
        self.assert_alive()
        text = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1))

    def rss_mib(self) -> float:
        return self._status_kib("VmRSS") / 1024

    def peak_rss_mib(self) -> float:
        return self._status_kib("VmHWM") / 1024

    def reset_peak_rss(self) -> None:
        """Start a new peak-RSS window (VmHWM := VmRSS): /proc/PID/clear_refs, value 5."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def wait_fds(self, want: int, timeout: float = 10.0) -> int:
        """The descriptor count, polled until it is back to at most `want` (closing takes a moment)."""
        deadline = time.monotonic() + timeout
        while (n := self.fds()) > want and time.monotonic() < deadline:
            time.sleep(0.1)
        return n

    def errors_logged(self) -> list[str]:
        with self._changed:
            return [line for line in self.lines if " ERROR " in line or "Traceback" in line
                    or "exception was never retrieved" in line]

    def wait_exit(self, timeout: float) -> int:
        """The exit status of a process that ends by itself; its whole output is then read."""
        code = self.proc.wait(timeout)
        self.wait_for(re.compile("^<EOF>$"), timeout)
        return code

    def output(self) -> str:
        with self._changed:
            return "".join(line for line in self.lines if line != "<EOF>")

    def stop(self) -> int:
        """SIGTERM; the exit status (0 for a clean stop)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def check_golden(pred: dict[str, Any], g: dict[str, np.ndarray], i: int) -> None:
    """Buttons exactly; sticks within 1e-4 (2e-2 for frames the model resizes)."""
    atol = STICK_ATOL if g[f"image_{i}"].shape[:2] == (256, 256) else RESIZED_ATOL
    np.testing.assert_array_equal(np.asarray(pred["buttons"], np.float32), g[f"buttons_{i}"])
    for key in ("j_left", "j_right"):
        np.testing.assert_allclose(np.asarray(pred[key], np.float32), g[f"{key}_{i}"], atol=atol, rtol=0)


def golden_round(srv: ServerProcess, port: str, g: dict[str, np.ndarray]) -> int:
    """One pass over the golden frames on a fresh connection of `port` ('tcp' or 'zmq'), every answer
    checked; returns the number of answers. Seeds are golden/README.md's (S + i)."""
    seed0 = int(g["seed"])
    n = int(g["n_steps"])
    if port == "zmq":
        with ModelClient(srv.zmq_port, timeout_ms=30_000) as c:
            for i in range(n):
                reply = c.predict(g[f"image_{i}"], seed=seed0 + i)
                assert reply["status"] == "ok", reply
                check_golden(reply["pred"], g, i)
        return n
    with TcpClient(srv.tcp_port) as c:
        for i in range(n):
            img = g[f"image_{i}"]
            header = {"type": "predict", "seed": seed0 + i, "len": img.nbytes, "width": img.shape[1],
                      "height": img.shape[0]}
            reply = c.request(header, img.tobytes())
            assert reply["status"] == "ok", reply
            check_golden(reply["pred"], g, i)
    return n


class GoldenWatch:
    """While the block runs, a golden client on `port` keeps predicting and checking; on exit it does
    one more round, and re-raises the first wrong answer or failure it met."""

    def __init__(self, srv: ServerProcess, port: str, g: dict[str, np.ndarray]) -> None:
        self.srv, self.port, self.g = srv, port, g
        self.answers = 0
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.answers += golden_round(self.srv, self.port, self.g)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread in __exit__
            self.failure = exc

    def __enter__(self) -> GoldenWatch:  # noqa: PYI034 - Python 3.10 has no typing.Self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)
        assert not self._thread.is_alive(), "the golden client hung"
        if self.failure is not None:
            raise AssertionError(f"golden client on {self.port} failed during the abuse") from self.failure
        assert self.answers > 0, "the golden client got no answer during the abuse"
        self.answers += golden_round(self.srv, self.port, self.g)  # and after
