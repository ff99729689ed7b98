"""Port 5556: newline-JSON header + binary payload (NitroGen-Server fork compatible), on asyncio streams.

Framing only: a header line (parsed and bounded by header.parse_header), then the payload its `len`
(or the raw-frame / BMP rule) says follows. Requests on one connection are read ahead (pipelining) and
answered strictly in order; the fields inside are checked by protocol.parse_request, inside
PolicyService.handle, which answers every request. A framing error is answered with an error line,
then the connection is closed; whatever goes wrong, the connection's tasks end and its socket closes.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

from .config import ServerSettings
from .header import FramingError, line_too_long, parse_header
from .images import BMP_PROBE_BYTES, RAW_FRAME_BYTES, RAW_SIDE, EncodedFrame, ImageError, bmp_total_size
from .jsonfmt import encode_reply, error_line
from .protocol import Request, RequestError, optional_int, parse_request
from .service import PolicyService

log = logging.getLogger("nitrogen_server.tcp")
_EOF = object()
T = TypeVar("T")


if sys.version_info >= (3, 11):
    async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
        """A timeout without wait_for's extra task per call (this is on every read of every request)."""
        async with asyncio.timeout(seconds):
            return await awaitable
else:  # pragma: no cover - Python 3.10
    async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
        return await asyncio.wait_for(awaitable, seconds)


def tcp_request(fields: dict[str, Any], payload: bytes | None, has_len: bool, max_side: int) -> Request:
    """A header's fields + the payload that followed -> typed request (RequestError says what is wrong)."""
    image = None
    if fields.get("type") == "predict" and payload is not None:
        width = optional_int(fields, "width", 1, max_side)
        height = optional_int(fields, "height", 1, max_side)
        if not has_len and width is None and height is None:
            width = height = RAW_SIDE  # no len, not a BMP: raw 256x256 by definition
        image = EncodedFrame(payload, width, height)
    return parse_request(fields, image=image, default_resize="stretch")


