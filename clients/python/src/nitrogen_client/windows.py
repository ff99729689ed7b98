"""Find a game's window by process name through Win32 (ctypes only, no pywin32).

Everything Win32 is looked up when called, so this module imports on any OS; the name matching and
the "did you mean" list are plain functions tested everywhere.
"""

from __future__ import annotations

import difflib
import functools
import logging
import sys
from dataclasses import dataclass
from types import SimpleNamespace

log = logging.getLogger(__name__)


class WindowNotFoundError(LookupError):
    """No visible window for the requested process; the message lists similar running processes."""


@dataclass(frozen=True)
class Rect:
    """Screen rectangle, right/bottom exclusive (the convention dxcam's region uses)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


@dataclass(frozen=True)
class Monitor:
    """A display: ``device`` is its GDI name (``\\\\.\\DISPLAY2``), the name DXGI (dxcam) outputs carry too."""

    device: str
    rect: Rect


@dataclass(frozen=True)
class GameWindow:
    hwnd: int
    pid: int
    process: str
    title: str


def similar_names(wanted: str, names: list[str], limit: int = 8) -> list[str]:
    """Running process names that look like ``wanted`` (case-insensitive), best first, unique."""
    key = wanted.lower().removesuffix(".exe")
    by_lower: dict[str, str] = {}
    for n in names:
        by_lower.setdefault(n.lower(), n)
    stems = {low.removesuffix(".exe"): low for low in by_lower}
    hits = [stems[s] for s in difflib.get_close_matches(key, list(stems), n=limit, cutoff=0.6)]
    hits += sorted(low for s, low in stems.items() if key and (key in s or s in key) and len(s) > 2)
    seen: list[str] = []
    for low in hits:
        if low not in seen:
            seen.append(low)
    return [by_lower[low] for low in seen[:limit]]


def not_found_message(wanted: str, names: list[str]) -> str:
    """The error text for a missing process: what was asked, and what is running that resembles it."""
    close = similar_names(wanted, names)
    hint = (
        f" Similar running processes: {', '.join(close)}."
        if close
        else " No running process has a similar name."
    )
    return f"no running process named {wanted!r} (case-insensitive) has a visible window.{hint}"


def _require_windows() -> None:
    if sys.platform != "win32":
        raise OSError(f"finding a game window needs Windows (Win32); this is {sys.platform}")


@functools.lru_cache(maxsize=1)
def _win32() -> SimpleNamespace:
    """Private DLL handles with full prototypes: without argtypes ctypes passes ints as 32-bit C ints,
    which breaks 64-bit handles. Built once, on first use (Windows only)."""
    _require_windows()
    import ctypes
    from ctypes import wintypes

    class PROCESSENTRY32W(ctypes.Structure):
        _fields_ = [
            ("dwSize", wintypes.DWORD),
            ("cntUsage", wintypes.DWORD),
            ("th32ProcessID", wintypes.DWORD),
            ("th32DefaultHeapID", ctypes.c_size_t),
            ("th32ModuleID", wintypes.DWORD),
            ("cntThreads", wintypes.DWORD),
            ("th32ParentProcessID", wintypes.DWORD),
            ("pcPriClassBase", ctypes.c_long),
            ("dwFlags", wintypes.DWORD),
            ("szExeFile", wintypes.WCHAR * 260),
        ]

    class MONITORINFO(ctypes.Structure):  # MONITORINFOEXW: szDevice is the name DXGI outputs carry
        _fields_ = [
            ("cbSize", wintypes.DWORD),
            ("rcMonitor", wintypes.RECT),
            ("rcWork", wintypes.RECT),
            ("dwFlags", wintypes.DWORD),
            ("szDevice", wintypes.WCHAR * 32),
        ]

    enum_proc = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.HWND, wintypes.LPARAM)
    k32 = ctypes.WinDLL("kernel32", use_last_error=True)
    u32 = ctypes.WinDLL("user32", use_last_error=True)
    HWND, HANDLE, DWORD, BOOL = wintypes.HWND, wintypes.HANDLE, wintypes.DWORD, wintypes.BOOL
    protos = [
        (k32.CreateToolhelp32Snapshot, HANDLE, [DWORD, DWORD]),
        (k32.Process32FirstW, BOOL, [HANDLE, ctypes.POINTER(PROCESSENTRY32W)]),
        (k32.Process32NextW, BOOL, [HANDLE, ctypes.POINTER(PROCESSENTRY32W)]),
        (k32.CloseHandle, BOOL, [HANDLE]),
        (u32.EnumWindows, BOOL, [enum_proc, wintypes.LPARAM]),
        (u32.GetWindowThreadProcessId, DWORD, [HWND, ctypes.POINTER(DWORD)]),
        (u32.IsWindowVisible, BOOL, [HWND]),
        (u32.GetWindowTextLengthW, ctypes.c_int, [HWND]),
        (u32.GetWindowTextW, ctypes.c_int, [HWND, wintypes.LPWSTR, ctypes.c_int]),
        (u32.GetClientRect, BOOL, [HWND, ctypes.POINTER(wintypes.RECT)]),
        (u32.ClientToScreen, BOOL, [HWND, ctypes.POINTER(wintypes.POINT)]),
        (u32.MonitorFromWindow, HANDLE, [HWND, DWORD]),
        (u32.GetMonitorInfoW, BOOL, [HANDLE, ctypes.POINTER(MONITORINFO)]),
        (u32.IsIconic, BOOL, [HWND]),
        (u32.IsWindow, BOOL, [HWND]),
        (u32.GetForegroundWindow, HWND, []),
        (u32.SetForegroundWindow, BOOL, [HWND]),
        (u32.ShowWindow, BOOL, [HWND, ctypes.c_int]),
        (k32.OpenProcess, HANDLE, [DWORD, BOOL, DWORD]),
        (k32.IsWow64Process, BOOL, [HANDLE, ctypes.POINTER(BOOL)]),
        (k32.QueryFullProcessImageNameW, BOOL, [HANDLE, DWORD, wintypes.LPWSTR, ctypes.POINTER(DWORD)]),
    ]
    for fn, restype, argtypes in protos:
        fn.restype, fn.argtypes = restype, argtypes
    return SimpleNamespace(
        ctypes=ctypes,
        wt=wintypes,
        k32=k32,
        u32=u32,
        enum_proc=enum_proc,
        PROCESSENTRY32W=PROCESSENTRY32W,
        MONITORINFO=MONITORINFO,
    )


def make_dpi_aware() -> None:
    """Ask for physical-pixel coordinates, so window rectangles match what the screen grabber sees."""
    w = _win32()
    windll = w.ctypes.windll
    try:
        windll.user32.SetProcessDpiAwarenessContext(w.ctypes.c_void_p(-4))  # per-monitor v2
    except (AttributeError, OSError):
        try:
            windll.shcore.SetProcessDpiAwareness(2)
        except (AttributeError, OSError):
            windll.user32.SetProcessDPIAware()


def list_processes() -> dict[int, str]:
    """pid -> executable name of every running process (Toolhelp snapshot)."""
    w = _win32()
    snapshot = w.k32.CreateToolhelp32Snapshot(0x00000002, 0)  # TH32CS_SNAPPROCESS
    if snapshot in (None, w.wt.HANDLE(-1).value):
        raise w.ctypes.WinError(w.ctypes.get_last_error())
    result: dict[int, str] = {}
    try:
        entry = w.PROCESSENTRY32W()
        entry.dwSize = w.ctypes.sizeof(w.PROCESSENTRY32W)
        ok = w.k32.Process32FirstW(snapshot, w.ctypes.byref(entry))
        while ok:
            result[int(entry.th32ProcessID)] = entry.szExeFile
            ok = w.k32.Process32NextW(snapshot, w.ctypes.byref(entry))
    finally:
        w.k32.CloseHandle(snapshot)
    return result


def client_rect(hwnd: int) -> Rect:
    """The window's client area (no borders or title bar) in screen coordinates."""
    w = _win32()
    rect = w.wt.RECT()
    if not w.u32.GetClientRect(hwnd, w.ctypes.byref(rect)):
        raise OSError(f"GetClientRect failed for window {hwnd:#x} (was the game closed?)")
    origin = w.wt.POINT(0, 0)
    w.u32.ClientToScreen(hwnd, w.ctypes.byref(origin))
    return Rect(origin.x, origin.y, origin.x + rect.right, origin.y + rect.bottom)


