"""Hostile and broken clients: the server answers or drops them, and everyone else is unaffected.

Every test ends by checking that a normal request on a fresh connection is still answered correctly.
"""

from __future__ import annotations

import json
import pickle
import socket
import struct
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nitrogen_server.app import ServerThread
from server_testkit import (
    READ_TIMEOUT_S,
    ModelClient,
    TcpClient,
    assert_tcp_pred,
    assert_zmq_pred,
    frame,
    server_settings,
)

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
REFERENCE = frame(99)


def still_serving(srv) -> None:
    with TcpClient(srv.tcp_port) as c:
        assert_tcp_pred(c.request({"type": "predict", "seed": 1}, REFERENCE.tobytes()))
    with ModelClient(srv.zmq_port) as c:
        assert_zmq_pred(c.predict(REFERENCE, seed=1))


def send_and_drain(port: int, data: bytes) -> list[bytes]:
    """Send, half-close (so the server never waits for more), read every reply line until it closes."""
    with TcpClient(port, timeout=20) as c:
        try:
            c.sock.sendall(data)
            c.sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may already have answered an early framing error and closed
        return c.read_until_closed()


def assert_well_formed(lines: list[bytes]) -> None:
    for line in lines:
        reply = json.loads(line)
        assert reply["status"] in ("ok", "error"), reply
        if reply["status"] == "error":
            assert isinstance(reply["message"], str) and reply["message"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
header_fields = st.dictionaries(
    st.sampled_from(["type", "len", "width", "height", "seed", "resize_mode", "session", "game",
                     "cfg_scale", "context_length", "junk"]),
    st.sampled_from(["predict", "reset", "info", "pad", "crop"]) | st.integers(-5, 300) | json_values,
    max_size=6,
)


@FUZZ
@given(header=header_fields, payload=st.binary(max_size=600))
def test_fuzzed_json_headers(demo_server, header, payload):
    assert_well_formed(send_and_drain(demo_server.tcp_port, json.dumps(header).encode() + b"\n" + payload))


@FUZZ
@given(data=st.binary(max_size=400))
def test_fuzzed_raw_bytes(demo_server, data):
    assert_well_formed(send_and_drain(demo_server.tcp_port, data))


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(["type", "image", "seed", "session", "resize_mode"]),
                              st.sampled_from(["predict", "reset", "info"]) | json_values, max_size=4),
       junk=st.binary(max_size=64))
def test_fuzzed_zmq_messages(demo_server, fields, junk):
    with ModelClient(demo_server.zmq_port) as c:
        for reply in (c.send_bytes(pickle.dumps(fields)), c.send_bytes(junk)):
            assert reply["status"] in ("ok", "error")
            assert reply["status"] == "ok" or reply["message"]


def test_fuzzing_left_the_server_healthy(demo_server):
    still_serving(demo_server)


def test_oversize_len_gets_error_then_close(demo_server):
    lines = send_and_drain(demo_server.tcp_port, b'{"type":"predict","len":1000000000}\n' + bytes(1000))
    assert len(lines) == 1 and "'len' is 1000000000; expected an integer from 0 to 33554432" in lines[0].decode()
    lines = send_and_drain(demo_server.tcp_port, b'{"type":"predict","len":-1}\n')
    assert "'len' is -1" in lines[0].decode()
    bmp_header = b"BM" + struct.pack("<IIII", 2**31, 0, 54, 40) + bytes(12)
    lines = send_and_drain(demo_server.tcp_port, b'{"type":"predict"}\n' + bmp_header)
    assert "BMP header says 2147483648 bytes" in lines[0].decode()
    still_serving(demo_server)


def test_header_too_long_or_not_json(demo_server):
    lines = send_and_drain(demo_server.tcp_port, b'{"type":"info","x":"' + b"a" * 70000 + b'"}\n')
    assert "longer than 65536 bytes" in lines[0].decode()
    lines = send_and_drain(demo_server.tcp_port, b'{"type": predict}\n{"type":"info"}\n')
    assert len(lines) == 1 and "not valid JSON" in lines[0].decode()
    lines = send_and_drain(demo_server.tcp_port, b'["predict"]\n')
    assert "expected a JSON object" in lines[0].decode()
    still_serving(demo_server)


