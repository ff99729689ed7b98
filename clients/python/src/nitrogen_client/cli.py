"""``nitrogen-play``: play a Windows game with the NitroGen policy through a virtual pad, or watch a
gameplay video (``--video``, any OS) and record what the model would press."""

from __future__ import annotations

import argparse
import logging
import time

from . import connect
from .player import Player, PlayerOptions
from .wire import TCP_PORT, ZMQ_PORT

log = logging.getLogger("nitrogen_play")


def _monitor(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected 'auto' or an output number >= 0, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nitrogen-play",
        description="Capture a game window, get actions from nitrogen-server, play them on a virtual pad.",
    )
    p.add_argument(
        "--process", help="the game's executable name, e.g. celeste.exe (case-insensitive); not with --video"
    )
    p.add_argument(
        "--video",
        metavar="FILE|DIR",
        help="play a video file (anything PyAV reads) or a folder of images instead of a game window: "
        "the frame at pad time t is the video's frame at t; the run ends with the video",
    )
    p.add_argument(
        "--video-fps", type=float, default=60.0, help="frames per second of a --video folder (default: 60)"
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
        "--pad",
        "--controller",
        dest="pad",
        choices=("xbox", "ps4", "none"),
        default="xbox",
        help="virtual pad type; none: press nothing (with --video, runs on any OS) (default: xbox)",
    )
    p.add_argument("--fps", type=float, default=60.0, help="pad frames per second (default: 60)")
    p.add_argument(
        "--out",
        default="out",
        metavar="DIR",
        help="write each run as the original player does: DIR/<checkpoint>/NNNN_DEBUG.mp4, NNNN_CLEAN.mp4, "
        "NNNN_ACTIONS.json, plus NNNN_PLAYER.jsonl and NNNN_INPUTS/ (default: out)",
    )
    p.add_argument("--no-record", action="store_true", help="write no files (the original's --no-record)")
    p.add_argument("--record", metavar="DIR", help=argparse.SUPPRESS)  # replaced by --out: see main()
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a reply (default: 30)")
    p.add_argument(
        "--monitor",
        type=_monitor,
        default=None,
        metavar="auto|N",
        help="dxcam output to capture; auto: the one the game window is on, following it (default: auto)",
    )
    p.add_argument(
        "--pause",
        choices=("none", "speedhack"),
        default="none",
        help="none: the game runs in real time and actions already late on arrival are skipped; speedhack: "
        "freeze the game while the model thinks, as the original did (injects xspeedhack) (default: none)",
    )
    p.add_argument(
        "--game-arch", choices=("auto", "x86", "x64"), default="auto", help="the game's architecture for "
        "--pause speedhack (default: auto, from the process)"
    )
    p.add_argument(
        "--no-skip-stale", action="store_true", help="with --pause none, play every action, late or not"
    )
    p.add_argument(
        "--start-presses",
        default="auto",
        metavar="auto|none|B1,B2*N,...",
        help="buttons pressed once before the first frame, e.g. SOUTH,EAST*5; auto: the original's presses "
        "for isaac-ng.exe and Cuphead.exe, none otherwise (default: auto)",
    )
    p.add_argument("--no-wake-up", action="store_true", help="skip the original's L3 press before playing")
    p.add_argument(
        "--play-unfocused",
        action="store_true",
        help="keep playing while the game is not the active window (default: wait until it is)",
    )
    p.add_argument("--seed", type=int, help="seed prediction i with SEED+i (reproducible runs)")
    p.add_argument(
        "--countdown", type=float, default=3.0, help="seconds to focus the game before play starts"
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 after Ctrl+C, which is how a run normally ends)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.record is not None:
        parser.error(
            f"--record was replaced by --out (every run is recorded, as the original player does): "
            f"use --out {args.record} for {args.record}/<checkpoint>/NNNN_DEBUG.mp4, NNNN_CLEAN.mp4, "
            "NNNN_ACTIONS.json, NNNN_PLAYER.jsonl (the old actions.jsonl) and NNNN_INPUTS/ (the old frames/)"
        )
    if (args.process is None) == (args.video is None):
        parser.error("give --process (a game window) or --video (a video file or folder), not both")
    if args.video is not None and args.pause != "none":
        parser.error("--pause speedhack freezes a game process; a --video already waits for the pad")
    from .startup import presses_for

    try:
        presses = presses_for(args.process, args.start_presses) if args.process else ()
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    from .gamepad import NullPad, VGamepadPad
    from .recording import RunRecorder

    window = None
    if args.process is not None:
        # Windows-only parts load here, lazily: the package imports (and --help works) anywhere.
        from .windows import WindowNotFoundError, find_window

        try:
            window = find_window(args.process)
        except (WindowNotFoundError, OSError) as exc:
            log.error("%s", exc)
            return 2

    client = connect(args.host, args.port, args.protocol, timeout_s=args.timeout)
    capture = pad = recorder = pause = None
    try:
        if window is not None:
            from .capture import DxcamCapture
            from .pause import make_pause

            capture = DxcamCapture(
                window.hwnd, fps=args.fps, output_idx=args.monitor, require_foreground=not args.play_unfocused
            )
            arch = None if args.game_arch == "auto" else args.game_arch
            pause = make_pause(args.pause, window.pid, arch)
        else:
            from .video_capture import VideoCapture

            capture = VideoCapture(args.video, folder_fps=args.video_fps)
        pad = NullPad() if args.pad == "none" else VGamepadPad(args.pad)
        recorder = None if args.no_record else RunRecorder(args.out, allow_menu=args.allow_menu)
        player = Player(
            client,
            capture,
            pad,
            PlayerOptions(
                fps=args.fps,
                allow_menu=args.allow_menu,
                seed=args.seed,
                skip_stale=window is not None and not args.no_skip_stale,  # a video waits for the pad
                start_presses=presses,
                wake_up=window is not None and not args.no_wake_up,
            ),
            recorder=recorder,
            pause=pause,
        )
        if window is None:  # the video advances with the pad's clock, not the wall clock
            capture.clock = lambda: player.stats.pad_frames / args.fps
        elif args.countdown > 0:
            log.info("starting in %g s: focus the game window (Ctrl+C stops)", args.countdown)
            time.sleep(args.countdown)
        player.run()
    except KeyboardInterrupt:
        log.info("stopped by Ctrl+C")
    except (RuntimeError, OSError, ValueError) as exc:  # no backend, window gone, bad --video, server down
        log.error("%s", exc)
        return 1
    finally:
        for part in (pad, pause, capture, client, recorder):
            if part is not None:
                try:
                    part.close()
                except Exception:  # keep closing the others: the pad release matters most
                    log.exception("closing %s failed", type(part).__name__)
    return 0
