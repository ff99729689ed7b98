"""Exceptions the library raises on purpose, so callers can tell bad files from bugs."""


class NitrogenError(Exception):
    """Base class of the library's own errors."""


class CheckpointError(NitrogenError):
    """The checkpoint file is missing, unsafe, truncated or not a NitroGen checkpoint."""