def test_truncated_payload(demo_server):
    lines = send_and_drain(demo_server.tcp_port, b'{"type":"predict","len":1000}\n' + bytes(500))
    assert "connection closed mid-request: got 500 of 1000 bytes" in lines[0].decode()
    lines = send_and_drain(demo_server.tcp_port, b'{"type":"predict"}\n' + bytes(1000))
    assert "closed mid-request" in lines[0].decode()
    still_serving(demo_server)


def test_slow_client_is_dropped_and_others_unaffected(demo_server):
    """A client stalls mid-header and another mid-payload; both are dropped after the read timeout
    (shortened to 1 s here) while a third client is served meanwhile."""
    with TcpClient(demo_server.tcp_port) as stall_header, TcpClient(demo_server.tcp_port) as stall_payload:
        stall_header.sock.sendall(b'{"type":"pre')
        stall_payload.sock.sendall(b'{"type":"predict"}\n' + bytes(1000))
        still_serving(demo_server)
        for c in (stall_header, stall_payload):
            lines = c.read_until_closed()
            assert len(lines) == 1 and "timed out" in lines[0].decode(), lines
    # idle between requests is fine: only a stall in the middle of a request is dropped
    with TcpClient(demo_server.tcp_port) as idle:
        time.sleep(READ_TIMEOUT_S * 1.5)
        assert idle.request({"type": "info"})["status"] == "ok"


def test_disconnect_mid_frame(demo_server):
    for partial in (b'{"type":"predict","len":500000}\n' + bytes(70000), b'{"type":"predict"}\n' + bytes(10),
                    b'{"type":"in'):
        s = socket.create_connection(("127.0.0.1", demo_server.tcp_port))
        s.sendall(partial)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
        s.close()
    with ModelClient(demo_server.zmq_port) as c:  # a REQ peer that vanishes before its reply
        c.socket.send(pickle.dumps({"type": "predict", "image": frame(3)}))
    still_serving(demo_server)


def test_abused_session_still_gives_correct_answers(demo_server):
    """The same connection keeps working after bad requests, and its answers match a clean client's."""
    with TcpClient(demo_server.tcp_port) as clean:
        want = clean.request({"type": "predict", "seed": 8}, REFERENCE.tobytes())
    with TcpClient(demo_server.tcp_port) as c:
        for header, payload in (({"type": "predict", "len": 3}, b"abc"), ({"type": "x"}, b""),
                                ({"type": "predict", "len": 4, "width": 1, "height": 1}, b"\0\0\0\0")):
            assert c.request(header, payload)["status"] == "error"
        assert c.request({"type": "predict", "seed": 8}, REFERENCE.tobytes())["pred"] == want["pred"]
    assert np.isfinite(np.array(want["pred"]["j_left"])).all()


def test_zmq_message_over_the_limit_is_refused_by_the_socket(server_errors):
    """ZMQ_MAXMSGSIZE: the socket drops the peer that sends too much; the server itself never sees it."""
    with ServerThread(server_settings(max_zmq_message_bytes=100_000)) as srv:
        with ModelClient(srv.zmq_port, timeout_ms=1500) as c:
            c.socket.send(pickle.dumps({"type": "predict", "image": frame(1, 256, 256)}))  # 196 KB
            with pytest.raises(zmq.Again):
                c.socket.recv()
        with ModelClient(srv.zmq_port) as c:
            assert_zmq_pred(c.predict(frame(2, 100, 100)))


def test_inference_failure_becomes_an_error_reply(server_errors):
    """The engine fails every predict (here: it was shut down under the server); clients get error
    replies naming why, and the server, which can no longer answer a predict, stops itself loudly
    (issue 19: never a port that looks alive while nothing behind it works)."""
    from nitrogen import EnginePool

    engine = EnginePool.from_checkpoint("demo", devices="cpu")
    srv = ServerThread(server_settings(), engine=engine).start()
    try:
        engine.close()
        with TcpClient(srv.tcp_port) as c:
            reply = c.request({"type": "predict"}, frame(1).tobytes())
            assert reply["status"] == "error" and "inference engine is closed" in reply["message"]
        deadline = time.monotonic() + 10
        while srv.server.failure is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.server.failure == "engine 0 (cpu) stopped: its worker thread ended"
        srv._thread.join(20)
        assert not srv._thread.is_alive(), "the server did not stop itself"
    finally:
        srv.stop()
    logged = [r for r in server_errors if "predict failed" in r.getMessage() or "stopped:" in r.getMessage()]
    assert len(logged) == 2  # the predict (with a traceback) and the part that stopped, both ERROR
    for record in logged:
        server_errors.remove(record)
