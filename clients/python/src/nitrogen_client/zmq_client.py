"""Port 5555 client: ZeroMQ REQ + pickled dicts, with the original ``ModelClient`` API.

A plain REQ socket that misses a reply is stuck (it refuses to send again, and a late reply would be
taken for the next one); on a timeout this client throws that socket away and connects a fresh one.
"""

from __future__ import annotations

import logging
import pickle
import time
from typing import Any

import numpy as np
import zmq
from PIL import Image

from . import reply_pickle
from .base import WAIT_SLICE_S, PolicyClient, Prediction, check_reply, parse_prediction, parse_timing
from .errors import ClientError, ProtocolError, ServerTimeout, TransportError
from .wire import ZMQ_PORT

log = logging.getLogger(__name__)


def loads_reply(data: bytes) -> Any:
    """Decode one reply message with the restricted unpickler (nitrogen_client.reply_pickle)."""
    try:
        return reply_pickle.loads(data)
    except Exception as exc:  # pickle raises a zoo of types on garbage
        raise ProtocolError(f"reply is not a valid restricted pickle ({len(data)} bytes): {exc}") from exc


class ModelClient(PolicyClient):
    """Client for the ZeroMQ port; drop-in for the original ``nitrogen.inference_client.ModelClient``.

    ``session``: an optional id sent with every request so that the server keeps this client's frame
    history across socket replacements (the server's ``session`` field); None sends none, like the
    original client.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = ZMQ_PORT,
        *,
        timeout_ms: int = 30_000,
        session: str | None = None,
    ) -> None:
        self.host = host
        self.port = int(port)
        self.endpoint = f"tcp://{host}:{self.port}"
        self.session = session
        self._timeout_ms = int(timeout_ms)
        self._context = zmq.Context()
        self._socket: zmq.Socket | None = None
        self._closed = False
        self._socket = self._new_socket()
        log.info("model client for %s (zmq)", self.endpoint)

    @property
    def timeout_ms(self) -> int:
        """Receive timeout in milliseconds; changing it applies to the next request."""
        return self._timeout_ms

    @timeout_ms.setter
    def timeout_ms(self, value: int) -> None:
        self._timeout_ms = int(value)
        if self._socket is not None:
            self._socket.setsockopt(zmq.RCVTIMEO, self._timeout_ms)
            self._socket.setsockopt(zmq.SNDTIMEO, self._timeout_ms)

    def _new_socket(self) -> zmq.Socket:
        sock = self._context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)  # never block close() on an unsent request
        sock.setsockopt(zmq.RCVTIMEO, self._timeout_ms)
        sock.setsockopt(zmq.SNDTIMEO, self._timeout_ms)
        sock.connect(self.endpoint)
        return sock

    def _replace_socket(self) -> None:
        """Drop the wedged REQ socket (and any late reply meant for it) and connect a new one."""
        if self._socket is not None:
            self._socket.close(linger=0)
        self._socket = self._new_socket()

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request dict, return the reply dict; error replies raise ServerError."""
        if self._closed or self._socket is None:
            raise ClientError(f"client for {self.endpoint} is closed")
        if self.session is not None and "session" not in message:
            message = {**message, "session": self.session}
        request_type = str(message.get("type"))
        try:
            self._socket.send(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
            raw = self._receive()
        except zmq.Again:
            self._replace_socket()
            raise ServerTimeout(
                f"no reply to {request_type!r} from {self.endpoint} within {self._timeout_ms / 1000:g} s "
                "(is nitrogen-server running there?)"
            ) from None
        except zmq.ZMQError as exc:
            self._replace_socket()
            raise TransportError(f"{request_type!r} to {self.endpoint} failed: {exc}") from exc
        return check_reply(loads_reply(raw), request_type)

    def _receive(self) -> bytes:
        """The reply, waiting up to the timeout in WAIT_SLICE_S polls (Ctrl+C works on Windows too)."""
        assert self._socket is not None
        deadline = time.monotonic() + self._timeout_ms / 1000
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise zmq.Again()
            if self._socket.poll(max(1, int(min(remaining, WAIT_SLICE_S) * 1000)), zmq.POLLIN):
                return self._socket.recv(zmq.NOBLOCK)

    def predict(self, image: Any, seed: int | None = None) -> Prediction:
        """Predict from an RGB frame; arrays go as they are (the server validates and says what is wrong)."""
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        if isinstance(image, np.ndarray) and image.ndim and not image.flags.c_contiguous:
            image = np.ascontiguousarray(image)  # a transposed view pickles in a form the server refuses
        message: dict[str, Any] = {"type": "predict", "image": image}
        if seed is not None:
            message["seed"] = int(seed)
        reply = self.request(message)
        if "pred" not in reply:
            raise ProtocolError(f"predict reply lacks 'pred': keys {sorted(reply)}")
        self.last_timing = parse_timing(reply)
        return parse_prediction(reply["pred"])

    def close(self) -> None:
        """Close the socket and the context; later calls raise ClientError."""
        if self._closed:
            return
        self._closed = True
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        self._context.term()
        log.info("model client for %s closed", self.endpoint)
