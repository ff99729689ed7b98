"""`nitrogen-server` command: serve (default), `healthcheck`, `selfcheck` or `render`.

The flags are pydantic-settings' own CLI over ServerSettings (kebab-case, `--no-...` for switches, the
NITROGEN_* variable beside each in `--help`), so the flags, the variables and the docs cannot drift
apart; a value given on the command line beats the variable. Nothing here imports torch: only
loading the model (`serve`) and `selfcheck` do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, CliPositionalArg, CliSettingsSource

from .config import ServerSettings
from .healthcheck import HealthcheckSettings
from .supervisor import EXIT_FAILED

log = logging.getLogger("nitrogen_server")
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
S = TypeVar("S", bound=BaseSettings)
# flags and variables that were renamed: a clear message instead of "unrecognized arguments"
RENAMED = {"--no-bf16": "--dtype float32", "--bf16": "--dtype bfloat16"}


class ServeCommand(ServerSettings):
    """
    Serve the NitroGen policy on a ZeroMQ+pickle port and a newline-JSON TCP port. Every option is also
    an environment variable NITROGEN_<OPTION> (e.g. NITROGEN_TCP_PORT=6000); the command line wins.
    Other commands: `nitrogen-server healthcheck --help` (is a running server answering?) and
    `nitrogen-server selfcheck --help` (does this machine compute what the model should?) and
    `nitrogen-server render --help` (a --record directory as a video).
    """

    checkpoint_arg: CliPositionalArg[str | None] = Field(
        None, alias="CHECKPOINT", description="checkpoint path or 'demo' (same as --checkpoint)")


def parse_command(command: type[BaseSettings], target: type[S], argv: Sequence[str],
                  prog: str | None = None) -> S:
    """argv parsed by `command`'s CLI into `target` settings (command line over NITROGEN_* variables).

    Exits 2 with usage and a message naming the flag (and its variable) on a bad value.
    """
    source = CliSettingsSource(command, cli_parse_args=False, cli_prog_name=prog)
    given = dict(source(args=list(argv))())
    positional = given.pop("CHECKPOINT", None)
    if positional is not None:
        if given.get("checkpoint", positional) != positional:
            source.root_parser.error("give the checkpoint once: as CHECKPOINT or as --checkpoint, not both")
        given["checkpoint"] = positional
    try:
        return target(**given)
    except ValidationError as exc:
        prefix = target.model_config.get("env_prefix", "")
        problems = "; ".join(_describe(error, prefix) for error in exc.errors())
        source.root_parser.error(f"invalid setting: {problems}")
        raise  # unreachable: error() exits


def _describe(error: Any, env_prefix: str) -> str:
    name = str(error["loc"][0]) if error["loc"] else ""
    where = f"--{name.replace('_', '-')} / {env_prefix}{name.upper()}" if name else "value"
    got = f" (got {error['input']!r})" if not isinstance(error.get("input"), dict) else ""
    return f"{where}: {error['msg']}{got}"


def settings_from_args(argv: Sequence[str]) -> ServerSettings:
    """Parse the serve command line into settings (exits 2 with a message on bad values)."""
    for old, new in RENAMED.items():
        if old in argv:
            print(f"nitrogen-server: error: {old} was replaced by {new}", file=sys.stderr)
            raise SystemExit(2)
    return parse_command(ServeCommand, ServerSettings, argv)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)


async def _serve(settings: ServerSettings, engine: Any) -> str | None:
    from .app import NitrogenServer

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            raise SystemExit(1)
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    # SIGBREAK (Windows only): Ctrl+Break, and closing the console window (Windows then allows ~5 s).
    restore: list[tuple[int, Any]] = []
    for signum in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGBREAK", None)):
        if signum is None:
            continue
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError):
            # Windows' loops have no add_signal_handler: without this, Ctrl+C raised KeyboardInterrupt
            # in the middle of the loop and skipped the graceful stop (in-flight work, the recorder's queue).
            handler = signal.signal(signum, lambda sig, _frame: loop.call_soon_threadsafe(on_signal, sig))
            restore.append((signum, handler))
    server = NitrogenServer(settings, engine)
    try:
        return await server.serve(stop)
    finally:  # a signal after the loop has closed must not reach it
        for signum, handler in restore:
            signal.signal(signum, handler)


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
        failure = asyncio.run(_serve(settings, engine))
    except OSError as exc:  # e.g. port already in use
        log.error("could not serve: %s", exc)
        engine.close()
        return 2
    except KeyboardInterrupt:
        return 130
    return EXIT_FAILED if failure else 0


def healthcheck(argv: Sequence[str]) -> int:
    """`nitrogen-server healthcheck ...`: 0 if the running server answers `info`, else 1."""
    from .healthcheck import run_healthcheck

    settings = parse_command(HealthcheckSettings, HealthcheckSettings, argv, prog="nitrogen-server healthcheck")
    return run_healthcheck(settings)


def selfcheck(argv: Sequence[str]) -> int:
    """`nitrogen-server selfcheck ...` is the library's `python -m nitrogen.selfcheck` (it loads torch)."""
    try:
        from nitrogen.selfcheck import main as selfcheck_main
    except ModuleNotFoundError as exc:
        if exc.name != "nitrogen.selfcheck":
            raise
        print("nitrogen-server: error: this installation has no nitrogen.selfcheck", file=sys.stderr)
        return 2
    return selfcheck_main(list(argv))


def render(argv: Sequence[str]) -> int:
    """`nitrogen-server render DIR [-o FILE.mp4] [--session KEY]`: a --record directory as a video."""
    from .render import RenderSettings, run_render

    settings = parse_command(RenderSettings, RenderSettings, argv, prog="nitrogen-server render")
    setup_logging("info")
    return run_render(settings)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "healthcheck":
        return healthcheck(argv[1:])
    if argv and argv[0] == "selfcheck":
        return selfcheck(argv[1:])
    if argv and argv[0] == "render":
        return render(argv[1:])
    settings = settings_from_args(argv)
    setup_logging(settings.log_level)
    if "NITROGEN_BF16" in os.environ:
        log.warning("NITROGEN_BF16 is no longer read: use NITROGEN_DTYPE=float32 (or bfloat16)")
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
