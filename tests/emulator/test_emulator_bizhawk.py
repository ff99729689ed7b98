"""The unmodified BizHawk script in a real emulator: headless mGBA 0.10 (through bizhawk_shim.lua) plays
the project's Game Boy test ROM against a real server (demo model and golden tiny-a), 50 predicts."""

from __future__ import annotations

from emulator_checks import (
    check_pads_are_the_servers_actions,
    check_rom_read_every_pad,
    check_server_saw_the_rom,
    playing_status,
)
from mgba_host import BIZHAWK_SCRIPT, SHIM

STEPS = 50


def run_bizhawk(host, port: int, **config):
    settings = {"SHIM_SCRIPT": str(BIZHAWK_SCRIPT), "NITROGEN_CONFIG": {"port": port, **config}}
    if "stop_at" in config:
        settings["SHIM_STOP_AT_FRAME"] = config.pop("stop_at")
        settings["NITROGEN_CONFIG"] = {"port": port, **config}
    return host.run([SHIM], settings)


def test_bizhawk_script_plays_the_rom(host, server, relay):
    run = run_bizhawk(host, relay.port, max_steps=STEPS, seed_base=7)
    assert run.returncode == 0 and run.end["end"] == "exit", (run.stderr, run.errors(), run.logs[-5:])
    assert not run.errors(), run.errors()
    assert f"[nitrogen] stopped after {STEPS} answered requests" in " ".join(run.logs)
    assert "shim: script returned" in run.logs
    assert len(relay.requests) == len(relay.replies) == STEPS
    check_rom_read_every_pad(run)
    shots = check_pads_are_the_servers_actions(run, relay)
    played = 1 + sum(len(r["pred"]["buttons"]) * int(r["repeat"]) for r in relay.replies)
    assert [f["keys"] for f in run.frames[played:]] == [0] * (len(run.frames) - played), (
        "nothing is pressed once the script has stopped"
    )
    check_server_saw_the_rom(run, relay, shots)
    statuses = [line.removeprefix("status: ") for line in run.logs if "playing: step" in line]
    assert statuses == [playing_status(i + 1, r) for i, r in enumerate(relay.replies)]
    assert any(f["keys"] for f in run.frames), "the model pressed something"


def test_bizhawk_script_stopped_mid_chunk_releases_the_pad(host, server, relay):
    run = run_bizhawk(host, relay.port, stop_at=40)
    assert run.returncode == 0 and run.end["end"] == "exit", (run.stderr, run.errors())
    assert "shim: script stopped" in run.logs
    assert run.frames[-1]["keys"] == 0 and run.frames[-1]["frame"] >= 39
    check_rom_read_every_pad(run)
