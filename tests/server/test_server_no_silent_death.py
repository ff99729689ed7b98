"""Issue 19: junk on the ZeroMQ port, and parts of the server that stop, seen from outside.

A junk connection (random bytes, a ZMTP greeting with any mechanism, a handshake cut at any byte) must
leave both ports answering golden predicts exactly. A part that stops anyway (its socket closed
underneath it, an engine whose device is lost) must take the process down with an ERROR line naming the
part and the cause and a non-zero exit; meanwhile the health check is red.
"""

from __future__ import annotations

import pickle
import random
import socket
import struct
import subprocess
import sys

import pytest
from process_kit import REPO, ServerProcess, golden_round
from server_testkit import ModelClient, TcpClient

pytestmark = pytest.mark.timeout(300)

MECHANISMS = (b"NULL", b"PLAIN", b"CURVE", b"GSSAPI", b"XYZZY", b"")


def greeting(mechanism: bytes = b"NULL", major: int = 3, minor: int = 0, as_server: int = 0) -> bytes:
    """A ZMTP 3.x greeting (RFC 23): signature, version, mechanism (20 bytes), as-server, filler."""
    return (b"\xff" + b"\0" * 8 + b"\x7f" + bytes([major, minor]) + mechanism.ljust(20, b"\0")
            + bytes([as_server]) + b"\0" * 31)


def ready_command(socket_type: bytes = b"REQ") -> bytes:
    """NULL mechanism's READY command with the Socket-Type property."""
    body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    return b"\x04" + bytes([len(body)]) + body


def req_message(payload: bytes) -> bytes:
    """What a REQ socket sends: an empty delimiter frame (more), then the body (a long frame if needed)."""
    body = (b"\x00" + bytes([len(payload)]) if len(payload) < 256 else b"\x02" + struct.pack(">Q", len(payload)))
    return b"\x01\x00" + body + payload


def junk_connection(port: int, *parts: bytes, wait_reply: float = 0.3) -> bytes:
    """Connect, send each part and read what comes back for a moment, close: what a scanner does.

    A real client sends its handshake in stages, each after the server's answer (libzmq drops a peer
    whose bytes run ahead of the greeting exchange), so multi-part data is sent the same way."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.settimeout(wait_reply)
        for part in parts:
            if part:
                s.sendall(part)
            try:
                while chunk := s.recv(4096):
                    got += chunk
            except OSError:
                pass
    return got


def zmq_info_answers(srv: ServerProcess) -> None:
    with ModelClient(srv.zmq_port, timeout_ms=10_000) as c:
        assert c.call({"type": "info"})["status"] == "ok"


def test_the_reported_junk_connection_no_longer_disables_the_zmq_port(tiny_a_process) -> None:
    srv, g = tiny_a_process
    random.seed(0)  # the reproduction, byte for byte
    junk_connection(srv.zmq_port, bytes(random.getrandbits(8) for _ in range(500)), wait_reply=1.0)
    zmq_info_answers(srv)
    golden_round(srv, "zmq", g)
    golden_round(srv, "tcp", g)
    assert "do not speak ZeroMQ 3+" in srv.log(200)  # the operator is told what was dropped


def test_random_junk_greetings_and_cut_handshakes_leave_both_ports_exact(tiny_a_process) -> None:
    srv, g = tiny_a_process
    port = srv.zmq_port
    rng = random.Random(19)
    for length in (1, 2, 9, 10, 11, 12, 64, 65, 300, 500, 4096):
        for _ in range(4):
            junk_connection(port, rng.randbytes(length), wait_reply=0.05)
    zmq_info_answers(srv)
    for mechanism in MECHANISMS:
        for minor, as_server in ((0, 0), (1, 1)):
            junk_connection(port, greeting(mechanism, 3, minor, as_server) + rng.randbytes(40), wait_reply=0.1)
    for major in (1, 2, 4, 255):  # other protocol versions, then a valid greeting with junk after it
        junk_connection(port, greeting(b"NULL", major) + rng.randbytes(100), wait_reply=0.05)
    zmq_info_answers(srv)
    g3 = greeting()
    handshake = [g3[:10], g3[10:], ready_command(), req_message(pickle.dumps({"type": "info"}))]
    whole = b"".join(handshake)
    for cut in range(len(whole)):  # a connection closed at every byte of a real client's handshake
        parts, left = [], cut
        for part in handshake:
            parts.append(part[:left])
            left = max(0, left - len(part))
        junk_connection(port, *parts, wait_reply=0.01)
    # positive control: the whole handshake, hand-made, is a real request that gets a real reply
    reply = junk_connection(port, *handshake, wait_reply=1.0)
    assert b"status" in reply and b"ok" in reply, reply[-200:]
    for _ in range(3):
        golden_round(srv, "zmq", g)
        golden_round(srv, "tcp", g)
    srv.assert_alive()


# ---- parts that stop: a real server process with one part broken from inside ------------------------

BREAKERS = {
    # the ZeroMQ socket thread handed a reply for no request: it fails inside its loop (no socket is
    # touched from another thread, which libzmq forbids)
    "zmq": "self.zmq._io._command(('reply', None, b'x'))",
    # the TCP listener closed underneath the frontend
    "tcp": "self.tcp._server.close()",
    # the engine's device lost mid-service: the next batch raises what CUDA raises for a poisoned context
    "engine": ("import torch\n"
               "    def lost(jobs):\n"
               "        raise torch.AcceleratorError('CUDA error: an illegal memory access was encountered')\n"
               "    for e in self.engines: e.run_batch = lost"),
}
SCRIPT = """
import sys
from nitrogen_server import app, cli
started = app.NitrogenServer.start
async def start(self):
    await started(self)
    {breaker}
