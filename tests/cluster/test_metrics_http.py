"""Prometheus metrics over real HTTP: a server on the golden tiny-a checkpoint answers real requests on
both ports, then /metrics is scraped and every count must match what was sent."""

from __future__ import annotations

import dataclasses
import json
import pickle
import socket
from collections.abc import Iterator

import numpy as np
import pytest
import zmq
from clusterkit import HOST, check_golden, scrape, value
from nitrogen_server.app import ServerThread
from nitrogen_server.config import ServerSettings
from nitrogen_server.protocol import PredictResult


def settings(checkpoint: str, **extra: object) -> ServerSettings:
    return ServerSettings(checkpoint=checkpoint, device="cpu", host=HOST, zmq_port=0, tcp_port=0,
                          warmup=False, max_wait_ms=1.0, **extra)


@pytest.fixture(scope="module")
def server(golden_dir) -> Iterator[ServerThread]:
    with ServerThread(settings(str(golden_dir / "tiny-a.pt"), http_port=0)) as srv:
        yield srv


class Tcp:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.file = self.sock.makefile("rb")

    def request(self, header: dict, payload: bytes = b"") -> dict:
        self.sock.sendall(json.dumps(header).encode() + b"\n" + payload)
        return json.loads(self.file.readline())

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Zmq:
    def __init__(self, port: int) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.RCVTIMEO, 30000)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://{HOST}:{port}")

    def request(self, message: dict) -> dict:
        self.sock.send(pickle.dumps(message))
        return pickle.loads(self.sock.recv())

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def test_scrape_counts_what_was_sent(server, golden):
    g = golden("tiny-a")
    port = server.server.http.port
    before = scrape(port)
    assert value(before, "nitrogen_requests_total") == 0
    assert value(before, "nitrogen_sessions_open") == 0
    assert value(before, "nitrogen_engine_queue_depth", engine="0", device="cpu") == 0
    tcp, zq = Tcp(server.tcp_port), Zmq(server.zmq_port)
    try:
        for i in range(3):  # 3 ok predicts over TCP (golden frame 0, raw 256x256)
            reply = tcp.request({"type": "predict", "seed": 100, "resize_mode": "stretch"}, g["image_0"].tobytes())
            assert reply["status"] == "ok", reply
            check_golden(reply["pred"], g, 0)
        bad = tcp.request({"type": "predict", "len": 9}, b"not a png")  # refused while decoding
        assert bad["status"] == "error", bad
        assert tcp.request({"type": "info"})["status"] == "ok"
        for i in range(2):  # 2 ok predicts over ZeroMQ
            reply = zq.request({"type": "predict", "image": g[f"image_{i}"], "seed": 100 + i})
            assert reply["status"] == "ok", reply
            check_golden(reply["pred"], g, i)
        bad = zq.request({"type": "predict", "image": np.zeros((8, 8, 3), np.float32)})  # wrong dtype
        assert bad["status"] == "error", bad
        assert zq.request({"type": "reset"})["status"] == "ok"
        during = scrape(port)
    finally:
        tcp.close()
        zq.close()

    want = {("tcp", "predict", "ok"): 3, ("tcp", "predict", "error"): 1, ("tcp", "info", "ok"): 1,
            ("zmq", "predict", "ok"): 2, ("zmq", "predict", "error"): 1, ("zmq", "reset", "ok"): 1}
    for (port_name, kind, outcome), n in want.items():
        got = value(during, "nitrogen_requests_total", port=port_name, type=kind, outcome=outcome)
        assert got == n, f"{port_name} {kind} {outcome}: scraped {got}, sent {n}"
    assert value(during, "nitrogen_requests_total") == sum(want.values())
    assert value(during, "nitrogen_request_duration_seconds_count", port="tcp", type="predict") == 4
    assert value(during, "nitrogen_request_duration_seconds_count", port="zmq") == 4
    assert value(during, "nitrogen_request_duration_seconds_sum") > 0
    # 5 predicts reached the engine (the 2 refused ones never did), one frame per batch entry
    assert value(during, "nitrogen_batch_size_sum", engine="0", device="cpu") == 5
    assert 1 <= value(during, "nitrogen_batch_size_count", engine="0", device="cpu") <= 5
    assert value(during, "nitrogen_batch_duration_seconds_count", engine="0", device="cpu") == \
        value(during, "nitrogen_batch_size_count", engine="0", device="cpu")
    # the queue/inference split comes from the predict reply's server_timing, once the server sends it
    split = 5 if "server_timing" in {f.name for f in dataclasses.fields(PredictResult)} else 0
    assert value(during, "nitrogen_predict_queue_seconds_count") == split
    assert value(during, "nitrogen_predict_inference_seconds_count") == split
    assert value(during, "nitrogen_sessions_open") == 2, "one TCP connection and one ZeroMQ peer"
    assert value(during, "nitrogen_engine_queue_depth", engine="0", device="cpu") == 0
    assert not [k for k in during if k[0].startswith("nitrogen_device_memory")], "no device memory on CPU"
    assert value(during, "nitrogen_server_info", devices="cpu") == 1


def test_metrics_are_off_unless_asked(golden_dir):
    with ServerThread(settings(str(golden_dir / "tiny-a.pt"))) as srv:
        assert srv.server.metrics is None
        assert srv.server.service.on_request is None


def test_metrics_port_in_use_is_named(golden_dir, server):
    """A taken port (here by its old name, --metrics-port) stops the start with an error naming it; the
    other server is unharmed."""
    taken = server.server.http.port
    thread = ServerThread(settings(str(golden_dir / "tiny-a.pt"), metrics_port=taken))
    with pytest.raises(RuntimeError, match=f"http port {HOST}:{taken}"):
        thread.start()
    thread.stop()
    assert ("nitrogen_sessions_open", ()) in scrape(taken)
