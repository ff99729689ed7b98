"""No part of the server dies quietly.

Every long-lived part (the ZeroMQ socket thread, the TCP listener, each engine's worker, the recorder's
writer, the HTTP listener, the session expiry task) is either built to survive whatever one request or
connection does to it, or watched here. A part that stops anyway stops the whole server: one ERROR line
naming the part and the cause, the usual graceful shutdown, and a non-zero exit, so that Docker's restart
policy or Kubernetes brings a fresh process. Until then `health()` names the problem, and `info` (what
the health check asks) answers with an error instead of "ok".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("nitrogen_server")
CHECK_INTERVAL_S = 0.5
EXIT_FAILED = 1

Check = Callable[[], "str | None"]  # None while the part is fine, else what is wrong with it


class Supervisor:
    """Watches the parts; the first failure triggers `on_failure` (the server's stop) exactly once."""

    def __init__(self, on_failure: Callable[[], None]) -> None:
        self.failure: str | None = None
        self._on_failure = on_failure
        self._checks: list[tuple[str, Check]] = []
        self._task: asyncio.Task | None = None
        self._stopping = False

    def watch(self, part: str, check: Check) -> None:
        """Poll ``check`` every CHECK_INTERVAL_S: for parts that are threads or hold no task."""
        self._checks.append((part, check))

    def watch_task(self, part: str, task: asyncio.Task) -> None:
        """A task that ends while the server is not stopping is a failure, whatever the reason."""
        def done(t: asyncio.Task) -> None:
            if self._stopping:
                return
            cause = "cancelled" if t.cancelled() else repr(t.exception()) if t.exception() else "returned"
            self.fail(part, cause)
        task.add_done_callback(done)

    def fail(self, part: str, cause: object) -> None:
        """Report a part that stopped (any thread's callback must hop to the loop first)."""
        if self.failure is not None or self._stopping:
            return
        if isinstance(cause, BaseException):
            cause = f"{type(cause).__name__}: {cause}"
        self.failure = f"{part} stopped: {cause}"
        log.error("%s; shutting the server down (exit %d) so that it can be restarted",
                  self.failure, EXIT_FAILED)
        self._on_failure()

    def health(self) -> str | None:
        """None if every part can answer, else why not (read by `info`, so by the health check)."""
        if self.failure is not None:
            return self.failure
        for part, check in self._checks:
            problem = check()
            if problem:
                return f"{part}: {problem}"
        return None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll(), name="supervisor")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            for part, check in self._checks:
                try:
                    problem = check()
                except Exception as exc:  # noqa: BLE001 - a check that breaks is a failure too
                    problem = f"its check failed: {type(exc).__name__}: {exc}"
                if problem:
                    self.fail(part, problem)
                    return

    def stopping(self) -> None:
        """Shutdown has begun: parts ending now are expected."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
