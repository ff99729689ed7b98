"""The BizHawk script as a cluster client: short games (one golden episode each) played in a loop through
the load balancer, and each played frame checked against the answer its (frame, seed) must get.

The script sends seed `seed_base + i` with the i-th predict of a connection and restarts i at 0 when it
reconnects, while the screenshot stub keeps counting (shot n is golden frame n, or frame 0 past the
last). An episode that no replica died under pairs shot n with seed 100 + n: golden call n. One that
reconnected mid-episode sends pairs the golden files do not hold; `Reference` answers those with the
library on the same checkpoint, after checking that it reproduces every golden call.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from clusterkit import check_golden
from luaharness import Harness, HarnessRun, expected_pad

SEED_BASE = 100
PLAYING = re.compile(r"NitroGen: playing: step (\d+),")
TRANSPORT_FAILURES = ("send failed", "receive failed", "server closed", "no reply")


class Reference:
    """What a (golden frame index, seed) predict must answer: the golden vectors for the golden pairs,
    the library on the golden checkpoint for the others (anchored: it must match every golden call)."""

    def __init__(self, checkpoint: Path, g: dict[str, np.ndarray]) -> None:
        from nitrogen import InferenceSession

        self.g = g
        self.n = int(g["n_steps"])
        self.session = InferenceSession.from_checkpoint(str(checkpoint), device="cpu")
        self._cache: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self._lock = threading.Lock()
        self.computed = 0  # chunks answered off the golden pairs, checked against the library
        for i in range(self.n):
            check_golden(self._compute(i, SEED_BASE + i), g, i)

    def _compute(self, i: int, seed: int) -> dict[str, np.ndarray]:
        pred = self.session.predict(self.g[f"image_{i}"], seed=seed)
        return {k: np.asarray(pred[k], np.float32) for k in ("j_left", "j_right", "buttons")}

    def __call__(self, i: int, seed: int) -> dict[str, np.ndarray]:
        if seed == SEED_BASE + i:
            return {k: self.g[f"{k}_{i}"] for k in ("j_left", "j_right", "buttons")}
        with self._lock:
            if (i, seed) not in self._cache:
                self._cache[(i, seed)] = self._compute(i, seed)
            self.computed += 1
            return self._cache[(i, seed)]


@dataclass
class Chunk:
    step: int  # the episode's answered request, 1-based
    shot: int  # the screenshot it sent, 0-based
    seed: int
    frames: list[dict] = field(default_factory=list)


@dataclass
class Episode:
    run: HarnessRun
    chunks: list[Chunk]
    failures: list[str]  # transport failures the script showed (a replica died under it)
    connects: int


def parse_episode(run: HarnessRun) -> Episode:
    """Split a run's records into played chunks, each with the shot and the seed it went out with."""
    last_shots, base, connects = 0, 0, 0
    chunks: dict[int, Chunk] = {}
    failures: list[str] = []
    for record in run.records:
        if "console" in record:
            line = record["console"]
            if "connected to" in line:
                base, connects = last_shots, connects + 1  # the script's seed counter restarts here
            elif any(f in line for f in TRANSPORT_FAILURES):
                failures.append(line)
        elif "set" in record:
            last_shots = record["shots"]
            m = PLAYING.match(record["status"] or "")
            if m:
                step = int(m.group(1))
                shot = record["shots"] - 1
                chunk = chunks.setdefault(step, Chunk(step, shot, SEED_BASE + shot - base))
                assert chunk.shot == shot, f"step {step} spans two screenshots: {chunk.shot}, {shot}"
                chunk.frames.append(record)
    return Episode(run, [chunks[k] for k in sorted(chunks)], failures, connects)


def check_episode(ep: Episode, system: str, reference: Reference, repeat: int, steps: int) -> int:
    """Every played frame's pad is what the reference answer says; returns the frames checked."""
    run = ep.run
    assert run.returncode == 0 and run.end.get("end") == "returned", (run.end, run.stderr[-2000:])
    assert [c.step for c in ep.chunks] == list(range(1, steps + 1)), [c.step for c in ep.chunks]
    errors = [r["status"] for r in run.frames if "server error" in (r["status"] or "")]
    assert not errors, f"the server refused a request: {errors[:3]}"
    checked = 0
    for chunk in ep.chunks:
        image = chunk.shot if chunk.shot < reference.n else 0  # the stub falls back to frame_0.png
        want = reference(image, chunk.seed)
        horizon = len(want["buttons"])
        assert len(chunk.frames) == horizon * repeat, (chunk.step, len(chunk.frames))
        for k, frame in enumerate(chunk.frames):
            a = k // repeat
            pad, unsure = expected_pad(system, want["buttons"][a], want["j_left"][a], want["j_right"][a])
            got = {n: v for n, v in frame["set"].items() if n not in unsure}
            assert got == {n: v for n, v in pad.items() if n not in unsure}, (
                f"{system} frame {frame['frame']}: shot {chunk.shot} seed {chunk.seed} action {a}")
            checked += 1
    return checked


FRAME_S = 1 / 60


class LuaPlayer:
    """One BizHawk 'emulator': plays golden episodes through `port` until told to stop."""

    def __init__(self, lua: str, folder: Path, system: str, port: int, frames: Path, steps: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.harness = Harness(lua, folder)
        self.system, self.frames, self.steps = system, frames, steps
        self.config: dict[str, Any] = {"port": port, "max_steps": steps, "seed_base": SEED_BASE,
                                       "resize_mode": "stretch", "reply_timeout": 10}  # retry: the defaults
        self.episodes: list[Episode] = []
        self.problems: list[str] = []
        self.answered = 0
        self.answered_at_kill: int | None = None

    def play(self, stop: threading.Event, max_episodes: int) -> None:
        try:
            for _ in range(max_episodes):
                if stop.is_set():
                    return
                # Frames at 60 fps, as in an emulator: the script's reconnect back-off (30 frames) is then
                # half a second, and a retry cannot land on a SIGKILLed replica's still-open listener.
                run = self.harness.run(self.system, self.config, frames=self.frames, timeout=90,
                                       frame_sleep=FRAME_S)
                episode = parse_episode(run)
                self.episodes.append(episode)
                self.answered += len(episode.chunks)
        except Exception as exc:  # noqa: BLE001 - reported by the test, with the player's name
            self.problems.append(f"{type(exc).__name__}: {exc}")
