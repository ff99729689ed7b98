"""Port 5555: ZeroMQ ROUTER + pickled dicts, wire-compatible with the original NitroGen ModelClient.

A ROUTER socket sees each REQ peer under its own identity, so every peer is its own session and many
are served at once. Requests are unpickled with the allowlist in safe_pickle; replies are pickled dicts.
"""

from __future__ import annotations

import asyncio
import io
import logging
import pickle
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from .protocol import ErrorResult, RequestError, Response, parse_request, request_type, to_wire_dict
from .safe_pickle import UnsafePickleError, safe_loads
from .service import PolicyService

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


def decode_request(body: bytes) -> Any:
    """Pickled bytes -> typed request; RequestError/UnsafePickleError say what was wrong."""
    fields = safe_loads(body)
    request_type(fields)
    return parse_request(fields, image=fields.get("image"), default_resize="stretch")


def encode_reply(response: Response) -> bytes:
    buf = io.BytesIO()
    _ReplyPickler(buf, protocol=REPLY_PROTOCOL).dump(to_wire_dict(response))
    return buf.getvalue()


class ZmqFrontend:
    """Receives on a ROUTER socket and answers each message from its own task."""

    def __init__(self, service: PolicyService, host: str, port: int, max_message_bytes: int,
                 max_inflight: int = 64) -> None:
        self.service = service
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self._sock.setsockopt(zmq.LINGER, 2000)
        bind_host = "*" if host in ("0.0.0.0", "", "*") else host
        if port == 0:
            self.port = self._sock.bind_to_random_port(f"tcp://{bind_host}")
        else:
            self._sock.bind(f"tcp://{bind_host}:{port}")
            self.port = port
        self.host = host
        # requests being unpickled or served at once; beyond this, messages wait in ZeroMQ's queue
        self._inflight = asyncio.Semaphore(max_inflight)
        self._recv_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        self._recv_task = asyncio.get_running_loop().create_task(self._recv_loop(), name="zmq-recv")
        log.info("listening zmq on tcp://%s:%d", self.host, self.port)

    async def _recv_loop(self) -> None:
        while True:
            await self._inflight.acquire()
            try:
                frames = await self._sock.recv_multipart(copy=True)
            except asyncio.CancelledError:
                self._inflight.release()
                raise
            except zmq.ZMQError as exc:
                self._inflight.release()
                log.warning("zmq receive failed: %s", exc)
                await asyncio.sleep(0.01)
                continue
            if len(frames) < 2:
                self._inflight.release()
                continue  # not a routed message: nothing to answer to
            task = asyncio.get_running_loop().create_task(self._answer(frames[:-1], frames[-1]))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._inflight.release()

    async def _answer(self, envelope: list[bytes], body: bytes) -> None:
        client = "zmq:" + envelope[0].hex()
        loop = asyncio.get_running_loop()
        try:
            # a 256x256 frame unpickles in ~15 us: cheaper than two thread hops; big ones go off the loop
            if len(body) <= INLINE_DECODE_BYTES:
                request = decode_request(body)
            else:
                request = await loop.run_in_executor(None, decode_request, body)
        except (UnsafePickleError, RequestError) as exc:
            log.warning("%s bad request (%d bytes): %s", client, len(body), exc)
            response: Response = ErrorResult(str(exc))
        else:
            response = await self.service.handle(client, request)
        try:
            reply = encode_reply(response)
        except Exception as exc:  # an unpicklable info value, say; still answer
            log.exception("%s could not pickle the reply", client)
            reply = encode_reply(ErrorResult(f"could not encode the reply: {exc}"))
        try:
            await self._sock.send_multipart([*envelope, reply])
        except zmq.ZMQError as exc:
            log.warning("%s reply not sent: %s", client, exc)

    async def stop_accepting(self) -> None:
        """Stop taking new requests; requests already received keep running."""
        if self._recv_task is not None:
            self._recv_task.cancel()
            await asyncio.gather(self._recv_task, return_exceptions=True)

    async def finish(self, timeout: float) -> None:
        """Wait for in-flight answers (up to `timeout`), then close the socket, flushing replies."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
        self._sock.close(linger=1000)
        self._ctx.term()
