"""Port 5555's sockets, on a thread of their own: the ROUTER, its connection monitor, and who is who.

Why a thread and not ``zmq.asyncio``: that needs the event loop's ``add_reader``, which Windows' default
(Proactor) loop lacks; pyzmq then needs tornado, and the failure surfaced inside the receive task, which
died without a word. A thread that owns both sockets and polls them works under any event loop, and
libzmq's rule (one socket, one thread) holds by construction: nothing else ever touches them.

A session belongs to the ZeroMQ *connection* that created it, never to a routing id: routing ids are
chosen by the peer (ZMQ_ROUTING_ID) or handed out by libzmq in a predictable order, so a peer could
claim the id of one that left. Each accepted TCP connection gets a serial number from the monitor's
ACCEPTED event; every message carries the descriptor it arrived on (ZMQ_SRCFD), and the session key is
``zmq:<serial>:<routing ids>``. When the monitor reports the connection DISCONNECTED, its sessions end,
and a reply computed for it is dropped rather than sent to whoever holds that routing id next; the
check runs on this thread right before the send. (ZMQ_ROUTER_NOTIFY would say the same in-band, but it
is a draft API that pyzmq's bundled libzmq does not enable.)

A message without a source descriptor comes from a peer that fell back to ZMTP 1.0/2.0 (libzmq before
3.x, or bytes that only look like such a greeting: port scanners send them). It cannot be tied to a
connection, so it is dropped, and counted in one warning a minute at most. Reading SRCFD on one used to
raise inside the receive task and end it: every later request on the port went unanswered, silently.
"""

from __future__ import annotations

import errno
import itertools
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import parse_monitor_message

log = logging.getLogger("nitrogen_server.zmq")
_MONITOR_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
READ_BURST = 64  # messages taken per wake-up before the thread looks at replies again
DROP_LOG_PERIOD_S = 60.0


@dataclass(frozen=True)
class Incoming:
    """One request as it left the socket: whose it is and where its reply goes."""

    key: str  # zmq:<connection serial>:<routing ids, hex>
    fd: int
    serial: int
    envelope: list[bytes]  # routing frames and the empty delimiter, sent back before the reply
    body: list[bytes]


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """ROUTER message -> (routing frames up to and including the empty delimiter, body frames)."""
    for i, frame in enumerate(frames):
        if not frame:
            return frames[: i + 1], frames[i + 1:]
    return [*frames[:1], b""], frames[1:]  # a DEALER that sent no delimiter: answer REQ-style anyway


