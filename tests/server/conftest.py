"""Servers for the server tests: in-process (own thread and event loop), real sockets, ephemeral ports."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from nitrogen_server.app import ServerThread
from process_kit import ServerProcess, golden_round
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


@pytest.fixture
def tiny_a_process(golden_dir, golden) -> Iterator[tuple[ServerProcess, dict]]:
    """A fresh server process on the golden tiny-a checkpoint, warmed up on both ports; afterwards it
    must have logged no ERROR and stop cleanly (exit 0)."""
    srv = ServerProcess(str(golden_dir / "tiny-a.pt"))
    g = golden("tiny-a")
    try:
        golden_round(srv, "tcp", g)  # warm both ports up before measuring
        golden_round(srv, "zmq", g)
        yield srv, g
        assert not srv.errors_logged(), "server logged errors:\n" + "".join(srv.errors_logged())
    finally:
        code = srv.stop()
    assert code == 0, f"server exited {code}:\n{srv.log()}"
