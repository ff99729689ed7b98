"""Which backend plays an env id: the first that claims it, else an error listing them all."""

from __future__ import annotations

from .atari import AtariBackend
from .backend import Backend, EnvIdError
from .consoles import RetroBackend
from .doom import DoomBackend

BACKENDS: tuple[type[Backend], ...] = (AtariBackend, DoomBackend, RetroBackend)


def backend_for(env_id: str, *, allow_menu: bool = False) -> Backend:
    """The backend that plays ``env_id``, or EnvIdError listing the supported ones."""
    for cls in BACKENDS:
        if cls.claims(env_id):
            return cls(env_id, allow_menu=allow_menu)
    supported = "; ".join(f"{cls.name}: {cls.ids}" for cls in BACKENDS)
    raise EnvIdError(f"env id {env_id!r} has no pad mapping; supported backends: {supported}")
