"""Clients for nitrogen-server and the ``nitrogen-play`` Windows player (no torch needed).

``ModelClient`` speaks the ZeroMQ port (5555), ``TcpClient`` the newline-JSON port (5556); both return
``{"j_left": (H, 2), "j_right": (H, 2), "buttons": (H, 21)}`` float32 arrays.
"""

from .base import BUTTON_NAMES, PolicyClient, Prediction, parse_prediction
from .errors import ClientError, ProtocolError, ServerError, ServerTimeout, TransportError
from .tcp_client import TcpClient
from .wire import TCP_PORT, ZMQ_PORT
from .zmq_client import ModelClient

__all__ = [
    "BUTTON_NAMES",
    "ClientError",
    "ModelClient",
    "PolicyClient",
    "Prediction",
    "ProtocolError",
    "ServerError",
    "ServerTimeout",
    "TcpClient",
    "TransportError",
    "connect",
    "parse_prediction",
]
__version__ = "0.1.0"


def connect(
    host: str = "localhost", port: int = ZMQ_PORT, protocol: str = "auto", timeout_s: float = 30.0
) -> PolicyClient:
    """A client for ``host:port``; ``protocol``: "zmq", "tcp", or "auto" (5556 -> tcp, else zmq)."""
    if protocol == "auto":
        protocol = "tcp" if int(port) == TCP_PORT else "zmq"
    if protocol == "zmq":
        return ModelClient(host, port, timeout_ms=int(timeout_s * 1000))
    if protocol == "tcp":
        return TcpClient(host, port, timeout_s=timeout_s)
    raise ValueError(f"protocol must be 'auto', 'zmq' or 'tcp', got {protocol!r}")
