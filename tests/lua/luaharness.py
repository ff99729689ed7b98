"""Helpers for the BizHawk script tests: the reference pad table, a nitrogen-server subprocess, and a
runner for tests/lua/harness.lua (BizHawk's Lua API stubbed, everything the script does logged)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nitrogen import BUTTON_NAMES


def write_frames(g: dict, folder: Path) -> Path:
    """A golden case's frames as frame_0.png ... (what the BizHawk screenshot stub hands the script)."""
    from PIL import Image

    for i in range(int(g["n_steps"])):
        Image.fromarray(g[f"image_{i}"]).save(folder / f"frame_{i}.png")
    return folder


def find_lua() -> str:
    """lua5.4 with LuaSocket, or an assertion naming the packages to install (never a skip)."""
    import shutil

    exe = shutil.which("lua5.4")
    assert exe, "lua5.4 not found: install the lua5.4 and lua-socket packages (.ci/setup.sh does)"
    probe = subprocess.run([exe, "-e", "require('socket')"], capture_output=True, text=True, check=False)
    assert probe.returncode == 0, f"LuaSocket missing for lua5.4 (apt-get install lua-socket): {probe.stderr}"
    return exe

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCRIPT = REPO / "clients" / "lua" / "nitrogen_bizhawk.lua"
HARNESS = HERE / "harness.lua"
EVAL = HERE / "eval.lua"
READY = re.compile(r"listening tcp on ([\d.]+):(\d+)")

MODEL_BUTTONS = list(BUTTON_NAMES)  # the model's 21 outputs, in order


def _dpad(p: str, up: str = "Up", down: str = "Down", left: str = "Left", right: str = "Right") -> dict:
    return {
        p + up: ["DPAD_UP", "LS_UP"],
        p + down: ["DPAD_DOWN", "LS_DOWN"],
        p + left: ["DPAD_LEFT", "LS_LEFT"],
        p + right: ["DPAD_RIGHT", "LS_RIGHT"],
    }


# What each console's pad must receive (BizHawk button name -> model inputs, any of which presses it);
# the README documents the same table. LS_/RS_ = left/right stick past the dead-zone.
PAD_SPEC: dict[str, dict[str, list[str]]] = {
    "NES": {
        "P1 A": ["SOUTH"],
        "P1 B": ["EAST", "WEST"],
        "P1 Start": ["START"],
        "P1 Select": ["BACK"],
        **_dpad("P1 "),
    },
    "SNES": {
        "P1 B": ["SOUTH"],
        "P1 A": ["EAST"],
        "P1 Y": ["WEST"],
        "P1 X": ["NORTH"],
        "P1 L": ["LEFT_SHOULDER", "LEFT_TRIGGER"],
        "P1 R": ["RIGHT_SHOULDER", "RIGHT_TRIGGER"],
        "P1 Start": ["START"],
        "P1 Select": ["BACK"],
        **_dpad("P1 "),
    },
    "GB": {"A": ["SOUTH"], "B": ["EAST", "WEST"], "Start": ["START"], "Select": ["BACK"], **_dpad("")},
    "GBA": {
        "A": ["SOUTH"],
        "B": ["EAST", "WEST"],
        "L": ["LEFT_SHOULDER", "LEFT_TRIGGER"],
        "R": ["RIGHT_SHOULDER", "RIGHT_TRIGGER"],
        "Start": ["START"],
        "Select": ["BACK"],
        **_dpad(""),
    },
    "GEN": {
        "P1 A": ["WEST"],
        "P1 B": ["SOUTH"],
        "P1 C": ["EAST"],
        "P1 X": ["LEFT_SHOULDER"],
        "P1 Y": ["NORTH"],
        "P1 Z": ["RIGHT_SHOULDER"],
        "P1 Start": ["START"],
        "P1 Mode": ["BACK"],
        **_dpad("P1 "),
    },
    "N64": {
        "P1 A": ["SOUTH"],
        "P1 B": ["WEST", "EAST"],
        "P1 Z": ["LEFT_TRIGGER"],
        "P1 L": ["LEFT_SHOULDER"],
        "P1 R": ["RIGHT_SHOULDER", "RIGHT_TRIGGER"],
        "P1 Start": ["START"],
        "P1 DPad U": ["DPAD_UP"],
        "P1 DPad D": ["DPAD_DOWN"],
        "P1 DPad L": ["DPAD_LEFT"],
        "P1 DPad R": ["DPAD_RIGHT"],
        "P1 C Up": ["RS_UP"],
        "P1 C Down": ["RS_DOWN"],
        "P1 C Left": ["RS_LEFT"],
        "P1 C Right": ["RS_RIGHT"],
    },
}
PAD_SPEC["GBC"] = PAD_SPEC["GB"]


