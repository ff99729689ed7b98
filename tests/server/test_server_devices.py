"""Several engines in one server (`--device cpu,cpu` here; `cuda:0,cuda:1` on a GPU host)."""

from __future__ import annotations

import logging

import numpy as np
from nitrogen_server.app import ServerThread
from server_testkit import ModelClient, TcpClient, server_settings


def test_sessions_spread_over_engines_and_every_answer_is_golden(golden_dir, golden, server_errors, caplog):
    g = golden("tiny-a")
    settings = server_settings(str(golden_dir / "tiny-a.pt"), device="cpu,cpu")
    caplog.set_level(logging.INFO)
    with ServerThread(settings) as srv:
        assert [str(e.device) for e in srv.server.engines] == ["cpu", "cpu"]
        tcps = [TcpClient(srv.tcp_port) for _ in range(3)]
        zmqs = [ModelClient(srv.zmq_port) for _ in range(3)]
        try:
            engines = []
            for i, tcp in enumerate(tcps):
                raw = np.ascontiguousarray(g["image_0"]).tobytes()
                reply = tcp.request({"type": "predict", "seed": 100}, raw)
                assert reply["pred"]["buttons"] == g["buttons_0"].astype(int).tolist(), i
                engines.append(tcp.request({"type": "info"})["info"]["engine"])
            for zmq in zmqs:
                reply = zmq.predict(g["image_1"], seed=101)
                np.testing.assert_array_equal(reply["pred"]["buttons"], g["buttons_1"])
                np.testing.assert_allclose(reply["pred"]["j_left"], g["j_left_1"], atol=1e-4)
                engines.append(zmq.call({"type": "info"})["info"]["engine"])
        finally:
            for c in [*tcps, *zmqs]:
                c.close()
        assert sorted(engines) == [0, 0, 0, 1, 1, 1]  # least-loaded placement: 3 sessions each
        batches = [sum(e.batch_sizes.values()) for e in srv.server.engines]
        assert all(b >= 3 for b in batches), batches
    assert "2 engines: cpu, cpu" in caplog.text
