"""Servers for the server tests: in-process (own thread and event loop), real sockets, ephemeral ports."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from nitrogen_server.app import ServerThread
from server_testkit import server_settings


class _ErrorRecorder(logging.Handler):
    """Collects ERROR records: an internal error or an asyncio task crash fails the suite."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("nitrogen_server") or "nitrogen_server" in self._text(record):
            self.records.append(record)

    @staticmethod
    def _text(record: logging.LogRecord) -> str:
        trace = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        return record.getMessage() + trace


@pytest.fixture(scope="session")
def server_errors() -> Iterator[list[logging.LogRecord]]:
    recorder = _ErrorRecorder()
    loggers = [logging.getLogger(name) for name in ("nitrogen_server", "asyncio")]
    for logger in loggers:
        logger.addHandler(recorder)
    yield recorder.records
    for logger in loggers:
        logger.removeHandler(recorder)
    problems = [f"{r.name}: {r.getMessage()}" for r in recorder.records]
    assert not problems, "the server logged errors:\n" + "\n".join(problems)


@pytest.fixture(scope="session")
def demo_server(server_errors) -> Iterator[ServerThread]:
    """One demo-model server shared by the protocol, load and abuse tests."""
    with ServerThread(server_settings()) as srv:
        yield srv