class _Connection:
    """One client connection = one session; a reader task feeds requests to an in-order processor."""

    def __init__(self, frontend: TcpFrontend, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, key: str) -> None:
        self.frontend, self.reader, self.writer, self.key = frontend, reader, writer, key
        self.settings: ServerSettings = frontend.settings
        self.idle = True  # waiting for the first byte of a request (safe to stop reading)
        self.stopping = False
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.slots = asyncio.Semaphore(self.settings.max_pipeline)
        # read-ahead is also bounded in bytes: at most about one maximum payload waits in the queue
        self.queued_bytes = 0
        self.room = asyncio.Event()
        self._payload_bytes = 0
        self.reader_task: asyncio.Task | None = None

    async def run(self) -> None:
        peer = self.writer.get_extra_info("peername")
        log.info("%s connected from %s", self.key, peer)
        self.reader_task = asyncio.get_running_loop().create_task(self._read_loop())
        answered = 0
        try:
            while True:
                item = await self.queue.get()
                if item is _EOF:
                    break
                if isinstance(item, tuple):
                    item, nbytes = item
                    self.queued_bytes -= nbytes
                    self.room.set()
                if isinstance(item, FramingError):
                    log.warning("%s framing error, closing: %s", self.key, item)
                    await self._send(error_line(str(item)))
                    await self._linger()
                    break
                response = await self.frontend.service.handle(self.key, item)
                await self._send(encode_reply(response))
                answered += 1
                self.slots.release()
        except (ConnectionError, asyncio.TimeoutError) as exc:
            log.info("%s dropped while replying: %s", self.key, exc or type(exc).__name__)
        except Exception:  # a bug here must cost one connection, never the server
            log.exception("%s connection failed", self.key)
        finally:
            self.reader_task.cancel()
            await asyncio.gather(self.reader_task, return_exceptions=True)
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 1.0)
            except (Exception, asyncio.TimeoutError):  # noqa: BLE001, S110 - closing anyway
                pass
            self.frontend.service.client_closed(self.key)
            log.info("%s disconnected after %d replies", self.key, answered)

    async def _send(self, line: bytes) -> None:
        self.writer.write(line)
        await _within(self.settings.read_timeout_s, self.writer.drain())

    async def _linger(self) -> None:
        """Before closing on a framing error, let the error line reach the client.

        Closing with unread input makes the kernel send RST, which can destroy the reply before the
        client reads it; so half-close and discard what the client still sends, briefly.
        """
        try:
            if self.writer.can_write_eof():
                self.writer.write_eof()
            await asyncio.wait_for(self._discard_input(), 1.0)
        except (Exception, asyncio.TimeoutError):  # noqa: BLE001, S110 - best effort; closing anyway
            pass

    async def _discard_input(self) -> None:
        while await self.reader.read(1 << 16):
            pass

    def stop(self) -> None:
        """Shutdown: stop reading; a request being read is finished first, queued ones are answered."""
        self.stopping = True
        self.room.set()
        if self.idle and self.reader_task is not None:
            self.reader_task.cancel()

    async def _read_loop(self) -> None:
        try:
            while True:
                await self.slots.acquire()
                while self.queued_bytes > self.settings.max_payload_bytes and not self.stopping:
                    self.room.clear()
                    await self.room.wait()
                if self.stopping:
                    break
                self.idle = True
                try:
                    first = await _within(self.settings.session_idle_s, self.reader.read(1))
                except asyncio.TimeoutError:
                    log.info("%s idle for %.0f s, closing", self.key, self.settings.session_idle_s)
                    break
                self.idle = False
                if not first:
                    break
                try:
                    item = await self._read_request(first)
                except FramingError as exc:
                    self.queue.put_nowait(exc)
                    return
                except asyncio.TimeoutError:
                    self.queue.put_nowait(FramingError(
                        f"timed out: no data for {self.settings.read_timeout_s:g} s in the middle of a "
                        "request; send the header line and its whole payload without pausing"))
                    return
                except asyncio.IncompleteReadError as exc:
                    wanted = f" of {exc.expected}" if exc.expected is not None else ""
                    self.queue.put_nowait(FramingError(
                        f"connection closed mid-request: got {len(exc.partial)}{wanted} bytes"))
                    return
                except ConnectionError:
                    break
                except Exception:  # a bug here must cost this connection, never leave it hanging
                    log.exception("%s could not read a request", self.key)
                    self.queue.put_nowait(FramingError("the server failed to read this request; closing"))
                    return
                if item is None:
                    self.slots.release()  # a blank line: nothing to answer
                else:
                    self.queued_bytes += self._payload_bytes
                    self.queue.put_nowait((item, self._payload_bytes))
        except asyncio.CancelledError:
            pass
        finally:
            self.queue.put_nowait(_EOF)  # the processor always learns that reading is over

    async def _read_request(self, first: bytes) -> Any:
        """Read one header + payload; returns the request's decoder, or None for a blank line."""
        line = first
        if first != b"\n":
            try:
                line += await _within(self.settings.read_timeout_s, self.reader.readuntil(b"\n"))
            except asyncio.LimitOverrunError:
                raise line_too_long(self.settings.max_header_bytes) from None
        fields = parse_header(line, self.settings.max_header_bytes)
        if fields is None:
            return None
        try:
            length = optional_int(fields, "len", 0, self.settings.max_payload_bytes)
        except RequestError as exc:
            raise FramingError(str(exc)) from None
        if length is not None:
            payload = await self._read_exactly(length)
        elif fields.get("type") == "predict":
            payload = await self._read_default_frame()
        else:
            payload = None
        self._payload_bytes = len(payload) if payload is not None else 0
        return functools.partial(tcp_request, fields, payload, length is not None, self.settings.max_image_side)

    async def _read_exactly(self, n: int) -> bytes:
        """Read n bytes; the read timeout applies to each wait for more data, not to the whole payload."""
        chunks, left = [], n
        while left:
            chunk = await _within(self.settings.read_timeout_s, self.reader.read(min(left, 1 << 20)))
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(chunks), n)
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    async def _read_default_frame(self) -> bytes:
        """predict without len: a BMP sized by its own header, else 196,608 bytes of raw RGB."""
        probe = await self._read_exactly(BMP_PROBE_BYTES)
        try:
            size = bmp_total_size(probe)
        except ImageError as exc:
            raise FramingError(str(exc)) from None
        if size is None:
            return probe + await self._read_exactly(RAW_FRAME_BYTES - BMP_PROBE_BYTES)
        if size > self.settings.max_payload_bytes:
            raise FramingError(f"BMP header says {size} bytes; the payload limit is "
                               f"{self.settings.max_payload_bytes} bytes")
        return probe + await self._read_exactly(size - BMP_PROBE_BYTES)


class TcpFrontend:
    """The listening socket and its connections."""

    def __init__(self, service: PolicyService, settings: ServerSettings) -> None:
        self.service, self.settings = service, settings
        self.host, self.port = settings.host, settings.tcp_port
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task] = set()
        self._ids = itertools.count(1)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_client, self.host, self.port, limit=self.settings.max_header_bytes)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("listening tcp on %s:%d", self.host, self.port)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer, f"tcp:{next(self._ids)}")
        task = asyncio.current_task()
        self._connections.add(conn)
        if task is not None:
            self._tasks.add(task)
        try:
            await conn.run()
        except asyncio.CancelledError:
            # finish() cut this connection at shutdown (conn.run closed it). Ending normally keeps
            # asyncio's stream callback from logging our own cancellation as an ERROR.
            log.info("%s closed at shutdown with a request unanswered", conn.key)
        finally:
            self._connections.discard(conn)
            if task is not None:
                self._tasks.discard(task)

    def is_serving(self) -> bool:
        """False once the listening socket is closed (by stop_accepting, or underneath us)."""
        return self._server is not None and self._server.is_serving()

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.stop()

    async def finish(self, timeout: float) -> None:
        """Wait for connections to answer what they have read (up to `timeout`), then cut the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            self._server.close()
