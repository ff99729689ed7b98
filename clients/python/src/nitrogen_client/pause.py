"""``--pause``: whether the game runs on while the model thinks.

``none``: real time. The game runs during each predict; the player makes up for the round trip by
skipping the actions whose time has passed (``pacing.stale_actions``).

``speedhack``: the original player's way. xspeedhack injects a DLL into the game that scales its
clocks (QueryPerformanceCounter, GetTickCount(64), timeGetTime); speed 0 freezes it. Each pad frame
is "resume, hold the action 1/fps, freeze", so the screenshot and the predict happen with the game
frozen. Injection can upset anti-cheat and some games, and a game that times itself by other means
does not freeze; the player resumes the game whenever it stops.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Literal

from .pacing import Waiter

log = logging.getLogger(__name__)

Arch = Literal["x86", "x64"]
PAUSE_MODES = ("none", "speedhack")
_PE_MACHINES: dict[int, Arch] = {0x14C: "x86", 0x8664: "x64"}  # IMAGE_FILE_MACHINE_I386 / _AMD64


class GamePause(ABC):
    """Freezes and resumes the game; ``freezes`` says whether it really does."""

    freezes: bool = False

    @abstractmethod
    def freeze(self) -> None:
        """Stop the game's clock."""

    @abstractmethod
    def resume(self) -> None:
        """Let the game run at normal speed."""

    def hold(self, seconds: float, waiter: Waiter) -> bool:
        """One pad frame: run the game for ``seconds``, then freeze it again. False if stopped early."""
        self.resume()
        try:
            return waiter.sleep(seconds)
        finally:
            self.freeze()

    def close(self) -> None:
        """Leave the game running."""
        self.resume()


class RealTime(GamePause):
    """``--pause none``: the game is never frozen."""

    def freeze(self) -> None:
        pass

    def resume(self) -> None:
        pass


class SpeedhackPause(GamePause):
    """``--pause speedhack``: an xspeedhack client (``set_speed``) attached to the game process."""

    freezes = True

    def __init__(self, client: Any) -> None:
        self._client = client
        self.frozen = False

    @classmethod
    def attach(cls, pid: int, arch: Arch | None = None) -> SpeedhackPause:
        """Inject xspeedhack's DLL for ``arch`` (found from the process when None) into process ``pid``."""
        arch = arch or process_arch(pid)
        try:
            import xspeedhack  # Windows-only: imported here so the package loads anywhere
        except Exception as exc:
            raise RuntimeError(f"--pause speedhack needs xspeedhack (Windows only): {exc}") from exc
        log.info("attaching xspeedhack (%s) to process %d", arch, pid)
        try:
            client = xspeedhack.Client(process_id=pid, arch=arch)
        except Exception as exc:  # the injector's exit status, a missing pipe, access denied
            raise RuntimeError(
                f"xspeedhack could not attach to process {pid} ({arch}): {exc}. Run as administrator, "
                "check --game-arch, or use --pause none"
            ) from exc
        return cls(client)

    def freeze(self) -> None:
        self._client.set_speed(0.0)
        self.frozen = True

    def resume(self) -> None:
        self._client.set_speed(1.0)
        self.frozen = False

    def close(self) -> None:
        if self._client is not None:
            try:
                self.resume()
            finally:
                self._client = None  # its __del__ closes the pipe


def pe_arch(header: bytes) -> Arch | None:
    """x86 or x64 from the start of an .exe (DOS header, then the PE header it points to); None if
    it is not a PE file of either kind."""
    if len(header) < 64 or header[:2] != b"MZ":
        return None
    offset = int.from_bytes(header[0x3C:0x40], "little")
    pe = header[offset : offset + 6]
    if len(pe) < 6 or pe[:4] != b"PE\0\0":
        return None
    return _PE_MACHINES.get(int.from_bytes(pe[4:6], "little"))


def exe_arch(path: str | Path) -> Arch | None:
    """``pe_arch`` of an executable file (its first 4 KiB hold both headers)."""
    with open(path, "rb") as f:
        return pe_arch(f.read(4096))


def process_arch(pid: int) -> Arch:
    """The game's architecture, which picks xspeedhack's 32- or 64-bit DLL: WOW64 means x86; when the
    process cannot be queried, the header of its .exe decides (as the original player did)."""
    from .windows import process_image, process_is_wow64

    wow64 = process_is_wow64(pid)
    if wow64 is not None:
        return "x86" if wow64 else "x64"
    image = process_image(pid)
    arch = exe_arch(image) if image else None
    if arch is None:
        raise OSError(f"cannot tell whether process {pid} is 32- or 64-bit; pass --game-arch x86 or x64")
    return arch


def make_pause(mode: str, pid: int | None = None, arch: Arch | None = None) -> GamePause:
    """The GamePause for ``--pause MODE``."""
    if mode == "none":
        return RealTime()
    if mode == "speedhack":
        if pid is None:
            raise ValueError("--pause speedhack needs a game process (--process), not a video")
        return SpeedhackPause.attach(pid, arch)
    raise ValueError(f"--pause must be one of {PAUSE_MODES}, got {mode!r}")