def _opposites(p: str, pairs=(("Up", "Down"), ("Left", "Right"))) -> list[tuple[str, str]]:
    return [(p + a, p + b) for a, b in pairs]


# The one rule for opposite directions (README): a d-pad pair pressed together cancels out.
OPPOSITES: dict[str, list[tuple[str, str]]] = {
    "NES": _opposites("P1 "),
    "SNES": _opposites("P1 "),
    "GB": _opposites(""),
    "GBC": _opposites(""),
    "GBA": _opposites(""),
    "GEN": _opposites("P1 "),
    "N64": _opposites("P1 DPad ", (("U", "D"), ("L", "R"))),
}
# Super Game Boy: Gambatte's Game Boy pad. Game Boy Link: two Game Boy pads, the script plays player 1.
PAD_SPEC["SGB"], OPPOSITES["SGB"] = PAD_SPEC["GB"], OPPOSITES["GB"]
PAD_SPEC["GBL"] = {"P1 " + name: inputs for name, inputs in PAD_SPEC["GB"].items()}
OPPOSITES["GBL"] = _opposites("P1 ")
STICK_DEADZONE = 0.5
ANALOG_DEADZONE = 0.15


def expected_pad(system: str, buttons, j_left, j_right, allow_menu: bool = False) -> tuple[dict, set]:
    """(the joypad.set table, names whose value sits within 1e-3 of a threshold and may go either way)."""
    on = {name: float(v) > 0.5 for name, v in zip(MODEL_BUTTONS, buttons)}
    if not allow_menu:
        on["START"] = on["BACK"] = False
    near: set[str] = set()
    for prefix, (x, y) in (("LS", j_left), ("RS", j_right)):
        for d, v in (("LEFT", -x), ("RIGHT", x), ("UP", -y), ("DOWN", y)):
            on[f"{prefix}_{d}"] = v > STICK_DEADZONE
            if abs(v - STICK_DEADZONE) < 1e-3:
                near.add(f"{prefix}_{d}")
    pad = {name: any(on[i] for i in inputs) for name, inputs in PAD_SPEC[system].items()}
    unsure = {name for name, inputs in PAD_SPEC[system].items() if near & set(inputs)}
    for a, b in OPPOSITES[system]:
        if pad[a] and pad[b]:
            pad[a] = pad[b] = False
        if a in unsure or b in unsure:
            unsure |= {a, b}
    return pad, unsure


def expected_n64_stick(j_left) -> tuple[int, int]:
    """Stick up = +Y; the radius is clamped to 127 (BizHawk's own circle), the dead-zone centres it."""
    x, y = float(j_left[0]), -float(j_left[1])
    r = (x * x + y * y) ** 0.5
    if r < ANALOG_DEADZONE:
        return 0, 0
    if r > 1:
        x, y = x / r, y / r
    xi, yi = (int(np.floor(v * 127 + 0.5)) for v in (x, y))
    if xi * xi + yi * yi > 127 * 127:  # rounding pushed a diagonal past the circle: toward zero
        xi, yi = int(x * 127), int(y * 127)
    return xi, yi


