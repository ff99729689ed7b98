"""Several engines (one per device) behind one ``new_session``: a server past one GPU.

A session is placed on the engine with the fewest live sessions and stays there (its frame features
live on that device). Engines share one read of the checkpoint.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .devices import parse_devices
from .engine import InferenceEngine
from .options import EngineOptions
from .session import InferenceSession
from .sources import load_source

logger = logging.getLogger(__name__)


class EnginePool:
    """One :class:`InferenceEngine` per device; sessions go to the least-loaded one."""

    def __init__(self, engines: Sequence[InferenceEngine]) -> None:
        if not engines:
            raise ValueError("an engine pool needs at least one engine")
        self.engines = list(engines)
        for index, engine in enumerate(self.engines):
            engine.index = index
        self._sessions: list[weakref.WeakSet[InferenceSession]] = [weakref.WeakSet() for _ in self.engines]

    @classmethod
    def from_checkpoint(cls, path_or_demo: str | Path, devices: str | Sequence[str | None] | None = None,
                        options: EngineOptions | None = None, old_layout: bool | None = None,
                        adapters: Sequence[str | Path] = ()) -> EnginePool:
        """``devices``: ``"cuda:0,cuda:1"``, ``"cuda:all"``, ``"cpu,cpu"``, a list, or None (best one)."""
        wanted = parse_devices(devices) if devices is None or isinstance(devices, str) else list(devices)
        source = load_source(path_or_demo, adapters)
        engines: list[InferenceEngine] = []
        try:
            for device in wanted:
                engines.append(InferenceEngine.from_loaded(source, device, options, old_layout))
        except BaseException:
            for engine in engines:
                engine.close()
            raise
        if len(engines) > 1:
            logger.info("%d engines: %s", len(engines), ", ".join(str(e.device) for e in engines))
        return cls(engines)

    @property
    def primary(self) -> InferenceEngine:
        """The first engine: what describes the model (all engines hold the same one)."""
        return self.engines[0]

    def load(self) -> list[int]:
        """Live sessions per engine."""
        return [len(s) for s in self._sessions]

    def new_session(self, **settings: Any) -> InferenceSession:
        """A session on the least-loaded engine (ties: the lowest index)."""
        index = min(range(len(self.engines)), key=lambda i: (len(self._sessions[i]), i))
        session = InferenceSession(self.engines[index], **settings)
        self._sessions[index].add(session)
        return session

    def close(self) -> None:
        for engine in self.engines:
            engine.close()
