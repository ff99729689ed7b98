"""The one HTTP listener (`--http-port`): the live page, /api/sessions, /events and Prometheus /metrics.

Routes (GET only; any other method 405, any other path 404):
    /                   the live page (live_page.html: plain HTML and a few lines of JS)
    /api/sessions       the sessions as a JSON list (server/live.py's `listing`)
    /events             the same list as server-sent events, pushed when a predict lands (at most
                        every POLL_S) and every REFRESH_S for the idle times
    /frame/N.jpg        session N's last frame as the model saw it, with the overlay of its reply
    /metrics            Prometheus text format (server/metrics.py)

Why aiohttp, on a thread and event loop of its own: a maintained HTTP/1.1 server (llhttp parser with
line, field and header-count limits, routing with 404/405, streaming responses), where the predict
loop cannot see it. The predict path only stores references (LiveSessions.submit); this thread polls
a version number, so a viewer costs the predict path no wake-up, and a stalled one blocks only its
own handler. Why server-sent events and not a WebSocket or MJPEG: they flow one way only (a viewer
has no channel into the server at all), browsers reconnect them by themselves, and each event is a
small JSON list; pictures are fetched separately, rendered lazily on one thread only when a browser
asks, and the page asks for the next one only when the last has loaded, so a slow viewer sees fewer
frames instead of a queue growing anywhere.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from aiohttp import web

from .live import LastPredict, LiveSessions, render_last

log = logging.getLogger("nitrogen_server.http")
MAX_CONNECTIONS = 64  # open connections; more are answered 503 and closed at once
MAX_STREAMS = 16  # /events viewers at once
IDLE_TIMEOUT_S = 15.0  # a connection with no complete request for this long is closed
WRITE_TIMEOUT_S = 10.0  # an event a viewer does not take within this drops the viewer
POLL_S = 0.1
REFRESH_S = 1.0
RENDER_CACHE = 64  # rendered pictures kept (one per session)
HANDLER_LIMITS = {"max_line_size": 8190, "max_field_size": 8190, "max_headers": 64}
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
NO_STORE = {"Cache-Control": "no-store"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Busy(asyncio.Protocol):
    """What a connection over MAX_CONNECTIONS gets: 503, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(BUSY)  # type: ignore[attr-defined]
        transport.close()


