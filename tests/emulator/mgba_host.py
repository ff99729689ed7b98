"""The headless mGBA host: compiled from host/mgba_headless.c with the system C compiler against Debian's
libmgba-dev (mGBA 0.10, Lua 5.4), run on the project's Game Boy test ROM, its log parsed; and the
reader for the ROM's screen (the pad byte and read count it draws as boxes)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ROM = HERE / "rom" / "padtest.gb"
HOST_SOURCE = HERE / "host" / "mgba_headless.c"
SHIM = HERE / "bizhawk_shim.lua"
BIZHAWK_SCRIPT = REPO / "clients" / "lua" / "nitrogen_bizhawk.lua"
MGBA_SCRIPT = REPO / "clients" / "lua" / "nitrogen_mgba.lua"
PAD_ADDRESS, PAD_BYTES = 0xC000, 2  # the ROM's pad byte and its read count (padtest.s)
# mGBA's C.GB_KEY bits, which the ROM stores in the same order.
GB_KEY = {"A": 0, "B": 1, "Select": 2, "Start": 3, "Right": 4, "Left": 5, "Up": 6, "Down": 7}
INSTALL_HINT = "install the libmgba-dev and gcc packages (.ci/setup.sh does)"


def build_host(folder: Path) -> Path:
    """Compiles the host into `folder`; fails (never skips) when the compiler or libmgba is missing."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, f"no C compiler found: {INSTALL_HINT}"
    assert Path("/usr/include/mgba/core/scripting.h").is_file(), f"libmgba headers not found: {INSTALL_HINT}"
    exe = folder / "mgba_headless"
    proc = subprocess.run(
        [cc, "-O1", "-Wall", "-Werror", "-o", str(exe), str(HOST_SOURCE), "-lmgba"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"compiling {HOST_SOURCE.name} failed ({INSTALL_HINT}):\n{proc.stderr}"
    return exe


def pad_mask(pad: dict[str, bool], prefix: str = "") -> int:
    """A BizHawk-named Game Boy pad table -> the key bitmask mGBA and the ROM use."""
    return sum(1 << bit for name, bit in GB_KEY.items() if pad.get(prefix + name))


@dataclass
class HostRun:
    returncode: int
    records: list[dict]
    stderr: str
    frames: list[dict] = field(init=False)  # {"frame", "keys", "peek": [pad, count]} after each frame
    logs: list[str] = field(init=False)  # console:log / warn / error
    buffers: list[dict] = field(init=False)  # console text buffer contents as they changed
    end: dict = field(init=False)

    def __post_init__(self) -> None:
        self.frames = [r for r in self.records if "keys" in r]
        self.logs = [r["log"] for r in self.records if "log" in r]
        self.buffers = [r for r in self.records if "buffer" in r]
        ends = [r for r in self.records if "end" in r]
        self.end = ends[-1] if ends else {}

    def errors(self) -> list[str]:
        return [r["log"] for r in self.records if r.get("level") == "error"]


def check_no_errors(run: HostRun) -> None:
    assert not run.errors() and not run.end.get("error"), (run.errors(), run.end, run.stderr)


def lua_globals(values: dict) -> str:
    """A Lua chunk setting globals from plain Python values (the config script the host loads first)."""

    def lit(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)  # a JSON string of ASCII text is a valid Lua string
        if isinstance(v, dict):
            return "{" + ", ".join(f"[{lit(k)}] = {lit(x)}" for k, x in v.items()) + "}"
        raise TypeError(f"cannot write {v!r} as Lua")

    return "".join(f"{name} = {lit(value)}\n" for name, value in values.items())


class Host:
    def __init__(self, exe: Path, folder: Path):
        self.exe, self.folder, self.count = exe, folder, 0

    def start(self, scripts: list[Path], globals_: dict, frames: int) -> tuple[subprocess.Popen, Path]:
        self.count += 1
        config = self.folder / f"config_{self.count}.lua"
        config.write_text(lua_globals(globals_))
        log = self.folder / f"host_{self.count}.jsonl"
        cmd = [str(self.exe), str(ROM), str(log), str(frames), str(PAD_ADDRESS), str(PAD_BYTES), str(config)]
        proc = subprocess.Popen(
            cmd + [str(s) for s in scripts], cwd=self.folder, stderr=subprocess.PIPE, text=True
        )
        return proc, log

    @staticmethod
    def finish(proc: subprocess.Popen, log: Path, timeout: float) -> HostRun:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"mgba_headless ran past {timeout} s; log tail: {log.read_text()[-2000:]}")
        lines = log.read_text().splitlines() if log.exists() else []
        return HostRun(proc.returncode, [json.loads(x) for x in lines if x.endswith("}")], err)

    def run(self, scripts: list[Path], globals_: dict, frames: int = 100000, timeout: float = 120) -> HostRun:
        proc, log = self.start(scripts, globals_, frames)
        return self.finish(proc, log, timeout)


def read_rom_screen(png: bytes) -> tuple[int, int]:
    """The (pad byte, read count) the ROM drew: 8 boxes each on tile rows 4 and 10, bit i at column
    2 + 2i, black = set. Also checks the frame is the ROM's: 160x144, white around the boxes."""
    image = Image.open(io.BytesIO(png)).convert("L")
    assert image.size == (160, 144), f"not a Game Boy screen: {image.size}"

    def row(tile_row: int) -> int:
        value = 0
        for bit in range(8):
            shade = image.getpixel(((2 + 2 * bit) * 8 + 8, tile_row * 8 + 8))
            assert shade < 64 or shade > 192, f"box {bit} of row {tile_row} is neither black nor white"
            value |= (shade < 64) << bit
        return value

    assert image.getpixel((4, 4)) > 192 and image.getpixel((150, 140)) > 192, (
        "the ROM's screen is white around"
    )
    return row(4), row(10)
