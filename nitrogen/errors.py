"""Exceptions the library raises on purpose, so callers can tell bad files from bugs."""


class NitrogenError(Exception):
    """Base class of the library's own errors."""


class CheckpointError(NitrogenError):
    """The checkpoint file is missing, unsafe, truncated or not a NitroGen checkpoint."""


def refusal_reason(exc: Exception) -> str:
    """The one paragraph of torch's weights-only refusal that names what a file asked for."""
    paragraphs = [p.strip() for p in str(exc).split("\n\n") if p.strip()]
    named = [p for p in paragraphs if "GLOBAL" in p or "global" in p]
    return " ".join((named or paragraphs[-1:] or ["unknown reason"])[0].split())


class EngineFailedError(NitrogenError, RuntimeError):
    """The engine's device is in a state no retry can fix (a poisoned CUDA context, a dead worker).

    Every job it held and every later submit fails with this; only a new process can serve again.
    """
