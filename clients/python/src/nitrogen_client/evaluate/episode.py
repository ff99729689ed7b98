"""One episode: reset the env and the server session, then predict -> play the chunk -> predict again.

Every predict leaves one JSON line: what the server sent (``j_left``, ``j_right``, ``buttons``), the seed
it was asked with, and the env actions played from it, so a run can be checked (and replayed) later.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from ..base import PolicyClient
from ..images import resize_square
from .backend import Backend
from .config import predict_seed
from .video import EpisodeVideo


@dataclass
class Pacing:
    """How the chunk is played: each action for ``frames_per_action`` env steps, ``actions`` of them."""

    frames_per_action: int
    actions_per_predict: int | None
    max_steps: int | None


@dataclass
class EpisodeResult:
    """One finished episode, one row of results.json and results.csv."""

    env_id: str
    episode: int
    env_seed: int
    predict_seed: int
    ret: float = 0.0
    length: int = 0
    predicts: int = 0
    end: str = ""  # "terminated", "truncated" (by the env) or "max_steps"
    wall_s: float = 0.0
    env_s: float = 0.0
    predict_s: float = 0.0
    server_infer_s: float = 0.0
    server_queue_s: float = 0.0
    video_s: float = 0.0
    worker: int = 0
    log: str = ""
    video: str = ""

    def row(self) -> dict[str, Any]:
        """The flat record written to the results files (``return`` spelled out)."""
        out = asdict(self)
        out["return"] = out.pop("ret")
        return {k: round(v, 4) if isinstance(v, float) and k != "return" else v for k, v in out.items()}


class Stopped(Exception):
    """The run was asked to stop (Ctrl+C) in the middle of this episode."""


def run_episode(
    env: Any,
    backend: Backend,
    client: PolicyClient,
    result: EpisodeResult,
    pacing: Pacing,
    log_file: IO[str],
    video: EpisodeVideo | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_steps: Callable[[int], None] = lambda n: None,
) -> EpisodeResult:
    """Play one episode into ``result``; raises Stopped if ``should_stop`` turns true before its end."""
    started = time.perf_counter()
    client.reset()
    obs, _ = env.reset(seed=result.env_seed)
    frame = backend.frame(obs)
    while not result.end:
        if should_stop():
            raise Stopped(f"{result.env_id} episode {result.episode} stopped at step {result.length}")
        seed = predict_seed(result.predict_seed, result.predicts)
        t0 = time.perf_counter()
        pred = client.predict(resize_square(frame), seed=seed)
        result.predict_s += time.perf_counter() - t0
        timing = client.last_timing or {}
        result.server_infer_s += timing.get("infer_ms", 0.0) / 1000
        result.server_queue_s += timing.get("queue_ms", 0.0) / 1000
        horizon = len(pred["buttons"])
        n_actions = min(pacing.actions_per_predict or horizon, horizon)
        step0, played, reward = result.length, [], 0.0
        for i in range(n_actions):
            action = backend.act(pred["j_left"][i], pred["j_right"][i], pred["buttons"][i])
            played.append(action.logged)
            for _ in range(pacing.frames_per_action):
                if video is not None:
                    t1 = time.perf_counter()
                    video.add(frame, pred, i, result.length, f"ep {result.episode} | {action.text}", timing)
                    result.video_s += time.perf_counter() - t1
                t1 = time.perf_counter()
                obs, r, terminated, truncated, _ = env.step(action.value)
                result.env_s += time.perf_counter() - t1
                frame = backend.frame(obs)
                reward += float(r)
                result.length += 1
                if terminated or truncated or result.length == pacing.max_steps:
                    result.end = "terminated" if terminated else "truncated" if truncated else "max_steps"
                    break
            if result.end:
                break
        result.ret += reward
        result.predicts += 1
        line = {"predict": result.predicts - 1, "step": step0, "seed": seed,
                "j_left": pred["j_left"].tolist(), "j_right": pred["j_right"].tolist(),
                "buttons": pred["buttons"].tolist(), "env_actions": played,
                "frames_per_action": pacing.frames_per_action, "reward": reward,
                "server_timing": client.last_timing}
        log_file.write(json.dumps(line) + "\n")
        on_steps(result.length - step0)
    result.wall_s = time.perf_counter() - started
    return result


def episode_paths(out: Path, env_id: str, episode: int) -> tuple[Path, Path]:
    """(actions log, video) of one episode: ``out/episodes/<env id, / as ->/ep0003.jsonl`` and ``.mp4``."""
    folder = out / "episodes" / env_id.replace("/", "-")
    return folder / f"ep{episode:04d}.jsonl", folder / f"ep{episode:04d}.mp4"
