"""Checks shared by the real-emulator tests: the pad reached the ROM on every frame, each frame's pad is
the server's action for it, and every frame the server received is the ROM's screen of that moment."""

from __future__ import annotations

import math

from luaharness import expected_pad
from mgba_host import HostRun, pad_mask, read_rom_screen
from relay import Relay


def check_rom_read_every_pad(run: HostRun, first: int = 2) -> None:
    """Each frame's ROM read (peek[0]) is what the script set for that frame (keys), and the ROM read
    once a frame (its counter steps by one). The first frames are the ROM's own start-up."""
    frames = run.frames
    assert len(frames) > first
    for prev, cur in zip(frames[first - 1 :], frames[first:]):
        assert cur["peek"][0] == cur["keys"], (
            f"frame {cur['frame']}: the ROM read {cur['peek'][0]:#04x}, the script set {cur['keys']:#04x}"
        )
        assert cur["peek"][1] == (prev["peek"][1] + 1) % 256, f"frame {cur['frame']}: not one read a frame"


def chunk_masks(reply: dict, allow_menu: bool = False) -> list[tuple[int, int]]:
    """(mask, bits that may go either way) for every frame of a reply's chunk, Game Boy pad."""
    pred, repeat = reply["pred"], int(reply["repeat"])
    out = []
    for b, jl, jr in zip(pred["buttons"], pred["j_left"], pred["j_right"], strict=False):
        pad, unsure = expected_pad("GB", b, jl, jr, allow_menu)
        out += [(pad_mask(pad), pad_mask(dict.fromkeys(unsure, True)))] * repeat
    return out


def check_pads_are_the_servers_actions(run: HostRun, relay: Relay, start: int = 1) -> list[int]:
    """Frames from `start` carry the replies' actions in order, nothing between chunks (the BizHawk
    script waits paused). Returns the frame at whose end each request's screenshot was taken."""
    shots, k = [], start
    for reply in relay.replies:
        assert reply["status"] == "ok", reply
        shots.append(k - 1)
        for mask, unsure in chunk_masks(reply):
            got = run.frames[k]["keys"]
            assert got & ~unsure == mask & ~unsure, f"frame {k}: pad {got:#04x}, the server said {mask:#04x}"
            k += 1
    return shots


def check_server_saw_the_rom(run: HostRun, relay: Relay, shots: list[int], skip: int = 1) -> None:
    """Each request's frame shows the pad byte and read count the ROM had when it was taken."""
    assert len(relay.requests) == len(shots)
    for (header, png), k in list(zip(relay.requests, shots, strict=True))[skip:]:
        assert header["type"] == "predict" and header["resize_mode"] == "stretch"
        assert png[:8] == b"\x89PNG\r\n\x1a\n", "the request carried a PNG"
        assert read_rom_screen(png) == tuple(run.frames[k]["peek"]), f"the frame sent at frame {k}"


def playing_status(step: int, reply: dict) -> str:
    """The status line for a step; with the server's own time when the reply carries server_timing
    (this server may or may not send it yet: either way the line must match the reply)."""
    n, frames = len(reply["pred"]["buttons"]), int(reply["repeat"])
    text = f"NitroGen: playing: step {step}, {n} actions x {frames} frames"
    timing = reply.get("server_timing")
    if isinstance(timing, dict) and isinstance(timing.get("total_ms"), (int, float)):
        text += f", server {math.floor(timing['total_ms'] + 0.5)} ms"
    return text
