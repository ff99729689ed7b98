"""nitrogen-server: serves the NitroGen policy over ZeroMQ+pickle (5555) and newline-JSON TCP (5556)."""

from .config import ServerSettings

__all__ = ["ServerSettings", "__version__"]
__version__ = "0.1.0"
