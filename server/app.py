"""Assembles engine, service and both frontends on one event loop; graceful start and stop.

`NitrogenServer` is what the CLI runs; `ServerThread` runs the same thing on a background thread
(tests, notebooks, embedding in another program).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from .config import ServerSettings
from .http_view import HttpView, start_http_view
from .metrics import ServerMetrics, start_metrics
from .recorder import start_recorder
from .service import PolicyService
from .supervisor import Supervisor
from .tcp_frontend import TcpFrontend
from .zmq_frontend import ZmqFrontend

log = logging.getLogger("nitrogen_server")


def load_engine(settings: ServerSettings) -> Any:
    """The library's engines (one per --device entry) for the checkpoint (blocking: loads weights)."""
    from nitrogen import EnginePool

    refuse_slow_bf16(settings)
    return EnginePool.from_checkpoint(
        settings.checkpoint, devices=settings.device, options=settings.engine_options,
        old_layout=settings.old_layout, adapters=[settings.adapter] if settings.adapter else [],
    )


def refuse_slow_bf16(settings: ServerSettings) -> None:
    """`--dtype bfloat16` on a CPU without bf16 units would serve ~5x slower than float32: refused,
    saying why (the library still allows it, for numerics checks such as the self-check)."""
    if settings.engine_options.dtype != "bfloat16":
        return
    from nitrogen.devices import parse_devices, pick_device
    from nitrogen.precision import slow_bf16_reason

    for device in map(pick_device, parse_devices(settings.device)):
        if reason := slow_bf16_reason(device):
            raise ValueError(f"--dtype bfloat16 refused on {device}: {reason}; serve with "
                             "--dtype float32 (the default on CPUs)")


class NitrogenServer:
    """Both ports over one PolicyService. Owns the engine only if it loaded it itself."""

    def __init__(self, settings: ServerSettings, engine: Any = None) -> None:
        self.settings = settings
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else load_engine(settings)
        self.service: PolicyService | None = None
        self.zmq: ZmqFrontend | None = None
        self.tcp: TcpFrontend | None = None
        self._expiry: asyncio.Task | None = None
        self.metrics: ServerMetrics | None = None
        self._failed: asyncio.Event | None = None
        self.supervisor: Supervisor | None = None
        self.http: HttpView | None = None

    @property
    def failure(self) -> str | None:
        """Why the server stopped itself (a part died), or None."""
        return self.supervisor.failure if self.supervisor else None

    @property
    def engines(self) -> list[Any]:
        """Every engine serving (an EnginePool has one per device; a bare engine is one)."""
        return list(getattr(self.engine, "engines", [self.engine]))

    @property
    def zmq_port(self) -> int:
        return self.zmq.port if self.zmq else self.settings.zmq_port

    @property
    def tcp_port(self) -> int:
        return self.tcp.port if self.tcp else self.settings.tcp_port

    async def start(self) -> None:
        """Bind both ports and log one ready line per port."""
        s = self.settings
        loop = asyncio.get_running_loop()
        self._failed = asyncio.Event()
        self.supervisor = sup = Supervisor(on_failure=self._failed.set)
        self.service = PolicyService(self.engine, s)
        self.service.health = sup.health
        log.info("model ready: %s", _describe_info(self.service.default_info))
        self.metrics = start_metrics(self)  # None unless --http-port (or its old name --metrics-port)
        self.http = start_http_view(self)  # the same: /, /api/sessions, /events, /metrics
        self.service.recorder = start_recorder(s)  # None unless --record
        self.tcp = TcpFrontend(self.service, s)
        await self.tcp.start()
        self.zmq = ZmqFrontend(self.service, s.host, s.zmq_port, s.max_zmq_message_bytes,
                               max_inflight=max(64, 2 * s.max_batch), on_fatal=sup.fail)
        self.zmq.start()
        self._expiry = loop.create_task(self.service.sessions.run_expiry(), name="session-expiry")
        self._supervise(sup, loop)

    def _supervise(self, sup: Supervisor, loop: asyncio.AbstractEventLoop) -> None:
        """Every long-lived part, watched (server/supervisor.py): none may stop without a word."""
        tcp, zmq = self.tcp, self.zmq
        assert tcp is not None and zmq is not None and self._expiry is not None and self.service is not None
        sup.watch_task("session expiry", self._expiry)
        sup.watch("tcp port", lambda: None if tcp.is_serving() else "its listening socket closed")
        sup.watch("zmq port", lambda: None if zmq.is_alive() else "its socket thread ended")
        for engine in self.engines:
            part = f"engine {engine.index} ({engine.device})"
            sup.watch(part, lambda e=engine: e.failure or (None if e.healthy else "its worker thread ended"))
            engine.add_failure_listener(
                lambda reason, part=part: loop.call_soon_threadsafe(sup.fail, part, reason))
        http = self.http
        if http is not None:
            sup.watch("http port", lambda: None if http.is_alive() else "its listener thread ended")
        recorder = self.service.recorder
        if recorder is not None:
            sup.watch("recorder", lambda: None if recorder.is_alive() else "its writer thread ended")
        sup.start()

    async def stop(self) -> None:
        """Stop accepting, answer what is in flight (up to the grace period), release everything."""
        grace = self.settings.shutdown_grace_s
        if self.supervisor:
            self.supervisor.stopping()
        log.info("shutting down: no new requests; finishing those in flight (up to %.0f s)", grace)
        if self.zmq:
            await self.zmq.stop_accepting()
        if self.tcp:
            await self.tcp.stop_accepting()
        await asyncio.gather(
            *(f.finish(grace) for f in (self.tcp, self.zmq) if f is not None), return_exceptions=True
        )
        if self._expiry:
            self._expiry.cancel()
        if self.service:
            self.service.close()
        if self.http:
            await asyncio.to_thread(self.http.close)
        if self.metrics:
            self.metrics.close()
        if self.service and self.service.recorder:
            await asyncio.to_thread(self.service.recorder.close)  # writes what is queued
        if self._owns_engine:
            self.engine.close()
        log.info("stopped")

    async def serve(self, stop: asyncio.Event) -> str | None:
        """Serve until ``stop`` is set or a part fails; returns the failure (None after a normal stop)."""
        await self.start()
        await self.wait(stop)
        await self.stop()
        return self.failure

    async def wait(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set or the supervisor reports a part that stopped."""
        assert self._failed is not None
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._failed.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


def _describe_info(info: dict[str, Any]) -> str:
    keys = ("ckpt_path", "device", "dtype", "action_horizon", "action_downsample_ratio", "context_length",
            "cfg_scale")
    return ", ".join(f"{k}={info[k]}" for k in keys if k in info)


class ServerThread:
    """Run a NitrogenServer on its own thread and loop: `with ServerThread(settings) as srv: srv.tcp_port`."""

    def __init__(self, settings: ServerSettings, engine: Any = None) -> None:
        self.settings = settings
        self._engine = engine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nitrogen-server", daemon=True)
        self.server: NitrogenServer | None = None

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self.server = NitrogenServer(self.settings, self._engine)
            await self.server.start()
            self._ready.set()
            await self.server.wait(self._stop)
            await self.server.stop()

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread by start()
            self._error = exc
            self._ready.set()

    def start(self, timeout: float = 120.0) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"server did not start: {self._error!r}")
        return self

    @property
    def zmq_port(self) -> int:
        assert self.server is not None
        return self.server.zmq_port

    @property
    def tcp_port(self) -> int:
        assert self.server is not None
        return self.server.tcp_port

    def stop(self, timeout: float = 20.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def __enter__(self) -> ServerThread:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
