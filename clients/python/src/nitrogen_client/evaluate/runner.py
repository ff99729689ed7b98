"""The run: check every env id and the server first, then N worker processes (each its own server
session, so the server batches their predicts) share one queue of episodes; the parent shows progress
and rewrites the results after each finished episode.

Processes rather than threads: stable-retro allows one emulator per process, and emulators, PNG and
video encoding then use every core.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ClientError
from .config import EvalConfig, episode_seeds
from .registry import backend_for
from .results import write_results
from .worker import make_client, worker_main

log = logging.getLogger(__name__)


class ServerUnreachable(RuntimeError):
    """The server did not answer ``info`` before the run started."""


@dataclass
class Outcome:
    """What the run did: the finished episodes' rows, whether Ctrl+C ended it, worker errors."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)
    steps: int = 0
    wall_s: float = 0.0


def check_envs(cfg: EvalConfig) -> None:
    """Every env id has a backend that can make it here, or EnvIdError naming the first that does not."""
    for env_id in cfg.env_ids:
        backend_for(env_id, allow_menu=cfg.allow_menu).check()


def server_info(cfg: EvalConfig) -> dict[str, Any]:
    """The server's info, or ServerUnreachable saying where it was looked for."""
    client = make_client(cfg)
    try:
        return client.info()
    except ClientError as exc:
        raise ServerUnreachable(
            f"cannot reach nitrogen-server at {cfg.host}:{cfg.port} (protocol {cfg.protocol}): {exc}"
        ) from exc
    finally:
        client.close()


def jobs_of(cfg: EvalConfig) -> list[dict[str, Any]]:
    """Every episode to play, env by env (a worker keeps its env while its jobs stay on one id)."""
    jobs = []
    for env_id in cfg.env_ids:
        for episode in range(cfg.episodes):
            env_seed, first_predict = episode_seeds(cfg.seed, env_id, episode)
            jobs.append({"env_id": env_id, "episode": episode, "env_seed": env_seed,
                         "predict_seed": first_predict})
    return jobs


def _progress(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="episode", dynamic_ncols=True, disable=None)


class _Run:
    def __init__(self, cfg: EvalConfig, info: dict[str, Any], log_level: str) -> None:
        self.cfg, self.info, self.log_level = cfg, info, log_level
        self.jobs = jobs_of(cfg)
        self.outcome = Outcome()
        self.envs: dict[str, dict[str, Any]] = {}
        self.started = time.perf_counter()

    def write(self) -> None:
        o = self.outcome
        o.wall_s = time.perf_counter() - self.started
        run = {"wall_s": round(o.wall_s, 3), "steps": o.steps, "steps_per_s": round(o.steps / o.wall_s, 2)
               if o.wall_s > 0 else None, "episodes_planned": len(self.jobs),
               "episodes_finished": len(o.rows), "interrupted": o.interrupted, "errors": o.errors}
        meta = {"config": self.cfg.model_dump(mode="json"), "server": self.info, "run": run, "envs": self.envs}
        write_results(self.cfg.out, o.rows, self.cfg.env_ids, meta)

    def start_workers(self, ctx: Any, n: int) -> tuple[list[Any], Any, Any, Any]:
        """The worker processes and the queues and event they share (the caller keeps all of them
        referenced until the workers are done: a collected queue takes its semaphores with it)."""
        jobs, events, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        for job in self.jobs:
            jobs.put(job)
        for _ in range(n):
            jobs.put(None)
        cfg_json = self.cfg.model_dump_json()
        # Children inherit an ignored SIGINT across exec: Ctrl+C then reaches only this process.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            procs = [ctx.Process(target=worker_main, args=(i, cfg_json, jobs, events, stop, self.log_level),
                                 name=f"nitrogen-eval-{i}", daemon=True) for i in range(n)]
            for p in procs:
                p.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        return procs, jobs, events, stop

    def handle(self, event: tuple[Any, ...], bar: Any, running: set[int]) -> None:
        kind = event[0]
        if kind == "steps":
            self.outcome.steps += event[1]
            rate = self.outcome.steps / (time.perf_counter() - self.started)
            bar.set_postfix({"env steps": self.outcome.steps, "steps/s": f"{rate:.1f}"})
        elif kind == "episode":
            self.outcome.rows.append(event[1])
            self.write()
            bar.update(1)
        elif kind == "env":
            self.envs[event[1]] = event[2]
        elif kind == "error":
            self.outcome.errors.append(f"worker {event[1]}: {event[2]}")
            log.error("worker %d failed: %s", event[1], event[2])
            log.debug("%s", event[3])
        elif kind == "exit":
            running.discard(event[1])

    def run(self) -> Outcome:
        ctx = mp.get_context("spawn")
        n = min(self.cfg.envs, len(self.jobs))
        self.cfg.out.mkdir(parents=True, exist_ok=True)
        self.write()
        procs, _jobs, events, stop = self.start_workers(ctx, n)
        running = set(range(n))
        try:
            self._collect(procs, events, stop, running)
        finally:  # whatever ended the loop (a failed results write too): the workers stop cleanly first
            stop.set()
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.terminate()
        self.write()
        return self.outcome

    def _collect(self, procs: list, events: Any, stop: Any, running: set[int]) -> None:
        with _progress(len(self.jobs)) as bar:
            while running:
                try:
                    try:
                        self.handle(events.get(timeout=0.5), bar, running)
                    except queue.Empty:
                        for i in [i for i in running if not procs[i].is_alive()]:
                            running.discard(i)
                            self.outcome.errors.append(f"worker {i} died (exit code {procs[i].exitcode})")
                    if self.outcome.errors:
                        stop.set()
                except KeyboardInterrupt:
                    if self.outcome.interrupted:  # a second Ctrl+C: do not wait for the episodes in play
                        for p in procs:
                            p.terminate()
                        break
                    self.outcome.interrupted = True
                    stop.set()
                    log.warning("Ctrl+C: stopping; finished episodes are kept (Ctrl+C again to quit now)")


def run_eval(cfg: EvalConfig, log_level: str = "warning") -> Outcome:
    """Check the env ids and the server, then play every episode; raises EnvIdError or ServerUnreachable
    before anything starts."""
    check_envs(cfg)
    info = server_info(cfg)
    log.info("server: %s, horizon %s, repeat %s", info.get("ckpt_path"), info.get("action_horizon"),
             info.get("action_downsample_ratio"))
    return _Run(cfg, info, log_level).run()

