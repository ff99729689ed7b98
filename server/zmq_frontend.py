"""Port 5555: ZeroMQ ROUTER + pickled dicts, wire-compatible with the original NitroGen ModelClient.

A session belongs to the ZeroMQ *connection* that created it, never to a routing id: routing ids
are chosen by the peer (ZMQ_ROUTING_ID) or handed out by libzmq in a predictable order, so a peer
could claim the id of one that left. Each accepted TCP connection gets a serial number from the
socket monitor's ACCEPTED event; every message carries the descriptor it arrived on (ZMQ_SRCFD), and
the session key is `zmq:<serial>:<routing ids>`. When the monitor reports the connection
DISCONNECTED, its sessions end, a request still queued from it is not served, and a reply still
being computed for it is dropped rather than sent to whoever holds that routing id next.
(ZMQ_ROUTER_NOTIFY would say the same in-band, but it is a draft API that pyzmq's bundled libzmq
does not enable.)

Requests are unpickled by safe_pickle; replies are pickled dicts.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import pickle
from typing import Any

import numpy as np
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from .protocol import ErrorResult, Request, Response, parse_request, request_type, to_wire_dict
from .safe_pickle import safe_loads
from .service import PolicyService

log = logging.getLogger("nitrogen_server.zmq")
INLINE_DECODE_BYTES = 1 << 20
REPLY_PROTOCOL = 3  # any Python 3; GLOBAL opcodes (not protocol 4's STACK_GLOBAL), native bytes
_MONITOR_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED


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


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """ROUTER message -> (routing frames up to and including the empty delimiter, body frames)."""
    for i, frame in enumerate(frames):
        if not frame:
            return frames[: i + 1], frames[i + 1:]
    return [*frames[:1], b""], frames[1:]  # a DEALER that sent no delimiter: answer REQ-style anyway


class ZmqFrontend:
    """Receives on a ROUTER socket and answers each message from its own task."""

    def __init__(self, service: PolicyService, host: str, port: int, max_message_bytes: int,
                 max_inflight: int = 64) -> None:
        self.service = service
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)  # per frame: libzmq has no per-message cap
        # Messages queued per peer beyond those in flight: libzmq's default (1000) would let one client
        # park up to 1000 x the message cap in our memory.
        self._sock.setsockopt(zmq.RCVHWM, max_inflight)
        self._sock.setsockopt(zmq.LINGER, 2000)
        # connection events, read without blocking before each message (see the module docstring)
        monitor_addr = f"inproc://nitrogen-zmq-monitor-{id(self)}"
        self._sock.monitor(monitor_addr, _MONITOR_EVENTS)
        self._monitor = self._ctx.socket(zmq.PAIR)
        self._monitor.setsockopt(zmq.RCVHWM, 0)  # never drop an event (libzmq would block its I/O thread)
        self._monitor.connect(monitor_addr)
        self._monitor_sync = zmq.Socket.shadow(self._monitor.underlying)
        bind_host = "*" if host in ("0.0.0.0", "", "*") else host
        if port == 0:
            self.port = self._sock.bind_to_random_port(f"tcp://{bind_host}")
        else:
            self._sock.bind(f"tcp://{bind_host}:{port}")
            self.port = port
        self.host = host
        self._serials: dict[int, int] = {}  # descriptor -> serial of the connection now on it
        self._sessions: dict[int, set[str]] = {}  # serial -> session keys it created
        self._next_serial = itertools.count(1)
        # requests being unpickled or served at once; beyond this, messages wait in ZeroMQ's queue
        self._inflight = asyncio.Semaphore(max_inflight)
        self._recv_task: asyncio.Task | None = None
        self._monitor_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._recv_task = loop.create_task(self._recv_loop(), name="zmq-recv")
        self._monitor_task = loop.create_task(self._watch_monitor(), name="zmq-monitor")
        log.info("listening zmq on tcp://%s:%d", self.host, self.port)

    # ---- connections ----------------------------------------------------------------------------------

    def _drain_monitor(self) -> None:
        """Apply every connection event libzmq has reported so far (never blocks)."""
        while True:
            try:
                event = parse_monitor_message(self._monitor_sync.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            except zmq.ZMQError as exc:  # the context is closing
                log.debug("zmq monitor: %s", exc)
                return
            fd = int(event["value"])
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._connection_closed(self._serials.get(fd))  # whatever was on this descriptor is gone
                self._serials[fd] = next(self._next_serial)
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._connection_closed(self._serials.pop(fd, None))

    def _connection_closed(self, serial: int | None) -> None:
        for key in self._sessions.pop(serial, ()) if serial is not None else ():
            self.service.client_closed(key)

    async def _watch_monitor(self) -> None:
        """End sessions promptly when a connection closes, even if no message follows."""
        while True:
            try:
                await self._monitor.poll()
            except zmq.ZMQError:
                return
            self._drain_monitor()

    # ---- requests -------------------------------------------------------------------------------------

    async def _recv_loop(self) -> None:
        while True:
            await self._inflight.acquire()
            try:
                frames = await self._sock.recv_multipart(copy=False)
            except asyncio.CancelledError:
                self._inflight.release()
                raise
            except zmq.ZMQError as exc:
                self._inflight.release()
                log.warning("zmq receive failed: %s", exc)
                await asyncio.sleep(0.01)
                continue
            self._drain_monitor()
            fd = frames[-1].get(zmq.SRCFD)
            serial = self._serials.get(fd)
            if serial is None:
                # read after its connection's DISCONNECTED event: the sender is gone, and its routing id
                # may soon be someone else's. (A new connection's ACCEPTED event always comes first:
                # libzmq emits it on accept, before the connection can deliver a message.)
                log.debug("message from a closed zmq connection dropped")
                self._inflight.release()
                continue
            envelope, body = split_envelope([f.bytes for f in frames])
            key = f"zmq:{serial}:{'.'.join(f.hex() for f in envelope[:-1])}"
            self._sessions.setdefault(serial, set()).add(key)
            task = asyncio.get_running_loop().create_task(self._answer(key, fd, serial, envelope, body))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._inflight.release()

    async def _answer(self, key: str, fd: int, serial: int, envelope: list[bytes], body: list[bytes]) -> None:
        if len(body) != 1:
            log.warning("%s bad request: %d frames", key, len(body))
            response: Response = ErrorResult(f"request has {len(body)} message frames after the envelope; "
                                             "expected exactly one frame holding a pickled dict")
        else:
            message = body[0]
            response = await self.service.handle(key, lambda: decode_request(message),
                                                 in_pool=len(message) > INLINE_DECODE_BYTES)
        try:
            reply = encode_reply(response)
        except Exception as exc:
            log.exception("%s could not pickle the reply", key)
            reply = encode_reply(ErrorResult(f"could not encode the reply: {type(exc).__name__}"))
        self._drain_monitor()
        if self._serials.get(fd) != serial:  # the connection left: its routing id may be someone else's now
            log.info("%s left before its reply", key)
            self._connection_closed(serial)
            self.service.client_closed(key)  # the session this request created after the disconnect, too
            return
        try:
            await self._sock.send_multipart([*envelope, reply])
        except zmq.ZMQError as exc:
            log.warning("%s reply not sent: %s", key, exc)

    async def stop_accepting(self) -> None:
        """Stop taking new requests; requests already received keep running."""
        if self._recv_task is not None:
            self._recv_task.cancel()
            await asyncio.gather(self._recv_task, return_exceptions=True)

    async def finish(self, timeout: float) -> None:
        """Wait for in-flight answers (up to `timeout`), then close the sockets, flushing replies."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            await asyncio.gather(self._monitor_task, return_exceptions=True)
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=1000)
        self._ctx.term()
