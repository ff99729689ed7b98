"""The BizHawk script when the server is missing or dies: the game keeps running with a cleared pad, the
state is on screen, and the script reconnects on its own (a real server killed and restarted)."""

from __future__ import annotations

import socket
import time

from luaharness import PAD_SPEC, ServerProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_no_server_keeps_the_game_running(harness):
    port = free_port()
    run = harness.run("SNES", {"port": port, "retry_min_frames": 10, "retry_max_frames": 40}, max_frames=300)
    assert run.returncode == 0 and run.end["end"] == "stopped", run.stderr
    assert len(run.frames) == 300 and run.end["shots"] == 0
    cleared = dict.fromkeys(PAD_SPEC["SNES"], False)
    assert all(f["set"] == cleared for f in run.frames), "no model input, but the pad is held neutral"
    assert all(f"127.0.0.1:{port} unreachable" in f["status"] for f in run.frames)
    assert sum("unreachable" in line for line in run.console) == 1, "retries are not logged one by one"
    assert run.end["exit_set"] == cleared


def test_no_server_over_dotnet_types_shows_one_line(harness):
    port = free_port()
    run = harness.run("GB", {"port": port}, max_frames=50, dotnet=True)
    assert run.returncode == 0 and run.end["end"] == "stopped", run.stderr
    status = run.frames[-1]["status"]
    # NLua hands pcall "A .NET exception occured in user-code"; the script shows the innermost reason.
    assert f"127.0.0.1:{port} unreachable (Connection refused)" in status and "\n" not in status
    assert all(not any(f["set"].values()) for f in run.frames)


def test_server_killed_and_restarted_mid_run(harness, golden_dir, golden_frames):
    first = ServerProcess(str(golden_dir / "tiny-a.pt"))
    port = first.port
    config = {
        "port": port,
        "max_steps": 6,
        "retry_min_frames": 10,
        "retry_max_frames": 60,
        "reply_timeout": 5,
        "seed_base": 100,
        "resize_mode": "stretch",
    }
    proc, logfile = harness.start("N64", config, frames=golden_frames, frame_sleep=0.005, max_frames=40000)
    second = None
    try:
        wait_for(lambda: any(r.get("shots", 0) >= 2 for r in harness.read(logfile)), 30, "two answered steps")
        first.kill()
        wait_for(
            lambda: any("unreachable" in (r.get("status") or "") for r in harness.read(logfile)),
            30,
            "the script to notice the server is gone",
        )
        second = ServerProcess(str(golden_dir / "tiny-a.pt"), tcp_port=port)
        run = harness.finish(proc, logfile, timeout=90)
    finally:
        first.kill()
        if second:
            second.stop()
        if proc.poll() is None:
            proc.kill()
    assert run.returncode == 0 and run.end["end"] == "returned", run.stderr
    assert "stopped after 6 answered requests" in run.console[-1]
    assert sum(f"connected to 127.0.0.1:{port}" in line for line in run.console) == 2
    down = [f for f in run.frames if "unreachable" in (f["status"] or "")]
    assert down, "frames ran while the server was down"
    assert all(not any(f["set"].values()) and f["analog"] == {"P1 X Axis": 0, "P1 Y Axis": 0} for f in down)
    last_down = down[-1]["frame"]
    after = [f for f in run.frames if f["frame"] > last_down]
    assert after and any(any(f["set"].values()) for f in after), "the model plays again after the restart"
    assert not run.end["final_analog"] and not any(run.end["exit_set"].values())
