"""What real BizHawk needs beyond the happy path (issue 14's nine points), under the stubbed API:
waiting paused with emu.yield(), every way of stopping (Stop, the console closed, mid-wait) releasing the
pad, unpausing and closing the socket, .NET exceptions as objects, the user's screenshot setting left as
it was, a relative default frame path, send timeouts; plus server_timing in the status line, unknown
reply and config keys, and the default resize mode."""

from __future__ import annotations

import os

import pytest
from fakeserver import canned_reply
from luaharness import PAD_SPEC
from test_lua_bizhawk import GOLDEN, check_clean_end, neutral


def test_waits_paused_and_yielding(harness, tiny_server, golden_frames):
    """Point 1: no blocking read on BizHawk's UI thread; frameadvance while paused would fail the run."""
    run = harness.run(
        "GB", {"port": tiny_server.port, "max_steps": 3, **GOLDEN}, frames=golden_frames, dotnet=True
    )
    check_clean_end(run, "GB")
    assert run.end["yields"] > 0 and run.end["unpaused_yields"] == 0, "emu.yield() only while paused"
    assert run.end["paused"] is False
    waits = [f["frame"] for f in run.frames if f["yields"]]
    assert waits and all(run.frames[k]["shots"] > run.frames[k - 1]["shots"] for k in waits if k), (
        "the waits sit between a screenshot and the chunk it produced"
    )


@pytest.mark.parametrize("stop_by", ["stop", "console"])
def test_stopped_while_waiting_releases_everything(harness, fake, stop_by):
    """Points 1-3: Stop (or closing the console) during a wait: unpaused, pad and stick released,
    TcpClient closed. Closing the console runs only onconsoleclose handlers."""
    server = fake("silent")
    run = harness.run("N64", {"port": server.port}, dotnet=True, max_yields=30, stop_by=stop_by)
    assert run.returncode == 0 and run.end["end"] == "stopped", run.stderr
    assert len(server.headers) == 1, "the script sent one request and was waiting for its reply"
    assert run.end["paused"] is False, "the emulator must not stay paused after the script stops"
    assert run.end["exit_set"] == neutral("N64") and not run.end["final_analog"]
    assert run.end["open_sockets"] == 0, "the TcpClient must be closed when the script stops"


def test_console_closed_mid_chunk_releases_the_pad(harness, tiny_server, golden_frames):
    run = harness.run(
        "N64", {"port": tiny_server.port, **GOLDEN}, frames=golden_frames, max_frames=10, stop_by="console"
    )
    assert run.end["end"] == "stopped" and any(f["analog"] for f in run.frames)
    check_clean_end(run, "N64")


def test_reply_timeout_keeps_the_game_running(harness, fake):
    server = fake("silent")
    config = {"port": server.port, "reply_timeout": 0.3, "retry_min_frames": 1}
    run = harness.run("NES", config, dotnet=True, max_frames=4, timeout=30)
    assert run.returncode == 0 and run.end["end"] == "stopped", run.stderr
    assert "receive failed: no reply within 0.3 s" in run.frames[0]["status"]
    assert all(f["set"] == neutral("NES") for f in run.frames)
    assert server.connections >= 2, "after a timeout the script reconnects"
    assert run.end["open_sockets"] == 0


def test_send_times_out_instead_of_hanging(harness, fake, tmp_path):
    """Point 9: a server that stops reading must not freeze the emulator in Write."""
    frames = tmp_path / "big"
    frames.mkdir()
    (frames / "frame_0.png").write_bytes(os.urandom(24 * 1024 * 1024))  # more than the socket buffers
    server = fake("stall")
    config = {"port": server.port, "reply_timeout": 0.5, "retry_min_frames": 1000}
    run = harness.run("GB", config, frames=frames, dotnet=True, max_frames=3, timeout=30)
    assert run.returncode == 0 and run.end["end"] == "stopped", run.stderr
    assert "send failed: Socket timeout" in run.frames[0]["status"], "the innermost .NET reason"
    assert "\n" not in run.frames[0]["status"]


