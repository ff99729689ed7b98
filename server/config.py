"""Server settings: one pydantic model fed by NITROGEN_* environment variables and the command line.

The engine's switches are not repeated here: ServerSettings inherits the library's torch-free
`EngineOptions`, so `--max-batch`, `--dtype`, `--no-cuda-graphs`... are the library's own fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nitrogen.frames import MAX_SIDE
from nitrogen.options import EngineOptions

DEFAULT_CHECKPOINT = "models/ng.pt"
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class ServerSettings(BaseSettings, EngineOptions):
    """Everything the server can be told; command-line values override NITROGEN_* variables."""

    model_config = SettingsConfigDict(
        env_prefix="NITROGEN_", extra="ignore", validate_default=True,
        # how `nitrogen-server` turns the fields into flags (server/cli.py): --tcp-port, --no-warmup
        cli_prog_name="nitrogen-server", cli_kebab_case=True, cli_implicit_flags=True, cli_hide_none_type=True,
        cli_avoid_json=True, cli_show_env_vars=True,
    )

    checkpoint: str = Field(DEFAULT_CHECKPOINT, description="checkpoint path, or 'demo' for the tiny random model")
    device: str | None = Field(None, description="cpu, cuda, cuda:N, mps, or several (one engine each): "
                               "cuda:0,cuda:1 or cuda:all; None: cuda > mps > cpu")
    adapter: Path | None = Field(None, description="PEFT LoRA adapter directory merged into the checkpoint's "
                                 "weights at load; None: none")
    host: str = Field("0.0.0.0", description="address both ports bind to")
    zmq_port: int = Field(5555, ge=0, le=65535, description="ZeroMQ + pickle port (0: any free port)")
    tcp_port: int = Field(5556, ge=0, le=65535, description="newline-JSON TCP port (0: any free port)")
    cfg: float = Field(1.0, ge=0.0, le=100.0, description="classifier-free guidance scale of new sessions")
    ctx: int | None = Field(None, ge=1, le=1024, description="context length in frames; None: the checkpoint's")
    game: str | None = Field(None, description="game name or id for new sessions (checkpoints with a game table); None: no game")
    old_layout: bool | None = Field(None, description="old action layout on or off; None: as the checkpoint says")
    log_level: LogLevel = Field("info", description="logging level")
    session_idle_s: float = Field(600.0, gt=0, description="idle sessions are forgotten after this many seconds")
    max_sessions: int = Field(1024, ge=1, description="most sessions kept; beyond, the least recently used goes")
    read_timeout_s: float = Field(30.0, gt=0, description="drop a TCP client that stalls mid-request this long")
    max_header_bytes: int = Field(64 * 1024, ge=256, description="longest TCP JSON header line")
    max_payload_bytes: int = Field(32 * 1024 * 1024, ge=196_608, description="largest TCP payload")
    max_zmq_message_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="largest ZeroMQ request")
    max_image_side: int = Field(MAX_SIDE, ge=16, le=MAX_SIDE,
                                description="largest decoded width or height (at most the library's frame rule)")
    max_pipeline: int = Field(16, ge=1, le=1024, description="requests read ahead on one TCP connection")
    record: Path | None = Field(
        None, description="record every predict (frames, parameters, reply, timings) under this directory; None: off")
    record_max_mb: float = Field(1024.0, gt=0, description="cap of the recording; the oldest records go first")
    shutdown_grace_s: float = Field(8.0, gt=0, le=60, description="how long SIGTERM waits for in-flight work")
    http_port: int | None = Field(None, ge=0, le=65535, description="HTTP port on --host: the live view (/), "
                                  "/api/sessions and Prometheus /metrics (0: any free port); None: off")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="the old name of --http-port (the same "
                                     "listener); None: off")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("device", "adapter", "game", "ctx", "old_layout", "dtype", "steps", "gpu_preprocess", "record",
                     "metrics_port", "http_port", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _one_http_port(self) -> ServerSettings:
        if None not in (self.http_port, self.metrics_port) and self.http_port != self.metrics_port:
            raise ValueError(f"--metrics-port ({self.metrics_port}) is the old name of --http-port "
                             f"({self.http_port}): one listener serves both; give --http-port only")
        return self

    @property
    def http_listen_port(self) -> int | None:
        """Where the HTTP listener goes: --http-port, else its old name --metrics-port; None: off."""
        return self.http_port if self.http_port is not None else self.metrics_port

    @property
    def engine_options(self) -> EngineOptions:
        """The library's options, as given (the engine needs nothing else from the server's settings)."""
        return EngineOptions(**self.model_dump(include=set(EngineOptions.model_fields)))

    @property
    def game_arg(self) -> str | int | None:
        """The game as the library wants it: an int id when it is all digits, else the name."""
        if self.game is None:
            return None
        return int(self.game) if self.game.isdigit() else self.game
