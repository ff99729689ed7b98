"""Issue 22, point 5: the server on an event loop like Windows' Proactor loop, run on Linux.

Windows' default loop has neither ``add_reader`` (which ``zmq.asyncio`` needs: the ZeroMQ port used to
die there) nor ``add_signal_handler`` (so Ctrl+C skipped the graceful stop). A real server process runs
under a loop whose two methods raise NotImplementedError, as the Proactor loop's do; it must answer
golden predicts on both ports and stop gracefully on SIGINT (Ctrl+C). Windows itself never ran this.
"""

from __future__ import annotations

import signal

import pytest
from process_kit import ServerProcess, golden_round

pytestmark = pytest.mark.timeout(240)

SCRIPT = """
import asyncio, sys
from nitrogen_server import cli

class ProactorLike(asyncio.SelectorEventLoop):
    def add_reader(self, *args, **kwargs):
        raise NotImplementedError("no add_reader (like Windows' ProactorEventLoop)")
    def add_signal_handler(self, *args, **kwargs):
        raise NotImplementedError("no add_signal_handler (like every Windows loop)")

class Policy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        return ProactorLike()

asyncio.set_event_loop_policy(Policy())
sys.exit(cli.main(sys.argv[1:]))
"""


def test_both_ports_and_ctrl_c_work_without_add_reader_or_signal_handlers(golden_dir, golden) -> None:
    g = golden("tiny-a")
    srv = ServerProcess(str(golden_dir / "tiny-a.pt"), launcher=("-c", SCRIPT))
    try:
        golden_round(srv, "zmq", g)
        golden_round(srv, "tcp", g)
        srv.proc.send_signal(signal.SIGINT)  # what Ctrl+C delivers
        code = srv.wait_exit(60)
    finally:
        srv.stop()
    text = srv.output()
    assert code == 0, text
    assert "received SIGINT" in text and "shutting down" in text and text.rstrip().endswith("stopped"), text
    assert " ERROR " not in text and "Traceback" not in text, text
