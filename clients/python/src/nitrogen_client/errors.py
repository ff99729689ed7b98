"""Exceptions shared by both clients, so callers (and the player) handle one family whatever the port."""

from __future__ import annotations


class ClientError(RuntimeError):
    """Base of every client failure; a RuntimeError like the original ``ModelClient`` raised."""


class ServerError(ClientError):
    """The server answered ``{"status": "error"}``; ``message`` is the server's own text, unchanged."""

    def __init__(self, message: str, request_type: str | None = None) -> None:
        self.message = message
        self.request_type = request_type
        where = f" ({request_type})" if request_type else ""
        super().__init__(f"server error{where}: {message}")


class ProtocolError(ClientError):
    """The reply could not be understood: not the wire format this client speaks."""


class TransportError(ClientError):
    """The connection failed or dropped; the client is usable again and reconnects on the next call."""


class ServerTimeout(TransportError):
    """No reply within the timeout; the socket was replaced so the client is not left wedged."""


class CaptureEnded(Exception):
    """The frame source has no more frames (a ``--video`` played to its end): the run ends normally."""
