"""Servers for the server tests: in-process (own thread and event loop), real sockets, ephemeral ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_testkit import server_settings

from nitrogen_server.app import ServerThread


@pytest.fixture(scope="session")
def demo_server() -> Iterator[ServerThread]:
    """One demo-model server shared by the protocol, load and abuse tests."""
    with ServerThread(server_settings()) as srv:
        yield srv