app.NitrogenServer.start = start
sys.exit(cli.main(sys.argv[1:]))
"""


def run_broken(golden_dir, part: str) -> ServerProcess:
    return ServerProcess(str(golden_dir / "tiny-a.pt"), "--no-warmup",
                         launcher=("-c", SCRIPT.format(breaker=BREAKERS[part])))


@pytest.mark.parametrize("part,named", [("zmq", "zmq port stopped: AttributeError"),
                                        ("tcp", "tcp port stopped: its listening socket closed")])
def test_a_frontend_that_stops_ends_the_process_loudly(golden_dir, part, named) -> None:
    srv = run_broken(golden_dir, part)
    try:
        code = srv.wait_exit(120)
    finally:
        srv.stop()
    out = srv.output()
    errors = [line for line in out.splitlines() if " ERROR " in line]
    assert code == 1, out
    assert any(named in line and "shutting the server down" in line for line in errors), out
    assert "stopped" in out.splitlines()[-1], out  # the graceful shutdown still ran to its end


def test_a_lost_device_fails_requests_turns_health_red_and_exits(golden_dir, golden) -> None:
    g = golden("tiny-a")
    srv = run_broken(golden_dir, "engine")
    try:
        with TcpClient(srv.tcp_port) as c:
            img = g["image_0"]
            reply = c.request({"type": "predict", "len": img.nbytes, "width": img.shape[1],
                               "height": img.shape[0]}, img.tobytes())
        assert reply["status"] == "error" and "out of service" in reply["message"], reply
        health = subprocess.run([sys.executable, "-m", "nitrogen_server", "healthcheck", "--zmq-port",
                                 str(srv.zmq_port), "--tcp-port", str(srv.tcp_port), "--timeout", "3"],
                                check=False, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert health.returncode == 1, health.stderr
        assert "unhealthy" in health.stderr
        code = srv.wait_exit(60)
    finally:
        srv.stop()
    text = srv.output()
    assert code == 1, text
    assert "engine 0 (cpu) stopped" in text and "illegal memory access" in text, text