class HttpView:
    """Serves the routes above on host:port from its own thread; `start` binds, `close` stops."""

    def __init__(self, live: LiveSessions, metrics: Any, host: str, port: int, max_image_side: int) -> None:
        self.live, self.metrics = live, metrics
        self.host, self.port = host, port
        self.max_image_side = max_image_side
        self.streams = 0
        self._page = resources.files(__package__).joinpath("live_page.html").read_bytes()
        self._renders: OrderedDict[int, tuple[int, bytes]] = OrderedDict()  # session id -> (shown, jpeg)
        self._rendering: dict[int, asyncio.Future[tuple[int, bytes]]] = {}  # session id -> its one render
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nitrogen-live-render",
                                        initializer=_lower_priority)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._closing = False
        self._render_failed = False
        self._thread = threading.Thread(target=self._run, name="nitrogen-http", daemon=True)

    # ---- lifecycle (called from the server's thread) ----

    def start(self, timeout: float = 30.0) -> int:
        """Bind and serve; returns the port. OSError (naming the address) if it cannot bind."""
        self._thread.start()
        self._ready.wait(timeout)
        if self._error is not None:
            self._thread.join(timeout)
            raise self._error
        log.info("listening http on %s:%d", self.host, self.port)
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self.port

    def is_alive(self) -> bool:
        """False once the listener's thread has ended (after close, or because it failed)."""
        return self._thread.is_alive()

    def close(self, timeout: float = 10.0) -> None:
        """Stop serving (open event streams end) and the render thread."""
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            runner, server = loop.run_until_complete(self._open())
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            self._error = (OSError(exc.errno, f"http port {self.host}:{self.port}: {exc.strerror}")
                           if isinstance(exc, OSError) else exc)
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._closing = True
            server.close()
            loop.run_until_complete(runner.cleanup())
            loop.close()

    async def _open(self) -> tuple[web.AppRunner, asyncio.AbstractServer]:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index, allow_head=False)
        app.router.add_get("/api/sessions", self._sessions, allow_head=False)
        app.router.add_get("/events", self._events, allow_head=False)
        app.router.add_get(r"/frame/{id:\d{1,9}}.jpg", self._frame, allow_head=False)
        app.router.add_get("/metrics", self._metrics, allow_head=False)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=IDLE_TIMEOUT_S, shutdown_timeout=1.0,
                               **HANDLER_LIMITS)
        await runner.setup()
        handlers = runner.server
        assert handlers is not None

        def protocol() -> asyncio.BaseProtocol:
            return handlers() if len(handlers.connections) < MAX_CONNECTIONS else _Busy()

        try:
            server = await asyncio.get_running_loop().create_server(protocol, self.host, self.port,
                                                                    reuse_address=True)
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(server.sockets[0].getsockname()[1])
        return runner, server

    # ---- routes (on this thread's loop) ----

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Read-only: GET or 405, whatever the path; nothing is cached by the browser."""
        if request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET"])
        response = await handler(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._page, content_type="text/html", charset="utf-8", headers=NO_STORE)

    async def _sessions(self, request: web.Request) -> web.Response:
        return web.Response(body=_json(self.live.listing()), content_type="application/json", headers=NO_STORE)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type, **NO_STORE})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if self.streams >= MAX_STREAMS:
            raise web.HTTPServiceUnavailable(text=f"at most {MAX_STREAMS} live viewers at once; try later\n")
        self.streams += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **NO_STORE})
        try:
            await response.prepare(request)
            loop, sent, sent_at = asyncio.get_running_loop(), -1, 0.0
            while not self._closing:
                version = self.live.version
                if version != sent or loop.time() - sent_at >= REFRESH_S:
                    sent, sent_at = version, loop.time()
                    event = b"data: " + _json(self.live.listing()) + b"\n\n"
                    await asyncio.wait_for(response.write(event), WRITE_TIMEOUT_S)
                await asyncio.sleep(POLL_S)
        except (asyncio.TimeoutError, ConnectionError) as exc:
            why = f"took no event for {WRITE_TIMEOUT_S:.0f} s" if isinstance(exc, asyncio.TimeoutError) else "left"
            log.info("live viewer %s dropped: it %s", request.remote, why)
            if request.transport is not None:
                request.transport.abort()  # whatever it did not read goes, now
        finally:
            self.streams -= 1
        return response

    async def _frame(self, request: web.Request) -> web.Response:
        entry = self.live.last(int(request.match_info["id"]))
        if entry is None or entry.image is None:
            raise web.HTTPNotFound(text="no frame for this session: it ended, or its frame was not kept\n")
        try:
            jpeg = await self._render(entry)
        except LookupError as exc:  # the session ended while its picture was being drawn
            raise web.HTTPNotFound(text=f"no frame for this session: {exc}\n") from exc
        except Exception as exc:  # e.g. the client package missing: say so (once), keep serving
            log.log(logging.DEBUG if self._render_failed else logging.WARNING,
                    "live view: could not draw session %s: %s: %s", entry.key, type(exc).__name__, exc)
            self._render_failed = True
            raise web.HTTPServiceUnavailable(text=f"could not render: {type(exc).__name__}: {exc}\n") from exc
        return web.Response(body=jpeg, content_type="image/jpeg", headers=NO_STORE)

    async def _render(self, entry: LastPredict) -> bytes:
        """A JPEG of this predict or a newer one of its session: cached per session, and at most one
        render per session queued or running, however many ask (a queue of renders would each pin a
        frame the live store already let go, and make real viewers wait behind stale work)."""
        sid = entry.id
        while True:
            cached = self._renders.get(sid)
            if cached is not None and cached[0] >= entry.shown:
                return cached[1]
            future = self._rendering.get(sid)
            if future is None:
                future = asyncio.get_running_loop().run_in_executor(self._pool, self._encode_latest, sid)
                self._rendering[sid] = future
                future.add_done_callback(lambda _f, sid=sid: self._rendering.pop(sid, None))
            shown, jpeg = await asyncio.shield(future)  # one viewer leaving does not cancel the others'
            if cached is None or shown > cached[0]:
                self._renders[sid] = (shown, jpeg)
                self._renders.move_to_end(sid)
                while len(self._renders) > RENDER_CACHE:
                    self._renders.popitem(last=False)
            if shown >= entry.shown:
                return jpeg

    def _encode_latest(self, session_id: int) -> tuple[int, bytes]:
        """The session's newest predict, drawn (not the one asked for: it may be gone by now)."""
        entry = self.live.last(session_id)
        if entry is None or entry.image is None:
            raise LookupError(f"session {session_id} ended, or its frame was not kept")
        buf = io.BytesIO()
        render_last(entry, self.max_image_side).save(buf, format="JPEG", quality=85)
        return entry.shown, buf.getvalue()


def _lower_priority() -> None:
    """The render thread yields the CPU to the predicts (Linux: niceness is per thread; elsewhere a no-op)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10))
    except (AttributeError, OSError):
        pass


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=float).encode()


def start_http_view(server: Any) -> HttpView | None:
    """The listener for a NitrogenServer whose service and metrics exist (None without --http-port).

    Sets `service.live`, so predicts are kept for the view from here on.
    """
    settings = server.settings
    port = settings.http_listen_port
    if port is None:
        return None
    if settings.metrics_port is not None and settings.http_port is None:
        log.warning("--metrics-port (NITROGEN_METRICS_PORT) is the old name of --http-port (NITROGEN_HTTP_PORT), "
                    "which serves /metrics and the live view on one port")
    try:
        import nitrogen_client.overlay  # noqa: F401 - only to say now, not at the first picture, if it is missing
    except ImportError as exc:
        log.warning("the live view will show no pictures: %s (install the client package: "
                    "pip install ./clients/python)", exc)
    service = server.service
    live = LiveSessions(service.sessions)
    view = HttpView(live, server.metrics, settings.host, port, settings.max_image_side)
    view.start()
    service.live = live
    return view
