"""One worker process: its own client (so its own server session) and one env at a time, playing the
episodes it takes from the shared queue and reporting each to the parent as it finishes.

Workers ignore SIGINT (they inherit that from the parent): Ctrl+C reaches the parent, which sets
``stop``; a worker then abandons its current episode, removes its partial files and exits.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from .. import connect
from ..base import PolicyClient
from ..tcp_client import TcpClient
from .backend import Backend
from .config import EvalConfig
from .episode import EpisodeResult, Pacing, Stopped, episode_paths, run_episode
from .registry import backend_for
from .video import EpisodeVideo

log = logging.getLogger(__name__)


def make_client(cfg: EvalConfig) -> PolicyClient:
    """A client for the configured server; on TCP frames go raw (no PNG cost on a local link)."""
    client = connect(cfg.host, cfg.port, cfg.protocol, timeout_s=cfg.timeout_s)
    if isinstance(client, TcpClient):
        client.encoding = "raw"
    return client


class _Worker:
    def __init__(self, wid: int, cfg: EvalConfig, events: Any, stop: Any) -> None:
        self.wid, self.cfg, self.events, self.stop = wid, cfg, events, stop
        self.client = make_client(cfg)
        repeat = int(self.client.info()["action_downsample_ratio"])
        self.pacing = Pacing(cfg.frames_per_action or repeat, cfg.actions_per_predict, cfg.max_steps)
        self.backend: Backend | None = None
        self.env: Any = None

    def use_env(self, env_id: str) -> Backend:
        """The env for ``env_id``, made once and kept while the jobs stay on it (one at a time: stable-retro
        allows one emulator per process)."""
        if self.backend is None or self.backend.env_id != env_id:
            self.close_env()
            backend = backend_for(env_id, allow_menu=self.cfg.allow_menu)
            self.env, self.backend = backend.make(), backend
            self.events.put(("env", env_id, {"backend": backend.name, "actions": backend.labels(),
                                             "fps": backend.fps}))
        return self.backend

    def close_env(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env = self.backend = None

    def play(self, job: dict[str, Any]) -> None:
        """One episode, reported when it finishes; raises Stopped when the run stops first."""
        backend = self.use_env(job["env_id"])
        log_path, video_path = episode_paths(self.cfg.out, job["env_id"], job["episode"])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        parts = [log_path.with_suffix(".partial.jsonl"), video_path.with_suffix(".partial.mp4")]
        result = EpisodeResult(**job, worker=self.wid, log=str(log_path.relative_to(self.cfg.out)))
        video = EpisodeVideo(parts[1], backend.fps, self.cfg.video_height) if self.cfg.video else None
        try:
            with parts[0].open("w", encoding="utf-8") as log_file:
                run_episode(self.env, backend, self.client, result, self.pacing, log_file, video,
                            should_stop=self.stop.is_set, on_steps=lambda n: self.events.put(("steps", n)))
            if video is not None:
                video.close()
                parts[1].replace(video_path)
                result.video = str(video_path.relative_to(self.cfg.out))
            parts[0].replace(log_path)
        except BaseException:
            if video is not None:
                video.close()
            for part in parts:
                part.unlink(missing_ok=True)
            raise
        self.events.put(("episode", result.row()))

    def close(self) -> None:
        try:
            self.close_env()
        finally:
            self.client.close()


def worker_main(wid: int, cfg_json: str, jobs: Any, events: Any, stop: Any, log_level: str) -> None:
    """Process entry point: play queued episodes until the queue's end marker or ``stop``."""
    logging.basicConfig(level=log_level.upper(), format=f"%(levelname)s worker {wid} %(name)s: %(message)s")
    worker = None
    try:
        worker = _Worker(wid, EvalConfig.model_validate_json(cfg_json), events, stop)
        while not stop.is_set():
            job = jobs.get()
            if job is None:
                break
            worker.play(job)
    except Stopped as exc:
        log.info("%s", exc)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the run
        events.put(("error", wid, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        if worker is not None:
            worker.close()
        events.put(("exit", wid))
