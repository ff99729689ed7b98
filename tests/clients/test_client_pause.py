"""``--pause speedhack``: the game frozen while the model thinks, as the original player did.

xspeedhack injects a DLL into a Windows game; here a stand-in module with its API (``Client(process_id,
arch)``, ``set_speed``) records what it is told on the fake clock. The server is real (tiny-a).
"""

from __future__ import annotations

import sys
import types

import pytest
from client_testkit import FakeClock
from nitrogen_client import ModelClient
from nitrogen_client.cli import main
from nitrogen_client.gamepad import pad_states
from nitrogen_client.pause import RealTime, SpeedhackPause, exe_arch, make_pause, pe_arch
from nitrogen_client.player import Player, PlayerOptions
from test_client_player import FrameSource, RecordingPad, ReplySpy


class Events:
    """One timeline for the pad, the game's speed and the predicts."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.log: list[tuple] = []

    def add(self, *event) -> None:
        self.log.append((self.clock.t, *event))


@pytest.fixture
def speedhack(monkeypatch):
    """A stand-in ``xspeedhack`` module; ``attached`` lists the clients made, ``events`` gets speeds."""
    mod = types.ModuleType("xspeedhack")
    mod.attached = []
    mod.events = None

    class Client:
        def __init__(self, process_name=None, process_id=None, arch="x64"):
            mod.attached.append((process_id, arch))

        def set_speed(self, value: float) -> None:
            mod.events.add("speed", value)

    mod.Client = Client
    monkeypatch.setitem(sys.modules, "xspeedhack", mod)
    return mod


class TimedPad(RecordingPad):
    def __init__(self, events: Events) -> None:
        super().__init__()
        self.events = events

    def apply(self, state) -> None:
        super().apply(state)
        self.events.add("apply", state)


class TimedReplies(ReplySpy):
    def __init__(self, inner, events: Events, round_trip_s: float) -> None:
        super().__init__(inner)
        self.events = events
        self.round_trip_s = round_trip_s

    def predict(self, image, seed=None):
        self.events.add("predict")
        pred = super().predict(image, seed=seed)
        self.events.clock.t += self.round_trip_s
        return pred


def test_speedhack_freezes_the_game_while_the_model_thinks(server, tiny_a, speedhack):
    """Each pad frame is: apply, resume, hold 1/fps, freeze; every capture and predict sees a frozen
    game, no action is skipped however long the predict takes, and the game runs again at the end."""
    clock = FakeClock(tick=0.015625)  # Windows' coarse timer: the hold is still 1/fps
    events = speedhack.events = Events(clock)
    pause = make_pause("speedhack", pid=4242, arch="x86")
    assert speedhack.attached == [(4242, "x86")] and pause.freezes
    frames = [tiny_a[f"image_{i}"] for i in range(2)]
    spy = TimedReplies(ModelClient("127.0.0.1", server.zmq_port), events, round_trip_s=0.5)
    pad = TimedPad(events)
    options = PlayerOptions(fps=60.0, seed=100, skip_stale=True)  # skipping applies to real time only
    player = Player(spy, FrameSource(frames), pad, options, pause=pause, clock=clock.now, sleep=clock.sleep)
    with spy:
        stats = player.run(max_predictions=2)

    log = events.log
    speeds = [(t, e[1]) for t, *e in log if e[0] == "speed"]
    assert speeds[0][1] == 0.0 and speeds[-1][1] == 1.0  # frozen before the first frame, running after
    speed = None
    applies = []
    for i, (t, kind, *rest) in enumerate(log):
        if kind == "speed":
            speed = rest[0]
        elif kind == "predict":
            assert speed == 0.0, f"predict at event {i} with the game running"
        else:
            applies.append(rest[0])
            assert speed == 0.0 and log[i + 1][1:] == ("speed", 1.0), "resume right after each apply"
            resumed, frozen = log[i + 1][0], log[i + 2]
            assert frozen[1:] == ("speed", 0.0)
            assert frozen[0] - resumed == pytest.approx(1 / 60, abs=1e-4)  # the game ran one frame
    assert applies == [s for pred in spy.replies for s in pad_states(pred)]
    assert stats.stale_skipped == 0 and stats.pad_frames == len(applies)


def test_the_game_runs_again_when_the_player_stops_early(server, tiny_a, speedhack):
    clock = FakeClock()
    speedhack.events = Events(clock)
    pad = RecordingPad(interrupt_at=3)  # Ctrl+C during the first chunk
    with ModelClient("127.0.0.1", server.zmq_port) as client:
        player = Player(client, FrameSource([tiny_a["image_0"]]), pad, PlayerOptions(),
                        pause=SpeedhackPause.attach(7, "x64"), clock=clock.now, sleep=clock.sleep)
        with pytest.raises(KeyboardInterrupt):
            player.run()
    assert speedhack.events.log[-1][1:] == ("speed", 1.0) and pad.calls[-1] == ("reset",)


def pe_header(machine: int, offset: int = 0x80) -> bytes:
    """The start of a Windows executable: DOS header pointing at the PE header with its machine type."""
    head = bytearray(offset + 24)
    head[:2] = b"MZ"
    head[0x3C:0x40] = offset.to_bytes(4, "little")
    head[offset : offset + 4] = b"PE\0\0"
    head[offset + 4 : offset + 6] = machine.to_bytes(2, "little")
    return bytes(head)


def test_the_game_architecture_from_its_exe(tmp_path):
    assert pe_arch(pe_header(0x14C)) == "x86" and pe_arch(pe_header(0x8664, offset=0xF8)) == "x64"
    assert pe_arch(pe_header(0xAA64)) is None  # ARM64: xspeedhack has no DLL for it
    assert pe_arch(b"#!/bin/sh\n" + bytes(100)) is None and pe_arch(b"MZ") is None
    exe = tmp_path / "game.exe"
    exe.write_bytes(pe_header(0x14C) + bytes(5000))
    assert exe_arch(exe) == "x86"


def test_pause_choices():
    assert isinstance(make_pause("none"), RealTime) and not make_pause("none").freezes
    with pytest.raises(ValueError, match="needs a game process"):
        make_pause("speedhack")
    with pytest.raises(ValueError, match="--pause must be one of"):
        make_pause("sleep")


def test_speedhack_is_refused_for_a_video(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--video", "clip.mp4", "--pause", "speedhack"])
    assert exit_info.value.code == 2 and "--pause speedhack freezes a game process" in capsys.readouterr().err
