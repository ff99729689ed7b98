"""Per-reply server timings and the per-session step count, over both ports."""

from __future__ import annotations

import numpy as np
from nitrogen_server.app import ServerThread
from server_testkit import ModelClient, TcpClient, server_settings

from nitrogen import EngineOptions, InferenceSession

TIMING_KEYS = ["queue_ms", "infer_ms", "total_ms"]


def _check_timing(timing: dict) -> None:
    assert list(timing) == TIMING_KEYS
    # JSON writes 1.0 as 1 (and 0.0004 as 0): numbers, not necessarily floats, on the TCP port
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in timing.values())
    assert timing["total_ms"] >= timing["infer_ms"] > 0


def test_predict_replies_carry_the_servers_time_split(demo_server):
    with TcpClient(demo_server.tcp_port) as tcp, ModelClient(demo_server.zmq_port) as zmq:
        reply = tcp.request({"type": "predict"}, bytes(256 * 256 * 3))
        _check_timing(reply["server_timing"])
        assert set(reply) == {"status", "pred", "repeat", "server_timing"}
        zreply = zmq.predict(np.zeros((48, 64, 3), np.uint8))
        _check_timing(zreply["server_timing"])
        assert "server_timing" not in tcp.request({"type": "info"})  # predicts only
        assert "server_timing" not in tcp.request({"type": "predict", "resize_mode": "bogus"}, bytes(196608))


def test_reset_with_steps_runs_that_many_steps_and_refuses_more(golden_dir, golden, server_errors):
    g = golden("tiny-a")
    reference = InferenceSession.from_checkpoint(golden_dir / "tiny-a.pt", device="cpu", steps=2,
                                                 options=EngineOptions(warmup=False))
    want = reference.predict(g["image_0"], seed=100)
    with ServerThread(server_settings(str(golden_dir / "tiny-a.pt"))) as srv, TcpClient(srv.tcp_port) as tcp, \
            ModelClient(srv.zmq_port) as zmq:
        assert tcp.request({"type": "reset", "steps": 2}) == {"status": "ok"}
        assert tcp.request({"type": "info"})["info"]["num_inference_timesteps"] == 2
        raw = np.ascontiguousarray(g["image_0"]).tobytes()
        reply = tcp.request({"type": "predict", "seed": 100}, raw)
        assert reply["pred"]["buttons"] == want["buttons"].astype(int).tolist()
        np.testing.assert_allclose(reply["pred"]["j_left"], want["j_left"], atol=1e-4)
        # the other port, with the server's default: the checkpoint's 4 steps, the golden answer
        np.testing.assert_array_equal(zmq.predict(g["image_0"], seed=100)["pred"]["buttons"], g["buttons_0"])
        bad = tcp.request({"type": "reset", "steps": 9})
        assert bad["status"] == "error" and "steps must be an integer in [1, 4]" in bad["message"]
        bad = zmq.call({"type": "reset", "steps": 0})
        assert bad["status"] == "error" and "'steps'" in bad["message"] and "1 to 1024" in bad["message"]
    reference.engine.close()


def test_steps_flag_sets_the_default(golden_dir, server_errors):
    with ServerThread(server_settings(str(golden_dir / "tiny-a.pt"), steps=3)) as srv, TcpClient(srv.tcp_port) as tcp:
        assert tcp.request({"type": "info"})["info"]["num_inference_timesteps"] == 3
