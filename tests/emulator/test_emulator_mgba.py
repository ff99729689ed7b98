"""clients/lua/nitrogen_mgba.lua, unmodified, in headless mGBA 0.10 on the Game Boy test ROM against a real
server (demo model and golden tiny-a): pause-free (the game runs on with nothing pressed while a reply is
on its way), every frame's pad reaches the ROM, every frame sent is the ROM's screen."""

from __future__ import annotations

import re

from emulator_checks import check_rom_read_every_pad, chunk_masks, playing_status
from mgba_host import HERE, MGBA_SCRIPT, read_rom_screen

STEPS = 50
WATCH = HERE / "mgba_watch.lua"
PLAYING = re.compile(r"NitroGen: playing: step (\d+), (\d+) actions x (\d+) frames")


FPS = 600  # ten times a real Game Boy: a reply on its way spans a few frames, not thousands


def run_mgba(host, tmp_path, port: int, frames: int = 100000, **config):
    config = {"port": port, "frame_path": str(tmp_path / "shot.png"), **config}
    settings = {"HOST_FPS": FPS, "NITROGEN_CONFIG": config}
    return host.run([WATCH, MGBA_SCRIPT], settings, frames=frames)


def test_mgba_client_plays_the_rom(host, relay, tmp_path):
    run = run_mgba(host, tmp_path, relay.port, max_steps=STEPS, seed_base=7)
    assert run.returncode == 0 and run.end["end"] == "exit", (run.stderr, run.errors(), run.logs[-5:])
    assert not run.errors(), run.errors()
    assert f"[nitrogen] stopped after {STEPS} answered requests" in run.logs
    assert len(relay.requests) == len(relay.replies) == STEPS
    check_rom_read_every_pad(run)

    steps = [(r["frame"], PLAYING.match(r["text"])) for r in run.buffers if PLAYING.match(r["text"])]
    assert [int(m.group(1)) for _, m in steps] == list(range(1, STEPS + 1)), "one status line per step"
    assert [m.string for _, m in steps] == [playing_status(i + 1, r) for i, r in enumerate(relay.replies)]
    frames = run.frames
    shot = None  # the frame at whose end request i's screenshot was taken (unknown for the first)
    for i, ((arrived, _), reply) in enumerate(zip(steps, relay.replies, strict=True)):
        header, png = relay.requests[i]
        assert header["resize_mode"] == "stretch"
        if shot is not None:
            assert read_rom_screen(png) == tuple(frames[shot]["peek"]), f"request {i}: the frame it was taken"
            waiting = frames[shot + 1 : arrived + 1]
            assert waiting and all(f["keys"] == 0 for f in waiting), "nothing pressed while waiting"
        masks = chunk_masks(reply)
        for k, (mask, unsure) in enumerate(masks, start=arrived + 1):
            got = frames[k]["keys"]
            assert got & ~unsure == mask & ~unsure, f"frame {k}: pad {got:#04x}, the server said {mask:#04x}"
        shot = arrived + len(masks)
    assert frames[-1]["keys"] == 0, "the pad is released when the script stops"
    assert sum(1 for f in frames if f["keys"] == 0) > STEPS, "the game ran on while replies were on their way"