class ZmqIO:
    """Owns the ROUTER socket on its thread. The callbacks run on that thread: keep them short
    (the frontend hands them to its event loop)."""

    def __init__(self, host: str, port: int, max_message_bytes: int, max_inflight: int,
                 on_message: Callable[[Incoming], None], on_closed: Callable[[str], None],
                 on_fatal: Callable[[BaseException], None]) -> None:
        self._on_message, self._on_closed, self._on_fatal = on_message, on_closed, on_fatal
        self._max_inflight = max_inflight
        self._ctx = zmq.Context()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)  # per frame: libzmq has no per-message cap
        # Messages queued per peer beyond those in flight: libzmq's default (1000) would let one client
        # park up to 1000 x the message cap in our memory.
        self._router.setsockopt(zmq.RCVHWM, max_inflight)
        self._router.setsockopt(zmq.LINGER, 2000)
        monitor_addr = f"inproc://nitrogen-zmq-monitor-{id(self)}"
        self._router.monitor(monitor_addr, _MONITOR_EVENTS)
        self._monitor = self._ctx.socket(zmq.PAIR)
        self._monitor.setsockopt(zmq.RCVHWM, 0)  # never drop an event (libzmq would block its I/O thread)
        self._monitor.connect(monitor_addr)
        bind_host = "*" if host in ("0.0.0.0", "", "*") else host
        try:
            if port == 0:
                self.port = self._router.bind_to_random_port(f"tcp://{bind_host}")
            else:
                self._router.bind(f"tcp://{bind_host}:{port}")
                self.port = port
        except zmq.ZMQError as exc:
            self._close_sockets()
            self._ctx.term()
            raise OSError(exc.errno, f"zmq port {host}:{port}: {exc}") from exc
        # replies and commands from other threads: a queue, and one byte on a socket pair to wake the poll
        self._commands: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._serials: dict[int, int] = {}  # descriptor -> serial of the connection now on it
        self._sessions: dict[int, set[str]] = {}  # serial -> session keys it created
        self._next_serial = itertools.count(1)
        self._inflight = 0
        self._stopped_accepting = threading.Event()  # set by this thread once no request is read any more
        self._dropped = 0
        self._dropped_logged_at = 0.0
        self._thread = threading.Thread(target=self._main, name="nitrogen-zmq-io", daemon=True)

    # ---- the other threads' side ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def reply(self, msg: Incoming, frame: bytes | None) -> None:
        """Send ``frame`` to the message's sender (None: no reply); frees its in-flight slot."""
        self._command(("reply", msg, frame))

    def stop_accepting(self, timeout: float = 5.0) -> None:
        """No new requests; replies still go out. Blocks until the thread has stopped reading, so every
        request read before has been handed to ``on_message`` by the time this returns."""
        self._command(("stop",))
        if self._thread.is_alive():
            self._stopped_accepting.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued, close the sockets, end the thread (blocking, up to ``timeout``)."""
        if self._thread.is_alive():
            self._command(("close",))
            self._thread.join(timeout)
        elif self._thread.ident is None:  # never started
            self._close_sockets()
        self._wake_r.close()
        self._wake_w.close()
        self._ctx.term()

    def _accepting(self) -> bool:
        return not self._stopped_accepting.is_set()

    def _command(self, command: tuple) -> None:
        self._commands.put(command)
        try:
            self._wake_w.send(b"\0")
        except OSError:  # closed: the thread has ended, nothing left to wake
            pass

    # ---- the I/O thread -------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported: the server stops, loudly
            self._on_fatal(exc)
        finally:
            self._close_sockets()

    def _close_sockets(self) -> None:
        try:
            self._router.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)
        self._router.close(linger=1000)

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._monitor, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        reading = False
        while True:
            want = self._accepting() and self._inflight < self._max_inflight
            if want != reading:
                if want:
                    poller.register(self._router, zmq.POLLIN)
                else:
                    poller.unregister(self._router)
                reading = want
            try:
                ready = dict(poller.poll())
            except zmq.ZMQError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            self._drain_monitor()
            if self._wake_r.fileno() in ready and self._run_commands():  # plain sockets come back as fds
                return
            if self._router in ready and self._accepting():
                self._read_messages()

    def _run_commands(self) -> bool:
        """Apply queued replies and commands; True when told to close."""
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return False
            if command[0] == "reply":
                self._inflight -= 1
                self._send_reply(command[1], command[2])
            elif command[0] == "stop":
                self._stopped_accepting.set()
            elif command[0] == "close":
                return True

    def _send_reply(self, msg: Incoming, frame: bytes | None) -> None:
        if frame is None:
            return
        self._drain_monitor()  # the latest word on who is still connected, right before the send
        if self._serials.get(msg.fd) != msg.serial:  # it left: its routing id may be someone else's now
            log.info("%s left before its reply", msg.key)
            self._connection_closed(msg.serial)
            self._on_closed(msg.key)  # the session this request created after the disconnect, too
            return
        try:
            self._router.send_multipart([*msg.envelope, frame], zmq.NOBLOCK)
        except zmq.Again:
            log.warning("%s reply dropped: the peer's queue is full", msg.key)

    def _read_messages(self) -> None:
        for _ in range(READ_BURST):
            if self._inflight >= self._max_inflight or not self._accepting():
                return
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._drain_monitor()
            try:
                fd = frames[-1].get(zmq.SRCFD)
            except zmq.ZMQError:
                self._drop_unattributed()
                continue
            serial = self._serials.get(fd)
            if serial is None:
                # read after its connection's DISCONNECTED event: the sender is gone, and its routing id
                # may soon be someone else's. (A new connection's ACCEPTED event always comes first:
                # libzmq emits it on accept, before the connection can deliver a message.)
                log.debug("message from a closed zmq connection dropped")
                continue
            envelope, body = split_envelope([f.bytes for f in frames])
            key = f"zmq:{serial}:{'.'.join(f.hex() for f in envelope[:-1])}"
            self._sessions.setdefault(serial, set()).add(key)
            self._inflight += 1
            self._on_message(Incoming(key, fd, serial, envelope, body))

    def _drop_unattributed(self) -> None:
        self._dropped += 1
        now = time.monotonic()
        if now - self._dropped_logged_at >= DROP_LOG_PERIOD_S:
            log.warning("zmq: dropped %d message(s) from peers that do not speak ZeroMQ 3+ (ZMTP 1.0/2.0 or "
                        "not ZeroMQ at all: a port scanner?); they get no reply", self._dropped)
            self._dropped, self._dropped_logged_at = 0, now

    def _drain_monitor(self) -> None:
        """Apply every connection event libzmq has reported so far (never blocks)."""
        while True:
            try:
                event = parse_monitor_message(self._monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            fd = int(event["value"])
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._connection_closed(self._serials.get(fd))  # whatever was on this descriptor is gone
                self._serials[fd] = next(self._next_serial)
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._connection_closed(self._serials.pop(fd, None))

    def _connection_closed(self, serial: int | None) -> None:
        for key in self._sessions.pop(serial, ()) if serial is not None else ():
            self._on_closed(key)
