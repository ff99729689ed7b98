"""Port 5555: ZeroMQ ROUTER + pickled dicts, wire-compatible with the original NitroGen ModelClient.

The sockets live on their own thread (`zmq_io`: connections, session keys, why a thread); this side
runs on the event loop: each request is answered by its own task through `PolicyService.handle`, which
never raises. Requests are unpickled by safe_pickle; replies are pickled dicts.

If the socket thread ends for any reason other than `finish`, `on_fatal` is told (the server stops,
loudly): a port that no longer answers must not look alive.
"""

from __future__ import annotations

import asyncio
import io
import logging
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

from .protocol import ErrorResult, Request, Response, parse_request, request_type, to_wire_dict
from .safe_pickle import safe_loads
from .service import PolicyService
from .zmq_io import Incoming, ZmqIO

__all__ = ["ZmqFrontend", "decode_request", "encode_reply"]

log = logging.getLogger("nitrogen_server.zmq")
INLINE_DECODE_BYTES = 1 << 20
REPLY_PROTOCOL = 3  # any Python 3; GLOBAL opcodes (not protocol 4's STACK_GLOBAL), native bytes


class _ReplyPickler(pickle.Pickler):
    """Arrays as ``numpy.ndarray(shape, dtype, bytearray)``: names every numpy (1.x and 2.x) has.

    numpy 2's own reduce names ``numpy._core.multiarray._reconstruct``, which numpy < 1.26 cannot
    import, so an original client on an older numpy could not read our replies. The bytearray keeps
    the unpickled arrays writable, as the original's were. (The C pickler: ~2 us per reply.)
    """

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
            arr = np.ascontiguousarray(obj)
            return np.ndarray, (arr.shape, arr.dtype, bytearray(arr.tobytes()))
        if isinstance(obj, np.generic):
            return type(obj.item()), (obj.item(),)
        return NotImplemented


def decode_request(body: bytes) -> Request:
    """Pickled bytes -> typed request; RequestError/UnsafePickleError say what was wrong."""
    fields = safe_loads(body)
    request_type(fields)
    return parse_request(fields, image=fields.get("image"), default_resize="stretch")


def encode_reply(response: Response) -> bytes:
    buf = io.BytesIO()
    _ReplyPickler(buf, protocol=REPLY_PROTOCOL).dump(to_wire_dict(response))
    return buf.getvalue()


class ZmqFrontend:
    """Answers each message from the socket thread in its own task on the event loop."""

    def __init__(self, service: PolicyService, host: str, port: int, max_message_bytes: int,
                 max_inflight: int = 64, on_fatal: Callable[[str, BaseException], None] | None = None) -> None:
        self.service = service
        self.host = host
        self._on_fatal = on_fatal
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finishing = False
        self._tasks: set[asyncio.Task] = set()
        self._io = ZmqIO(host, port, max_message_bytes, max_inflight, on_message=self._from_io,
                         on_closed=self._closed_from_io, on_fatal=self._fatal_from_io)
        self.port = self._io.port

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._io.start()
        log.info("listening zmq on tcp://%s:%d", self.host, self.port)

    def is_alive(self) -> bool:
        """False once the socket thread has ended (after `finish`, or because it failed)."""
        return self._io.is_alive()

    # ---- called on the socket thread ------------------------------------------------------------------

    def _from_io(self, msg: Incoming) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._spawn, msg)

    def _closed_from_io(self, key: str) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.service.client_closed, key)

    def _fatal_from_io(self, exc: BaseException) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._report_fatal, exc)

    # ---- on the event loop ----------------------------------------------------------------------------

    def _report_fatal(self, exc: BaseException) -> None:
        if self._finishing:
            return
        if self._on_fatal is not None:
            self._on_fatal("zmq port", exc)
        else:
            log.error("zmq port stopped: %s: %s", type(exc).__name__, exc)

    def _spawn(self, msg: Incoming) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Incoming) -> None:
        reply: bytes | None = None
        try:
            if len(msg.body) != 1:
                log.warning("%s bad request: %d frames", msg.key, len(msg.body))
                response: Response = ErrorResult(f"request has {len(msg.body)} message frames after the "
                                                 "envelope; expected exactly one frame holding a pickled dict")
            else:
                message = msg.body[0]
                response = await self.service.handle(msg.key, lambda: decode_request(message),
                                                     in_pool=len(message) > INLINE_DECODE_BYTES)
            try:
                reply = encode_reply(response)
            except Exception as exc:
                log.exception("%s could not pickle the reply", msg.key)
                reply = encode_reply(ErrorResult(f"could not encode the reply: {type(exc).__name__}"))
        finally:  # cancelled at shutdown or not: the slot is freed
            self._io.reply(msg, reply)

    async def stop_accepting(self) -> None:
        """Stop taking new requests; requests already received keep running."""
        await asyncio.to_thread(self._io.stop_accepting)

    async def finish(self, timeout: float) -> None:
        """Wait for in-flight answers (up to `timeout`), then close the sockets, flushing replies."""
        deadline = asyncio.get_running_loop().time() + timeout
        while live := {t for t in self._tasks if not t.done()}:  # answers handed over meanwhile too
            left = deadline - asyncio.get_running_loop().time()
            _, pending = await asyncio.wait(live, timeout=max(0.0, left))
            if pending and left <= 0:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                break
        self._finishing = True
        await asyncio.to_thread(self._io.close)
