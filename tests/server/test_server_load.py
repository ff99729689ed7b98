"""Many clients on both ports at once: every request answered, each client its own session."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from server_testkit import ModelClient, TcpClient, assert_tcp_pred, assert_zmq_pred, frame

CLIENTS_PER_PORT = 16
REQUESTS_EACH = 3


def test_sixteen_clients_per_port_at_once(demo_server):
    start = threading.Barrier(2 * CLIENTS_PER_PORT, timeout=60)
    img = frame(1)
    with ModelClient(demo_server.zmq_port) as ref:  # what every client must get for (img, seed 5)
        expected = ref.predict(img, seed=5)["pred"]

    def zmq_client(k: int) -> int:
        with ModelClient(demo_server.zmq_port) as c:
            start.wait()
            for _ in range(REQUESTS_EACH):
                reply = c.predict(img, seed=5)
                assert_zmq_pred(reply)
                for key in expected:
                    np.testing.assert_array_equal(reply["pred"][key], expected[key])
        return k

    def tcp_client(k: int) -> int:
        with TcpClient(demo_server.tcp_port) as c:
            start.wait()
            for j in range(REQUESTS_EACH):  # pipelined: all requests first, then all replies
                c.send({"type": "predict", "seed": 5}, img.tobytes())
            for _ in range(REQUESTS_EACH):
                reply = c.reply()
                assert_tcp_pred(reply)
                assert np.allclose(reply["pred"]["j_left"], expected["j_left"], atol=1e-4)
        return k

    with ThreadPoolExecutor(2 * CLIENTS_PER_PORT) as pool:
        futures = [pool.submit(zmq_client, k) for k in range(CLIENTS_PER_PORT)]
        futures += [pool.submit(tcp_client, k) for k in range(CLIENTS_PER_PORT)]
        done = [f.result(timeout=120) for f in futures]
    assert sorted(done) == sorted(list(range(CLIENTS_PER_PORT)) * 2)
