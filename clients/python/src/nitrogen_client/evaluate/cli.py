"""``nitrogen-eval``: play Gymnasium games (Atari, stable-retro consoles, ViZDoom) against a running
nitrogen-server, N at once, and write what the model achieved.

Exit status: 0 all episodes played; 1 a worker failed (finished episodes are kept); 2 bad input (env id,
option, unreachable server); 130 stopped by Ctrl+C (finished episodes are kept).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from ..wire import TCP_PORT, ZMQ_PORT
from .backend import EnvIdError
from .config import EvalConfig
from .results import summarise
from .runner import ServerUnreachable, run_eval
from .tables import markdown_tables

log = logging.getLogger("nitrogen_eval")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nitrogen-eval",
        description="Play Gymnasium games (ALE, stable-retro, ViZDoom) with the policy a nitrogen-server "
        "serves; write returns, per-predict action logs and optional videos.",
    )
    p.add_argument("env_ids", nargs="*", metavar="ENV_ID",
                   help="e.g. ALE/Breakout-v5 Airstriker-Genesis-v0 VizdoomBasic-MultiBinary-v1")
    p.add_argument("--host", default="localhost", help="server host (default: localhost)")
    p.add_argument("--port", type=int, default=ZMQ_PORT, help=f"server port (default: {ZMQ_PORT})")
    p.add_argument("--protocol", choices=("auto", "zmq", "tcp"), default="auto",
                   help=f"auto: tcp on port {TCP_PORT}, zmq on any other")
    p.add_argument("--envs", type=int, default=1, help="environments played at once, each its own "
                   "process and server session (default: 1)")
    p.add_argument("--episodes", type=int, default=1, help="episodes per env id (default: 1)")
    p.add_argument("--max-steps", type=int, help="end an episode after this many env steps")
    p.add_argument("--seed", type=int, default=0, help="derives every env and predict seed (default: 0)")
    p.add_argument("--frames-per-action", type=int,
                   help="env steps each predicted action is held (default: the server's repeat)")
    p.add_argument("--actions-per-predict", type=int,
                   help="actions played from each predicted chunk (default: all of it)")
    p.add_argument("--out", type=Path, help="output folder (default: nitrogen-eval-<date>-<time>)")
    p.add_argument("--video", action="store_true", help="write an MP4 per episode with the action overlay")
    p.add_argument("--video-height", type=int, default=480, help="video height in pixels (default: 480)")
    p.add_argument("--allow-menu", action="store_true", help="let the model press START / BACK")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a reply (default: 30)")
    p.add_argument("--maps", action="store_true", help="print the pad -> game tables (Markdown) and exit")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.maps:
        sys.stdout.write(markdown_tables())
        return 0
    out = args.out or Path(time.strftime("nitrogen-eval-%Y%m%d-%H%M%S"))
    try:
        cfg = EvalConfig(
            env_ids=args.env_ids, host=args.host, port=args.port, protocol=args.protocol, envs=args.envs,
            episodes=args.episodes, max_steps=args.max_steps, seed=args.seed,
            frames_per_action=args.frames_per_action, actions_per_predict=args.actions_per_predict,
            out=out, video=args.video, video_height=args.video_height, allow_menu=args.allow_menu,
            timeout_s=args.timeout,
        )
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
                             for e in exc.errors())
        log.error("bad options: %s", problems.replace("--env-ids", "ENV_ID"))
        return 2
    try:
        outcome = run_eval(cfg, args.log_level)
    except (EnvIdError, ServerUnreachable) as exc:
        log.error("%s", exc)
        return 2
    for env_id, s in summarise(outcome.rows, cfg.env_ids).items():
        if s["episodes"]:
            log.info("%s: %d episodes, return mean %.3g (min %.3g, max %.3g), mean length %.0f", env_id,
                     s["episodes"], s["mean_return"], s["min_return"], s["max_return"], s["mean_length"])
    rate = outcome.steps / outcome.wall_s if outcome.wall_s else 0.0
    log.info("%d of %d episodes, %d env steps in %.1f s (%.1f steps/s); results in %s", len(outcome.rows),
             cfg.episodes * len(cfg.env_ids), outcome.steps, outcome.wall_s, rate, cfg.out / "results.json")
    if outcome.errors:
        return 1
    return 130 if outcome.interrupted else 0
