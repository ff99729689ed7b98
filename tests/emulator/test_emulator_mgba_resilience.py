"""nitrogen_mgba.lua in headless mGBA when the server is missing, refuses, stalls, hangs up, or sends keys
a newer server adds; and its GBA pad against mGBA's own C.GBA_KEY constants."""

from __future__ import annotations

import json
import socket

from fakeserver import canned_reply
from luaharness import PAD_SPEC, expected_pad
from mgba_host import HERE, MGBA_SCRIPT, REPO, check_no_errors
from test_emulator_mgba import FPS, run_mgba


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def texts(run) -> list[str]:
    return [b["text"] for b in run.buffers]


def test_no_server_keeps_the_game_running(host, tmp_path):
    port = free_port()
    run = run_mgba(host, tmp_path, port, retry_min_frames=10, retry_max_frames=40, frames=300)
    assert run.end["end"] == "frames" and len(run.frames) == 300, (run.stderr, run.errors())
    assert all(f["keys"] == 0 for f in run.frames)
    assert any(
        f"NitroGen: server 127.0.0.1:{port} unreachable (connection refused), retrying in" in t
        for t in texts(run)
    ), texts(run)
    assert sum("unreachable" in line for line in run.logs) == 1, "retries are not logged one by one"
    check_no_errors(run)


def test_server_error_is_shown_and_the_game_goes_on(host, tmp_path, fake):
    server = fake("reply", {"status": "error", "message": "'resize_mode' is 'sideways'"})
    run = run_mgba(host, tmp_path, server.port, max_steps=3)
    assert run.end["end"] == "exit" and "[nitrogen] stopped after 3 answered requests" in run.logs
    assert "NitroGen: server error: 'resize_mode' is 'sideways'" in texts(run)
    assert all(f["keys"] == 0 for f in run.frames) and len(server.headers) == 3
    check_no_errors(run)


def test_server_timing_shown_and_unknown_keys_ignored(host, tmp_path, fake):
    timing = {"queue_ms": 1.2, "infer_ms": 21.5, "total_ms": 23.4}
    server = fake("reply", canned_reply(server_timing=timing, future_key={"nested": [1, None]}))
    run = run_mgba(host, tmp_path, server.port, max_steps=2)
    assert run.end["end"] == "exit", (run.stderr, run.errors())
    assert "NitroGen: playing: step 1, 4 actions x 2 frames, server 23 ms" in texts(run)
    assert sum(f["keys"] == 1 for f in run.frames) == 2 * 4 * 2, "A held for 4 actions x 2 frames, twice"
    assert server.headers[0]["resize_mode"] == "stretch"
    check_no_errors(run)


def test_no_server_timing_no_server_time(host, tmp_path, fake):
    server = fake("reply", canned_reply())
    run = run_mgba(host, tmp_path, server.port, max_steps=1)
    assert "NitroGen: playing: step 1, 4 actions x 2 frames" in texts(run)


def test_reply_timeout_then_reconnect(host, tmp_path, fake):
    server = fake("silent")
    run = run_mgba(host, tmp_path, server.port, reply_timeout=1, retry_min_frames=1, frames=3 * FPS)
    assert any(t.startswith("NitroGen: receive failed: no reply within 1 s") for t in texts(run)), texts(run)
    assert server.connections >= 2 and all(f["keys"] == 0 for f in run.frames)
    check_no_errors(run)


def test_server_hanging_up_then_reconnect(host, tmp_path, fake):
    server = fake("close")
    run = run_mgba(host, tmp_path, server.port, retry_min_frames=5, frames=200)
    assert any(t.startswith("NitroGen: receive failed: server closed the connection") for t in texts(run)), (
        texts(run)
    )
    assert server.connections >= 2
    check_no_errors(run)


def test_unknown_config_key_is_named(host, tmp_path):
    run = run_mgba(host, tmp_path, 9, resize="pad")
    assert run.end["end"] == "error" and 'unknown config key "resize"' in run.end["error"]


def test_gba_pad_uses_mgbas_key_constants(host):
    """The GBA map through mGBA's own C.GBA_KEY (library mode; the test ROM is a Game Boy one)."""
    actions = [[int(i == b) for i in range(21)] for b in range(21)]
    probe = HERE / "mgba_gba_probe.lua"
    run = host.run(
        [probe],
        {
            "NITROGEN_LIBRARY": True,
            "NITROGEN_CONFIG": {"console": "GBA"},
            "PROBE_SCRIPT": str(MGBA_SCRIPT),
            "PROBE_PATH": str(REPO / "clients" / "lua"),
            "PROBE_ACTIONS": json.dumps(actions),
        },
        frames=1,
    )
    got = json.loads(next(line for line in run.logs if line.startswith("[")))
    bits = {
        "A": 0,
        "B": 1,
        "Select": 2,
        "Start": 3,
        "Right": 4,
        "Left": 5,
        "Up": 6,
        "Down": 7,
        "R": 8,
        "L": 9,
    }
    for b, mask in zip(actions, got, strict=True):
        pad, _ = expected_pad("GBA", b, (0.0, 0.0), (0.0, 0.0))
        assert mask == sum(1 << bits[n] for n, on in pad.items() if on), (b, mask)
    assert set(PAD_SPEC["GBA"]) == set(bits)
    assert len({m for m in got if m}) >= 4, "L, R, A and B are distinct keys"
