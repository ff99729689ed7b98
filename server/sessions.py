"""Per-client inference sessions: created on first predict, serialised by a lock, forgotten when idle."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("nitrogen_server.sessions")

SessionFactory = Callable[..., Any]  # (**overrides) -> nitrogen.InferenceSession


@dataclass
class SessionEntry:
    """One client's library session plus what the server keeps beside it."""

    key: str
    session: Any
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def touch(self) -> None:
        self.last_used = time.monotonic()


class SessionRegistry:
    """Maps client keys (a ZeroMQ connection, a TCP connection, or a client-chosen name) to sessions.

    Only used from the event loop thread, so it needs no locking of its own.
    """

    def __init__(self, factory: SessionFactory, idle_s: float, max_sessions: int = 1024) -> None:
        self._factory = factory
        self._idle_s = idle_s
        self._max = max_sessions
        self._entries: dict[str, SessionEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> SessionEntry | None:
        return self._entries.get(key)

    @property
    def max_sessions(self) -> int:
        return self._max

    def entries(self) -> list[SessionEntry]:
        """The sessions now; safe from another thread (the live view's): list() of a dict view runs
        in C without releasing the GIL, so it never sees the dict mid-change."""
        return list(self._entries.values())

    def create(self, key: str, **overrides: Any) -> SessionEntry:
        """A new session for `key` (replacing any old one); ValueError for settings the model refuses."""
        if key not in self._entries and len(self._entries) >= self._max:
            self._evict_one(key)
        session = self._factory(**overrides)
        entry = SessionEntry(key, session)
        old = self._entries.get(key)
        if old is not None:
            entry.lock = old.lock  # a request waiting on the old lock keeps its place in line
        self._entries[key] = entry
        engine = session.engine
        log.info("session %s started on engine %d (%s) (%d open)", key, engine.index, engine.device,
                 len(self._entries))
        return entry

    def _evict_one(self, newcomer: str) -> None:
        """At the limit, the least recently used idle session makes room (each holds frames, on the
        GPU too): a client opening sessions without end cannot exhaust memory."""
        idle = [e for e in self._entries.values() if not e.lock.locked()]
        if not idle:
            raise ValueError(f"too many sessions ({self._max}, all busy); retry later")
        victim = min(idle, key=lambda e: e.last_used)
        del self._entries[victim.key]
        log.warning("session limit %d reached: dropped least recently used %s for %s",
                    self._max, victim.key, newcomer)

    def get_or_create(self, key: str) -> SessionEntry:
        entry = self._entries.get(key)
        return entry if entry is not None else self.create(key)

    def drop(self, key: str) -> None:
        if self._entries.pop(key, None) is not None:
            log.info("session %s closed (%d open)", key, len(self._entries))

    def expire_idle(self) -> list[str]:
        """Forget sessions unused for longer than the idle limit (never one with a request running)."""
        limit = time.monotonic() - self._idle_s
        stale = [k for k, e in self._entries.items() if e.last_used < limit and not e.lock.locked()]
        for key in stale:
            del self._entries[key]
            log.info("session %s expired after %.0f s idle (%d open)", key, self._idle_s, len(self._entries))
        return stale

    async def run_expiry(self) -> None:
        """Background task: check for idle sessions a few times per idle period."""
        interval = max(0.05, min(30.0, self._idle_s / 4))
        while True:
            await asyncio.sleep(interval)
            self.expire_idle()