class ServerProcess:
    """`python -m nitrogen_server` on 127.0.0.1; `port` is the TCP (5556-protocol) port it reported."""

    def __init__(self, checkpoint: str, tcp_port: int = 0, timeout: float = 120.0):
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        cmd = [
            sys.executable,
            "-m",
            "nitrogen_server",
            "--checkpoint",
            checkpoint,
            "--device",
            "cpu",
            "--host",
            "127.0.0.1",
            "--zmq-port",
            "0",
            "--tcp-port",
            str(tcp_port),
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO
        )
        self.lines: list[str] = []
        found = threading.Event()
        self.port = 0

        def drain() -> None:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip())
                m = READY.search(line)
                if m and not found.is_set():
                    self.port = int(m.group(2))
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("nitrogen-server did not start:\n" + "\n".join(self.lines[-30:]))

    def info(self) -> dict:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b'{"type":"info"}\n')
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                assert chunk, "server closed the connection before answering info"
                data += chunk
        reply = json.loads(data)
        assert reply["status"] == "ok", reply
        return reply["info"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def lua_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-/:"
        return '"' + "".join(chr(b) if b in safe else f"\\{b:03d}" for b in value.encode()) + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as Lua")


@dataclass
class HarnessRun:
    returncode: int
    records: list[dict]
    stderr: str
    frames: list[dict] = field(init=False)
    console: list[str] = field(init=False)
    end: dict = field(init=False)

    def __post_init__(self) -> None:
        self.frames = [r for r in self.records if "set" in r]
        self.console = [r["console"] for r in self.records if "console" in r]
        ends = [r for r in self.records if "end" in r]
        self.end = ends[-1] if ends else {}


class Harness:
    def __init__(self, lua: str, folder: Path):
        self.lua, self.folder, self.count = lua, folder, 0

    def start(
        self,
        system: str,
        config: dict,
        *,
        frames: Path | None = None,
        max_frames: int = 20000,
        corrupt: tuple[int, ...] = (),
        frame_sleep: float = 0.0,
        dotnet: bool = False,
        max_yields: int | None = None,
        stop_by: str = "stop",
        osd: bool = False,
        cwd: Path | None = None,
        extra_env: dict | None = None,
    ) -> tuple[subprocess.Popen, Path]:
        """Starts harness.lua; `config` becomes NITROGEN_CONFIG (frame_path defaults to a file of
        this test's own, unless `cwd` is given: then the script's default applies in that folder)."""
        self.count += 1
        logfile = self.folder / f"run_{self.count}.jsonl"
        if cwd is None:
            config = {"frame_path": str(self.folder / f"frame_{self.count}.png"), **config}
        env = dict(
            os.environ,
            NITROGEN_SCRIPT=str(SCRIPT),
            NITROGEN_TEST_LOG=str(logfile),
            NITROGEN_TEST_SYSTEM=system,
            NITROGEN_TEST_CONFIG=lua_literal(config),
            NITROGEN_TEST_MAX_FRAMES=str(max_frames),
            NITROGEN_TEST_FRAME_SLEEP=str(frame_sleep),
            NITROGEN_TEST_CORRUPT=",".join(map(str, corrupt)),
            NITROGEN_TEST_DOTNET="1" if dotnet else "0",
            NITROGEN_TEST_STOP_BY=stop_by,
            NITROGEN_TEST_OSD="1" if osd else "0",
            **(extra_env or {}),
        )
        if frames is not None:
            env["NITROGEN_TEST_FRAMES"] = str(frames)
        if max_yields is not None:
            env["NITROGEN_TEST_MAX_YIELDS"] = str(max_yields)
        proc = subprocess.Popen(
            [self.lua, str(HARNESS)],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return proc, logfile

    @staticmethod
    def read(logfile: Path) -> list[dict]:
        if not logfile.exists():
            return []
        lines = logfile.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def finish(self, proc: subprocess.Popen, logfile: Path, timeout: float = 60) -> HarnessRun:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(
                f"the script did not finish in {timeout} s; last records: {self.read(logfile)[-3:]}\n{err}"
            )
        return HarnessRun(proc.returncode, self.read(logfile), err)

    def run(self, system: str, config: dict, timeout: float = 60, **kw) -> HarnessRun:
        proc, logfile = self.start(system, config, **kw)
        return self.finish(proc, logfile, timeout)
