"""Port 5556 client: one JSON header line + a binary payload per request, one JSON line per reply.

The socket is opened lazily and dropped on any timeout or I/O error: a half-read reply would
desynchronise every later one, so the next call simply starts a fresh connection. Every wait (connect,
send, receive) runs in WAIT_SLICE_S slices, so Ctrl+C stops a Windows player within one. IPv4
addresses are tried first: the server listens on IPv4, and Windows, which lists ``::1`` first for
``localhost``, spends about 2 s on each refused IPv6 connect before trying 127.0.0.1.
"""

from __future__ import annotations

import errno
import json
import logging
import select
import socket
import time
from typing import Any, Literal

from .base import WAIT_SLICE_S, PolicyClient, Prediction, check_reply, parse_prediction, parse_timing
from .errors import ClientError, ProtocolError, ServerTimeout, TransportError
from .images import encode_png, to_rgb_array
from .wire import DEFAULT_RESIZE_MODE, RESIZE_MODES, TCP_PORT, ResizeMode

log = logging.getLogger(__name__)

Encoding = Literal["png", "raw"]
_IN_PROGRESS = {0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, 10035}  # 10035: WSAEWOULDBLOCK


def _left(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return min(remaining, WAIT_SLICE_S)


def _connect_one(info: tuple[Any, ...], deadline: float) -> socket.socket:
    """A non-blocking connect watched in slices (a blocking one cannot be interrupted on Windows)."""
    family, kind, proto, _, addr = info
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        err = sock.connect_ex(addr)
        if err not in _IN_PROGRESS:
            raise OSError(err, f"connect to {addr[0]} port {addr[1]} failed (error {err})")
        while True:
            _, writable, failed = select.select([], [sock], [sock], _left(deadline))
            if writable or failed:
                break
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"connect to {addr[0]} port {addr[1]} failed (error {err})")
        return sock
    except BaseException:
        sock.close()
        raise


def connect_ipv4_first(host: str, port: int, timeout_s: float) -> socket.socket:
    """Connect to the first address of ``host`` that answers, IPv4 ones first, within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # stable: keeps the resolver's order within
    error: OSError | None = None
    for info in infos:
        try:
            return _connect_one(info, deadline)
        except TimeoutError:
            raise
        except OSError as exc:
            error = exc
    raise error or OSError(f"{host} has no address")


class TcpClient(PolicyClient):
    """Client for the newline-JSON port with the same interface and return types as ModelClient.

    ``encoding``: ``"png"`` (lossless, smaller) or ``"raw"`` (RGB bytes with ``width``/``height``,
    no encoding cost). ``resize_mode``: how the server squares a non-square frame: ``"stretch"`` (what
    the model saw in training and the original's default), ``"pad"`` or ``"crop"``; None sends none
    and leaves it to the server's default.
    ``session``: an optional name sent with every request so that the frame history survives a
    reconnect (otherwise a connection is a session). ``last_repeat`` holds the ``repeat``
    (action_downsample_ratio) of the last predict reply.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = TCP_PORT,
        *,
        timeout_s: float = 30.0,
        encoding: Encoding = "png",
        resize_mode: ResizeMode | None = DEFAULT_RESIZE_MODE,
        max_reply_bytes: int = 16 << 20,
        session: str | None = None,
    ) -> None:
        if encoding not in ("png", "raw"):
            raise ValueError(f"encoding must be 'png' or 'raw', got {encoding!r}")
        if resize_mode is not None and resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be None or one of {RESIZE_MODES}, got {resize_mode!r}")
        self.host = host
        self.port = int(port)
        self.timeout_s = float(timeout_s)
        self.encoding = encoding
        self.resize_mode = resize_mode
        self.max_reply_bytes = int(max_reply_bytes)
        self.session = session
        self.last_repeat: int | None = None
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._closed = False
        log.info("model client for %s:%d (tcp, %s)", host, self.port, encoding)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                sock = connect_ipv4_first(self.host, self.port, self.timeout_s)
            except TimeoutError:
                raise ServerTimeout(
                    f"connecting to {self.address} timed out after {self.timeout_s:g} s"
                ) from None
            except OSError as exc:
                raise TransportError(f"cannot connect to {self.address}: {exc}") from exc
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._buffer.clear()
        return self._sock

    def _drop(self) -> None:
        """Forget the connection (and any partial reply) so the next call reconnects cleanly."""
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._buffer.clear()

    def _send_all(self, sock: socket.socket, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            sock.settimeout(_left(deadline))
            try:
                view = view[sock.send(view) :]
            except TimeoutError:
                continue

    def _read_line(self, sock: socket.socket, deadline: float) -> bytes:
        """Read up to the next newline, over as many recv calls as it takes; keep what follows."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > self.max_reply_bytes:
                raise ProtocolError(
                    f"reply from {self.address} exceeds {self.max_reply_bytes} bytes without a newline"
                )
            sock.settimeout(_left(deadline))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise TransportError(f"{self.address} closed the connection before a full reply line")
            self._buffer += chunk

    def request(self, header: dict[str, Any], payload: bytes = b"") -> dict[str, Any]:
        """Send a header (+ payload), return the parsed reply; error replies raise ServerError."""
        if self._closed:
            raise ClientError(f"client for {self.address} is closed")
        request_type = str(header.get("type"))
        if self.session is not None and "session" not in header:
            header = {**header, "session": self.session}
        sock = self._connect()
        data = json.dumps(header, separators=(",", ":")).encode() + b"\n"
        deadline = time.monotonic() + self.timeout_s
        try:
            self._send_all(sock, data + payload, deadline)  # header and payload leave together
            line = self._read_line(sock, deadline)
        except TimeoutError:
            self._drop()
            raise ServerTimeout(
                f"no reply to {request_type!r} from {self.address} within {self.timeout_s:g} s "
                "(is nitrogen-server running there?)"
            ) from None
        except (TransportError, ProtocolError):
            self._drop()
            raise
        except OSError as exc:
            self._drop()
            raise TransportError(f"{request_type!r} to {self.address} failed: {exc}") from exc
        try:
            reply = json.loads(line)
        except ValueError as exc:
            self._drop()
            raise ProtocolError(f"reply from {self.address} is not JSON: {line[:200]!r}") from exc
        return check_reply(reply, request_type)

    def predict(self, image: Any, seed: int | None = None) -> Prediction:
        """Predict from an RGB frame (any size; the server squares it per ``resize_mode``)."""
        arr = to_rgb_array(image)
        header: dict[str, Any] = {"type": "predict"}
        if self.encoding == "png":
            payload = encode_png(arr)
        else:
            payload = arr.tobytes()  # C order: rows of RGB triples, as the protocol wants
            header.update(width=int(arr.shape[1]), height=int(arr.shape[0]))
        header["len"] = len(payload)
        if seed is not None:
            header["seed"] = int(seed)
        if self.resize_mode is not None:
            header["resize_mode"] = self.resize_mode
        reply = self.request(header, payload)
        if "pred" not in reply:
            raise ProtocolError(f"predict reply lacks 'pred': keys {sorted(reply)}")
        repeat = reply.get("repeat")
        self.last_repeat = int(repeat) if isinstance(repeat, (int, float)) else None
        self.last_timing = parse_timing(reply)
        return parse_prediction(reply["pred"])

    def close(self) -> None:
        """Close the connection; later calls raise ClientError."""
        if not self._closed:
            self._closed = True
            self._drop()
