"""`pip install ./clients/python` stays thin: the resolved set never contains torch (needs PyPI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from client_testkit import REPO
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CLIENT_DIR = REPO / "clients" / "python"
HEAVY = {"torch", "torchvision", "transformers", "diffusers", "nitrogen-server"}


def pip_report(tmp_path: Path, *args: str) -> list[dict]:
    report = tmp_path / "report.json"
    out = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--dry-run", "--quiet", "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, f"pip failed (is PyPI reachable?):\n{out.stderr[-3000:]}"
    return json.loads(report.read_text())["install"]


def test_install_resolves_only_the_thin_set(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    installs = pip_report(tmp_path, "--python", str(python), "install", str(CLIENT_DIR))
    names = {canonicalize_name(i["metadata"]["name"]) for i in installs}
    expected = {"nitrogen-client", "pyzmq", "numpy", "pillow", "av"}
    if sys.platform == "win32":
        expected |= {"dxcam", "vgamepad", "comtypes", "xspeedhack", "psutil", "pywin32"}
    assert names == expected

    # The Windows-only backends are declared for Windows and nowhere else.
    meta = next(i["metadata"] for i in installs if i["metadata"]["name"] == "nitrogen-client")
    reqs = [Requirement(r) for r in meta["requires_dist"]]

    def wanted(platform: str) -> set[str]:
        env = {
            **default_environment(),
            "sys_platform": platform,
            "platform_system": "Windows" if platform == "win32" else "Linux",
        }
        return {canonicalize_name(r.name) for r in reqs if r.marker is None or r.marker.evaluate(env)}

    assert wanted("linux") == {"pyzmq", "numpy", "pillow", "av"}
    assert wanted("win32") == {"pyzmq", "numpy", "pillow", "av", "dxcam", "vgamepad", "xspeedhack"}

    # What Windows would pull: resolve the declared Windows requirements for win_amd64 CPython 3.11
    # from wheels. vgamepad is left out: it ships only an sdist, whose setup.py declares no
    # dependency on Windows (libevdev elsewhere).
    win_env = {**default_environment(), "sys_platform": "win32", "platform_system": "Windows"}
    win_reqs = sorted(
        str(r).split(";")[0]
        for r in reqs
        if (r.marker is None or r.marker.evaluate(win_env)) and canonicalize_name(r.name) != "vgamepad"
    )
    win = pip_report(
        tmp_path,
        "install",
        "--target",
        str(tmp_path / "t"),
        "--ignore-installed",
        "--platform",
        "win_amd64",
        "--python-version",
        "3.11",
        "--only-binary=:all:",
        *win_reqs,
    )
    win_names = {canonicalize_name(i["metadata"]["name"]) for i in win}
    assert {"dxcam", "pyzmq", "numpy", "pillow", "av", "xspeedhack"} <= win_names  # PyAV: Windows wheels
    assert not win_names & HEAVY, win_names & HEAVY
