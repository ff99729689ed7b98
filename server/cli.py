"""`nitrogen-server` command: serve (default) or `healthcheck`.

Every ServerSettings field is a `--flag` (generated, so the CLI, the NITROGEN_* variables and the docs
cannot drift apart); flags given on the command line override the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from .config import ServerSettings

log = logging.getLogger("nitrogen_server")
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _arg_type(annotation: Any) -> Any:
    args = typing.get_args(annotation) or (annotation,)
    for candidate in (int, float):
        if candidate in args:
            return candidate
    return str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nitrogen-server",
        description="Serve the NitroGen policy on a ZeroMQ+pickle port and a newline-JSON TCP port. "
        "Every option can also be set as an environment variable NITROGEN_<OPTION> "
        "(e.g. NITROGEN_TCP_PORT=6000). Run `nitrogen-server healthcheck -h` for the health check.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("checkpoint_pos", nargs="?", metavar="CHECKPOINT",
                        help="checkpoint path or 'demo' (same as --checkpoint)")
    for name, field in ServerSettings.model_fields.items():
        default = "" if field.default is None else f"default: {field.default}; "
        help_text = f"{field.description} ({default}env NITROGEN_{name.upper()})"
        if name == "old_layout":
            parser.add_argument(_flag(name), action="store_const", const=True, help=help_text)
        elif field.annotation is bool:  # fast-path switches, on by default
            parser.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_const", const=False,
                                help=f"turn off: {field.description} (env NITROGEN_{name.upper()}=0)")
        elif name == "log_level":
            parser.add_argument(_flag(name), choices=typing.get_args(field.annotation), type=str.lower,
                                help=help_text)
        else:
            parser.add_argument(_flag(name), type=_arg_type(field.annotation), metavar=name.upper(),
                                help=help_text)
    return parser


def settings_from_args(argv: Sequence[str]) -> ServerSettings:
    """Parse the serve command line into settings (exits 2 with a message on bad values)."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    positional = given.pop("checkpoint_pos", None)
    if positional is not None:
        if "checkpoint" in given and given["checkpoint"] != positional:
            parser.error("give the checkpoint once: as CHECKPOINT or as --checkpoint, not both")
        given["checkpoint"] = positional
    try:
        return ServerSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        parser.error(f"invalid setting (command line or NITROGEN_* variable): {problems}")
        raise  # unreachable: parser.error exits


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)


async def _serve(settings: ServerSettings, engine: Any) -> None:
    from .app import NitrogenServer

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            raise SystemExit(1)
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl+C still raises KeyboardInterrupt
            pass
    server = NitrogenServer(settings, engine)
    await server.serve(stop)


def _exit_while_loading(signum: int, frame: Any) -> None:
    log.info("received %s while loading: exiting", signal.Signals(signum).name)
    raise SystemExit(0)


def serve(settings: ServerSettings) -> int:
    """Load the model, serve until SIGTERM/SIGINT, return the exit code."""
    from .app import load_engine

    # Until the event loop installs its handlers, SIGTERM must still stop us: as a container's PID 1
    # the kernel ignores signals without a handler, so `docker stop` during a download would hang.
    signal.signal(signal.SIGTERM, _exit_while_loading)
    log.info("loading checkpoint %s (device: %s)", settings.checkpoint, settings.device or "auto")
    try:
        engine = load_engine(settings)
    except Exception as exc:  # noqa: BLE001 - CheckpointError, FileNotFoundError, bad device, ...
        log.error("could not load the model: %s: %s", type(exc).__name__, exc)
        return 2
    try:
        asyncio.run(_serve(settings, engine))
    except OSError as exc:  # e.g. port already in use
        log.error("could not serve: %s", exc)
        engine.close()
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def healthcheck(argv: Sequence[str]) -> int:
    from .healthcheck import check_tcp, check_zmq

    env = ServerSettings.model_construct()
    try:
        env = ServerSettings()
    except ValidationError:
        pass
    parser = argparse.ArgumentParser(prog="nitrogen-server healthcheck",
                                     description="Exit 0 only if the running server answers an info request.")
    default_host = "127.0.0.1" if env.host in ("0.0.0.0", "", "*", "::") else env.host
    parser.add_argument("--host", default=default_host, help="server address (default: %(default)s)")
    parser.add_argument("--zmq-port", type=int, default=env.zmq_port, help="default: %(default)s")
    parser.add_argument("--tcp-port", type=int, default=env.tcp_port, help="default: %(default)s")
    parser.add_argument("--only", choices=("zmq", "tcp"), help="check one port only (default: both)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per port (default: %(default)s)")
    args = parser.parse_args(argv)
    problems = []
    if args.only in (None, "tcp"):
        problems.append(check_tcp(args.host, args.tcp_port, args.timeout))
    if args.only in (None, "zmq"):
        problems.append(check_zmq(args.host, args.zmq_port, args.timeout))
    problems = [p for p in problems if p]
    for problem in problems:
        print(f"unhealthy: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "healthcheck":
        return healthcheck(argv[1:])
    settings = settings_from_args(argv)
    setup_logging(settings.log_level)
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