def monitor_of(hwnd: int) -> Monitor:
    """The monitor showing most of the window: its device name and desktop rectangle."""
    w = _win32()
    monitor = w.u32.MonitorFromWindow(hwnd, 2)  # MONITOR_DEFAULTTONEAREST
    info = w.MONITORINFO()
    info.cbSize = w.ctypes.sizeof(w.MONITORINFO)
    if not w.u32.GetMonitorInfoW(monitor, w.ctypes.byref(info)):
        raise OSError(f"GetMonitorInfoW failed for window {hwnd:#x}")
    r = info.rcMonitor
    return Monitor(info.szDevice, Rect(r.left, r.top, r.right, r.bottom))


class Win32Window:
    """The game window as the capture and the player use it. These few methods are all they call,
    so the tests stand in for this class on any OS."""

    def __init__(self, hwnd: int) -> None:
        self.hwnd = hwnd

    def client_rect(self) -> Rect:
        return client_rect(self.hwnd)

    def monitor(self) -> Monitor:
        return monitor_of(self.hwnd)

    def is_minimized(self) -> bool:
        return bool(_win32().u32.IsIconic(self.hwnd))

    def is_foreground(self) -> bool:
        return _win32().u32.GetForegroundWindow() == self.hwnd

    def exists(self) -> bool:
        return bool(_win32().u32.IsWindow(self.hwnd))

    def bring_to_front(self) -> bool:
        """Restore the window if minimised and make it the active one (the original player did too).
        Windows may refuse (focus stealing); False then."""
        u32 = _win32().u32
        if u32.IsIconic(self.hwnd):
            u32.ShowWindow(self.hwnd, 9)  # SW_RESTORE
        return bool(u32.SetForegroundWindow(self.hwnd)) or self.is_foreground()


