"""``nitrogen-play``: play a Windows game with the NitroGen policy through a virtual pad."""

from __future__ import annotations

import argparse
import logging
import time

from . import connect
from .player import Player, PlayerOptions
from .wire import TCP_PORT, ZMQ_PORT

log = logging.getLogger("nitrogen_play")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nitrogen-play",
        description="Capture a game window, get actions from nitrogen-server, play them on a virtual pad.",
    )
    p.add_argument(
        "--process", required=True, help="the game's executable name, e.g. celeste.exe (case-insensitive)"
    )
    p.add_argument("--host", default="localhost", help="server host (default: localhost)")
    p.add_argument("--port", type=int, default=ZMQ_PORT, help=f"server port (default: {ZMQ_PORT})")
    p.add_argument(
        "--protocol",
        choices=("auto", "zmq", "tcp"),
        default="auto",
        help=f"wire protocol; auto: tcp (newline-JSON) on port {TCP_PORT}, zmq (pickle) on any other port",
    )
    p.add_argument("--allow-menu", action="store_true", help="let the model press START, BACK and GUIDE")
    p.add_argument(
        "--controller", choices=("xbox", "ps4"), default="xbox", help="virtual pad type (default: xbox)"
    )
    p.add_argument("--fps", type=float, default=60.0, help="pad frames per second (default: 60)")
    p.add_argument("--record", metavar="DIR", help="write actions (JSON lines) and frames (PNG) to DIR")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a reply (default: 30)")
    p.add_argument("--monitor", type=int, default=0, help="dxcam output index the game is on (default: 0)")
    p.add_argument("--seed", type=int, help="seed prediction i with SEED+i (reproducible runs)")
    p.add_argument(
        "--countdown", type=float, default=3.0, help="seconds to focus the game before play starts"
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 after Ctrl+C, which is how a run normally ends)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    # Windows-only parts load here, lazily: the package imports (and --help works) anywhere.
    from .windows import WindowNotFoundError, find_window

    try:
        window = find_window(args.process)
    except (WindowNotFoundError, OSError) as exc:
        log.error("%s", exc)
        return 2

    from .capture import DxcamCapture
    from .gamepad import VGamepadPad
    from .recorder import Recorder

    client = connect(args.host, args.port, args.protocol, timeout_s=args.timeout)
    capture = pad = recorder = None
    try:
        capture = DxcamCapture(window.hwnd, fps=args.fps, output_idx=args.monitor)
        pad = VGamepadPad(args.controller)
        recorder = Recorder(args.record) if args.record else None
        player = Player(
            client,
            capture,
            pad,
            PlayerOptions(fps=args.fps, allow_menu=args.allow_menu, seed=args.seed),
            recorder=recorder,
        )
        if args.countdown > 0:
            log.info("starting in %g s: focus the game window (Ctrl+C stops)", args.countdown)
            time.sleep(args.countdown)
        player.run()
    except KeyboardInterrupt:
        log.info("stopped by Ctrl+C")
    except (RuntimeError, OSError) as exc:  # backends missing, window closed, server errors after retries
        log.error("%s", exc)
        return 1
    finally:
        for part in (pad, capture, client, recorder):
            if part is not None:
                try:
                    part.close()
                except Exception:  # keep closing the others: the pad release matters most
                    log.exception("closing %s failed", type(part).__name__)
    return 0
