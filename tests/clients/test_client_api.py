"""Both clients against a real server (tiny-a golden checkpoint): info, reset, predict, server errors."""

from __future__ import annotations

import json
import pickle
import socket

import numpy as np
import pytest
import zmq
from nitrogen_client import BUTTON_NAMES, ClientError, ModelClient, ServerError, TcpClient
from nitrogen_client.images import encode_png
from PIL import Image

PROTOCOLS = ["zmq", "tcp-png", "tcp-raw"]


def make_client(server, protocol: str):
    if protocol == "zmq":
        return ModelClient("127.0.0.1", server.zmq_port, timeout_ms=30_000)
    # stretch: the golden frames were resized by the model's own preprocessing, without borders
    encoding = protocol.split("-")[1]
    return TcpClient("127.0.0.1", server.tcp_port, timeout_s=30, encoding=encoding, resize_mode="stretch")


def check_prediction(pred, horizon: int) -> None:
    assert set(pred) == {"j_left", "j_right", "buttons"}
    assert pred["j_left"].shape == (horizon, 2) and pred["j_right"].shape == (horizon, 2)
    assert pred["buttons"].shape == (horizon, 21)
    for arr in pred.values():
        assert arr.dtype == np.float32
    assert set(np.unique(pred["buttons"]).tolist()) <= {0.0, 1.0}
    assert np.all(np.abs(pred["j_left"]) <= 1.0) and np.all(np.abs(pred["j_right"]) <= 1.0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_info_reset_predict(server, protocol):
    with make_client(server, protocol) as client:
        info = client.info()
        assert tuple(info["buttons"]) == BUTTON_NAMES
        assert isinstance(info["action_downsample_ratio"], int) and info["action_downsample_ratio"] >= 1
        horizon = info["action_horizon"]
        assert client.reset() is None
        frame = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
        check_prediction(client.predict(frame), horizon)
        check_prediction(client.predict(Image.fromarray(frame)), horizon)  # PIL input too
        if isinstance(client, TcpClient):
            assert client.last_repeat == info["action_downsample_ratio"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_seeded_predictions_match_golden(server, tiny_a, protocol):
    """Seed 100 + i on call i reproduces the tiny-a golden actions through this client."""
    with make_client(server, protocol) as client:
        client.reset()
        for i in range(int(tiny_a["n_steps"])):
            pred = client.predict(tiny_a[f"image_{i}"], seed=100 + i)
            for key in ("j_left", "j_right"):
                np.testing.assert_allclose(
                    pred[key], tiny_a[f"{key}_{i}"], atol=2e-3, err_msg=f"{key} call {i}"
                )
            np.testing.assert_array_equal(
                pred["buttons"], tiny_a[f"buttons_{i}"], err_msg=f"buttons call {i}"
            )


def test_both_ports_give_the_same_prediction(server, tiny_a):
    frame = tiny_a["image_0"]
    with make_client(server, "zmq") as z, make_client(server, "tcp-png") as t:
        a, b = z.predict(frame, seed=7), t.predict(frame, seed=7)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-4)


def test_named_sessions_are_accepted(server, tiny_a):
    """A client-chosen session name (kept across reconnects) goes with every request on both ports."""
    with (
        ModelClient("127.0.0.1", server.zmq_port, session="py-client-test") as z,
        TcpClient("127.0.0.1", server.tcp_port, session="py-client-test") as t,
    ):
        for client in (z, t):
            client.reset()
            assert "action_horizon" in client.info()
            check_prediction(client.predict(tiny_a["image_0"], seed=100), len(tiny_a["j_left_0"]))


def raw_zmq(port: int, message: dict) -> dict:
    """What the original ModelClient does, by hand: to learn the server's own error text."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.RCVTIMEO, 30_000)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"tcp://127.0.0.1:{port}")
        sock.send(pickle.dumps(message))
        return pickle.loads(sock.recv())
    finally:
        sock.close()
        ctx.term()


def raw_tcp(port: int, header: dict, payload: bytes = b"") -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(json.dumps(header).encode() + b"\n" + payload)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            assert chunk, "server closed without a reply line"
            data += chunk
    return json.loads(data)


def test_zmq_server_errors_carry_the_servers_message(server, tiny_a):
    bad_frame = np.zeros((4, 4), np.uint8)  # not H x W x 3: the client sends it as is
    expected = raw_zmq(server.zmq_port, {"type": "predict", "image": bad_frame})
    assert expected["status"] == "error"
    bad_seed = raw_zmq(server.zmq_port, {"type": "predict", "image": tiny_a["image_0"], "seed": -1})
    assert bad_seed["status"] == "error"
    with ModelClient("127.0.0.1", server.zmq_port) as client:
        with pytest.raises(ServerError) as err:
            client.predict(bad_frame)
        assert err.value.message == expected["message"]
        assert expected["message"] in str(err.value)
        with pytest.raises(ServerError) as err:
            client.predict(tiny_a["image_0"], seed=-1)
        assert err.value.message == bad_seed["message"]
        with pytest.raises(ServerError) as err:
            client.request({"type": "bogus"})
        assert err.value.message == raw_zmq(server.zmq_port, {"type": "bogus"})["message"]
        check_prediction(
            client.predict(tiny_a["image_0"]), len(tiny_a["j_left_0"])
        )  # still fine after errors


def test_tcp_server_errors_carry_the_servers_message(server, tiny_a):
    garbage = b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4
    header = {"type": "predict", "len": len(garbage)}
    expected = raw_tcp(server.tcp_port, header, garbage)
    assert expected["status"] == "error"
    png = encode_png(tiny_a["image_0"])
    bad_seed = raw_tcp(server.tcp_port, {"type": "predict", "len": len(png), "seed": -1}, png)
    assert bad_seed["status"] == "error"
    with TcpClient("127.0.0.1", server.tcp_port) as client:
        with pytest.raises(ServerError) as err:
            client.request(header, garbage)
        assert err.value.message == expected["message"]
        assert expected["message"] in str(err.value)
        with pytest.raises(ServerError) as err:
            client.predict(tiny_a["image_0"], seed=-1)
        assert err.value.message == bad_seed["message"]
        # the framing survived the error replies: the same connection still predicts
        check_prediction(client.predict(tiny_a["image_0"]), len(tiny_a["j_left_0"]))


@pytest.mark.parametrize("protocol", ["zmq", "tcp-png"])
def test_closed_client_refuses_requests(server, protocol):
    client = make_client(server, protocol)
    client.info()
    client.close()
    client.close()  # idempotent
    with pytest.raises(ClientError, match="closed"):
        client.info()