def _open_process(pid: int) -> int | None:
    handle = _win32().k32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    return handle or None


def process_is_wow64(pid: int) -> bool | None:
    """True for a 32-bit process on 64-bit Windows, False for a native one, None if not allowed to ask."""
    w = _win32()
    handle = _open_process(pid)
    if handle is None:
        return None
    try:
        flag = w.wt.BOOL()
        return bool(flag.value) if w.k32.IsWow64Process(handle, w.ctypes.byref(flag)) else None
    finally:
        w.k32.CloseHandle(handle)


def process_image(pid: int) -> str | None:
    """The full path of the process's executable, or None if not allowed to ask."""
    w = _win32()
    handle = _open_process(pid)
    if handle is None:
        return None
    try:
        size = w.wt.DWORD(32768)
        buf = w.ctypes.create_unicode_buffer(size.value)
        ok = w.k32.QueryFullProcessImageNameW(handle, 0, buf, w.ctypes.byref(size))
        return buf.value if ok else None
    finally:
        w.k32.CloseHandle(handle)


def find_window(process: str) -> GameWindow:
    """The game's main window: the largest visible, titled top-level window of a process so named."""
    w = _win32()
    procs = list_processes()
    wanted = process.lower()
    pids = {pid for pid, name in procs.items() if name.lower() == wanted}
    if not pids:
        raise WindowNotFoundError(not_found_message(process, sorted(set(procs.values()))))

    found: list[tuple[int, GameWindow]] = []

    def visit(hwnd: int | None, _lparam: int) -> bool:
        pid = w.wt.DWORD()
        w.u32.GetWindowThreadProcessId(hwnd, w.ctypes.byref(pid))
        if hwnd and pid.value in pids and w.u32.IsWindowVisible(hwnd):
            length = w.u32.GetWindowTextLengthW(hwnd)
            buf = w.ctypes.create_unicode_buffer(length + 1)
            w.u32.GetWindowTextW(hwnd, buf, length + 1)
            rect = w.wt.RECT()
            w.u32.GetClientRect(hwnd, w.ctypes.byref(rect))
            area = rect.right * rect.bottom
            if buf.value and area > 0:
                found.append((area, GameWindow(int(hwnd), int(pid.value), procs[pid.value], buf.value)))
        return True

    w.u32.EnumWindows(w.enum_proc(visit), 0)
    if not found:
        raise WindowNotFoundError(
            f"process {process!r} is running (pid {', '.join(map(str, sorted(pids)))}) but has no visible "
            "titled window yet; start the game's window, then run again"
        )
    found.sort(key=lambda item: item[0], reverse=True)
    window = found[0][1]
    log.info("found %r window %r (pid %d, hwnd %#x)", window.process, window.title, window.pid, window.hwnd)
    return window