def test_error_text_unwraps_dotnet_exceptions(lua_eval):
    """Point 5: NLua's LuaScriptException says nothing; the innermost InnerException has the reason."""
    out = lua_eval("""
        local lse = {__tostring = function() return "A .NET exception occured in user-code" end}
        local function ex(inner) return setmetatable({Message = "A .NET exception occured in user-code",
          InnerException = inner}, lse) end
        emit(M.error_text(ex({Message = "One or more errors occurred. (No connection)",
          InnerException = {Message = "No connection could be made\\n   at Socket.Connect"}})))
        emit(M.error_text(ex({Message = "Unable to write data"})))
        emit(M.error_text(setmetatable({}, lse)))
        emit(M.error_text("plain error\\nstack traceback:"))""")
    assert out == [
        "No connection could be made",
        "Unable to write data",
        "A .NET exception occured in user-code",
        "plain error",
    ]


@pytest.mark.parametrize("osd", [True, False])
def test_screenshot_osd_setting_is_left_as_the_user_had_it(harness, osd):
    """Point 6: setscreenshotosd is saved in the user's config: off only while the script runs."""
    run = harness.run("NES", {"port": 9}, max_frames=5, osd=osd)
    assert run.returncode == 0, run.stderr
    assert run.end["osd"] is osd
    assert run.end["osd_calls"] == ([False, True] if osd else {}), "touched only when it was on"


def test_default_frame_path_is_relative_to_the_script_folder(harness, tiny_server, golden_frames, tmp_path):
    """Point 4: BizHawk runs scripts in their folder; %TEMP% (non-ASCII user names) is not used."""
    folder = tmp_path / "scripts"
    folder.mkdir()
    run = harness.run(
        "GB",
        {"port": tiny_server.port, "max_steps": 1, **GOLDEN},
        frames=golden_frames,
        cwd=folder,
        dotnet=True,
        extra_env={"TEMP": "/nonexistent/Ünïcode", "TMPDIR": "/nonexistent/Ünïcode"},
    )
    check_clean_end(run, "GB")
    assert (folder / "nitrogen_frame.png").is_file() and run.end["shots"] == 1
    assert any(f["status"] and "playing" in f["status"] for f in run.frames)


def test_server_timing_shown_and_unknown_reply_keys_ignored(harness, fake):
    timing = {"queue_ms": 1.2, "infer_ms": 21.5, "total_ms": 23.4}
    server = fake("reply", canned_reply(server_timing=timing, future_key={"nested": [1, None]}))
    run = harness.run("GB", {"port": server.port, "max_steps": 2})
    check_clean_end(run, "GB")
    assert len(run.frames) == 2 * 4 * 2
    assert all(
        f["status"] == f"NitroGen: playing: step {k // 8 + 1}, 4 actions x 2 frames, server 23 ms"
        for k, f in enumerate(run.frames)
    )
    assert all(f["set"] == {**neutral("GB"), "A": True} for f in run.frames)


def test_no_server_timing_no_server_time(harness, fake):
    server = fake("reply", canned_reply(server_timing="not an object"))
    run = harness.run("GB", {"port": server.port, "max_steps": 1})
    check_clean_end(run, "GB")
    assert run.frames[0]["status"] == "NitroGen: playing: step 1, 4 actions x 2 frames"


def test_default_resize_mode_is_stretch(harness, fake):
    server = fake("reply", canned_reply())
    run = harness.run("GB", {"port": server.port, "max_steps": 1})
    check_clean_end(run, "GB")
    assert server.headers[0]["resize_mode"] == "stretch" and server.headers[0]["type"] == "predict"


def test_unknown_config_key_is_named(harness):
    run = harness.run("GB", {"port": 9, "resize": "pad"})
    assert run.returncode == 1
    assert 'unknown config key "resize"' in run.end["error"] and "resize_mode" in run.end["error"]


def test_game_boy_link_plays_player_one_only(harness, tiny_server, golden_frames):
    run = harness.run("GBL", {"port": tiny_server.port, "max_steps": 2, **GOLDEN}, frames=golden_frames)
    check_clean_end(run, "GBL")
    assert all(set(f["set"]) == set(PAD_SPEC["GBL"]) for f in run.frames), "no P2 button is touched"
