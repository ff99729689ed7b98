"""The BizHawk script end to end: lua5.4 + LuaSocket against a real nitrogen-server on the golden tiny-a
checkpoint. The screenshot stub hands the script the golden frames and the script sends seeds 100, 101,
... so the server's actions are the golden ones; every frame's joypad calls are checked against them."""

from __future__ import annotations

import re

import pytest
from luaharness import PAD_SPEC, HarnessRun, expected_n64_stick, expected_pad

SYSTEMS = ["NES", "SNES", "GB", "GBC", "SGB", "GBL", "GBA", "GEN", "N64"]
GOLDEN = {"seed_base": 100, "resize_mode": "stretch"}


@pytest.fixture(scope="module")
def repeat(tiny_server) -> int:
    return int(tiny_server.info()["action_downsample_ratio"])


def neutral(system: str) -> dict:
    return dict.fromkeys(PAD_SPEC[system], False)


def check_frame(system: str, frame: dict, g: dict, call: int, action: int, allow_menu: bool = False) -> None:
    b, jl, jr = g[f"buttons_{call}"][action], g[f"j_left_{call}"][action], g[f"j_right_{call}"][action]
    want, unsure = expected_pad(system, b, jl, jr, allow_menu)
    got = {k: v for k, v in frame["set"].items() if k not in unsure}
    assert got == {k: v for k, v in want.items() if k not in unsure}, (system, frame["frame"], call, action)
    if system == "N64":
        x, y = expected_n64_stick(jl)
        assert abs(frame["analog"]["P1 X Axis"] - x) <= 1 and abs(frame["analog"]["P1 Y Axis"] - y) <= 1, (
            frame
        )
    else:
        assert not frame["analog"]


def check_clean_end(run: HarnessRun, system: str) -> None:
    assert run.returncode == 0, run.stderr
    assert run.end["exit_set"] == neutral(system), "the pad must be cleared when the script stops"
    assert not run.end["final_analog"], "N64 stick holds must be released when the script stops"
    assert not run.end["unknown"], f"buttons the core does not have: {run.end['unknown']}"
    assert not run.end["non_integer"], (
        "joypad.setanalog needs integers (BizHawk parses them with long.TryParse)"
    )


@pytest.mark.parametrize("system", SYSTEMS)
def test_golden_actions_reach_each_console(harness, tiny_server, golden, golden_frames, repeat, system):
    g = golden("tiny-a")
    steps, horizon = int(g["n_steps"]), len(g["buttons_0"])
    run = harness.run(system, {"port": tiny_server.port, "max_steps": steps, **GOLDEN}, frames=golden_frames)
    check_clean_end(run, system)
    assert run.end["end"] == "returned" and run.end["shots"] == steps
    assert len(run.frames) == steps * horizon * repeat, "each action lasts `repeat` frames, nothing else runs"
    for k, frame in enumerate(run.frames):
        call, action = divmod(k // repeat, horizon)
        assert frame["shots"] == call + 1, "a screenshot precedes each chunk of actions"
        check_frame(system, frame, g, call, action)
    assert any(f"connected to 127.0.0.1:{tiny_server.port}" in line for line in run.console)


def test_bizhawk_transport_over_dotnet_types(harness, tiny_server, golden, golden_frames, repeat):
    """The TcpClient/NetworkStream transport BizHawk uses, run over dotnet_stub.lua's stand-in types."""
    g = golden("tiny-a")
    horizon = len(g["buttons_0"])
    run = harness.run(
        "N64",
        {"port": tiny_server.port, "max_steps": 4, "read_chunk": 64, **GOLDEN},
        frames=golden_frames,
        dotnet=True,
    )
    check_clean_end(run, "N64")
    assert "via dotnet" in run.console[0]
    assert len(run.frames) == 4 * horizon * repeat
    for k, frame in enumerate(run.frames):
        call, action = divmod(k // repeat, horizon)
        check_frame("N64", frame, g, call, action)


def test_frames_per_action_actions_per_step_and_menu(harness, tiny_server, golden, golden_frames):
    g = golden("tiny-a")
    config = {
        "port": tiny_server.port,
        "max_steps": 2,
        "frames_per_action": 3,
        "actions_per_step": 5,
        "allow_menu": True,
        **GOLDEN,
    }
    run = harness.run("SNES", config, frames=golden_frames)
    check_clean_end(run, "SNES")
    assert len(run.frames) == 2 * 5 * 3
    for k, frame in enumerate(run.frames):
        call, action = divmod(k // 3, 5)
        check_frame("SNES", frame, g, call, action, allow_menu=True)
    assert any(f["set"]["P1 Start"] or f["set"]["P1 Select"] for f in run.frames), (
        "with allow_menu the golden START/BACK presses reach the pad"
    )


def test_reply_arrives_in_many_small_reads(harness, tiny_server, golden, golden_frames, repeat):
    g = golden("tiny-a")
    run = harness.run(
        "GEN", {"port": tiny_server.port, "max_steps": 4, "read_chunk": 7, **GOLDEN}, frames=golden_frames
    )
    check_clean_end(run, "GEN")
    horizon = len(g["buttons_0"])
    for k, frame in enumerate(run.frames):
        call, action = divmod(k // repeat, horizon)
        check_frame("GEN", frame, g, call, action)
    reads = int(re.search(r"stopped after 4 answered requests, (\d+) socket reads", run.console[-1]).group(1))
    assert reads >= 4 * 100, f"a ~1 KB reply read 7 bytes at a time needs > 100 reads, got {reads} for 4"


def test_error_reply_is_shown_and_the_game_goes_on(harness, tiny_server):
    run = harness.run("NES", {"port": tiny_server.port, "max_steps": 3, "resize_mode": "sideways"})
    check_clean_end(run, "NES")
    assert run.end["end"] == "returned" and run.end["shots"] == 3
    assert len(run.frames) == 3, "each error reply costs one frame with a cleared pad"
    for frame in run.frames:
        assert frame["set"] == neutral("NES")
        assert frame["status"].startswith("NitroGen: server error: ") and "sideways" in frame["status"]
    assert sum("server error" in line for line in run.console) == 1, "the same error is logged once"


def test_undecodable_frame_then_recovery(harness, tiny_server, golden, golden_frames, repeat):
    g = golden("tiny-a")
    horizon = len(g["buttons_0"])
    run = harness.run(
        "GBA", {"port": tiny_server.port, "max_steps": 3, **GOLDEN}, frames=golden_frames, corrupt=(1,)
    )
    check_clean_end(run, "GBA")
    chunk = horizon * repeat
    assert len(run.frames) == 2 * chunk + 1
    for k, frame in enumerate(run.frames[:chunk]):
        check_frame("GBA", frame, g, 0, k // repeat)
    idle = run.frames[chunk]
    assert idle["set"] == neutral("GBA") and "server error: " in idle["status"]
    for k, frame in enumerate(run.frames[chunk + 1 :]):
        check_frame("GBA", frame, g, 2, k // repeat)  # screenshot 2 went out with seed 102: golden call 2


def test_stop_mid_chunk_releases_the_pad(harness, tiny_server, golden_frames):
    run = harness.run("N64", {"port": tiny_server.port, **GOLDEN}, frames=golden_frames, max_frames=10)
    assert run.end["end"] == "stopped" and len(run.frames) == 10
    assert any(any(f["set"].values()) for f in run.frames) and any(f["analog"] for f in run.frames)
    check_clean_end(run, "N64")
