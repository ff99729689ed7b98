"""Port 5555 with a client that does exactly what the original NitroGen ModelClient does."""

from __future__ import annotations

import os
import pickle
import struct
import time

import numpy as np
from nitrogen_server.app import ServerThread
from PIL import Image
from server_testkit import ModelClient, assert_zmq_pred, frame, server_settings


def test_info_reset_predict_numpy_and_pil(demo_server):
    with ModelClient(demo_server.zmq_port) as client:
        info = client.call({"type": "info"})
        assert info["status"] == "ok"
        assert info["info"]["ckpt_path"] == "demo" and len(info["info"]["buttons"]) == 21
        assert client.call({"type": "reset"}) == {"status": "ok"}
        assert_zmq_pred(client.predict(frame(1)))
        assert_zmq_pred(client.predict(frame(2, 240, 320)))
        assert_zmq_pred(client.predict(Image.fromarray(frame(3, 100, 60))))
        assert_zmq_pred(client.predict(Image.fromarray(frame(4)).convert("RGBA")))


def test_seed_makes_predict_reproducible_and_pil_equals_numpy(demo_server):
    img = frame(5)
    with ModelClient(demo_server.zmq_port) as a, ModelClient(demo_server.zmq_port) as b:
        pa = a.predict(img, seed=42)["pred"]
        pb = b.predict(Image.fromarray(img), seed=42)["pred"]
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key])


def test_named_session_survives_reconnect(demo_server):
    """A session named by the client outlives its socket; unnamed ones belong to the peer."""
    port = demo_server.zmq_port
    with ModelClient(port) as c:
        assert c.call({"type": "reset", "cfg_scale": 3.0, "session": "s1"}) == {"status": "ok"}
        assert c.call({"type": "info", "session": "s1"})["info"]["cfg_scale"] == 3.0
        assert c.call({"type": "info"})["info"]["cfg_scale"] == 1.0
        assert c.call({"type": "reset", "cfg_scale": 2.0}) == {"status": "ok"}
        assert c.call({"type": "info"})["info"]["cfg_scale"] == 2.0
        assert_zmq_pred(c.predict(frame(6), session="s1"))
    with ModelClient(port) as c:  # a new peer: a new identity, so a new unnamed session
        assert c.call({"type": "info", "session": "s1"})["info"]["cfg_scale"] == 3.0
        assert c.call({"type": "info"})["info"]["cfg_scale"] == 1.0


def test_bad_requests_get_error_replies(demo_server):
    with ModelClient(demo_server.zmq_port) as c:
        cases = [
            ({"type": "fly"}, "'type' is 'fly'"),
            ({"image": frame(1)}, "request has no 'type'"),
            ({"type": "predict"}, "no 'image'"),
            ({"type": "predict", "image": np.zeros((8, 8), np.uint8)}, "shape (8, 8) (rank 2)"),
            ({"type": "predict", "image": np.zeros((8, 8, 3), np.float32)}, "dtype is float32"),
            ({"type": "predict", "image": np.zeros((0, 8, 3), np.uint8)}, "at least 1x1"),
            ({"type": "predict", "image": np.zeros((4097, 1, 3), np.uint8)}, "limit is 4096x4096"),
            ({"type": "predict", "image": "pixels"}, "image: got str"),
            ({"type": "predict", "image": frame(1), "seed": "seven"}, "'seed' is 'seven'"),
            ({"type": "reset", "context_length": 10**6}, "'context_length' is 1000000"),
            ({"type": "reset", "game": "tetris"}, "reset refused: game 'tetris' requested"),
            ([1, 2, 3], "request is a list"),
        ]
        for request, message in cases:
            reply = c.call(request)
            assert reply["status"] == "error" and message in reply["message"], (request, reply)
        assert c.send_bytes(b"\x00garbage")["status"] == "error"
        assert_zmq_pred(c.predict(frame(2)))


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_malicious_pickle_creates_no_file(demo_server, tmp_path):
    target = tmp_path / "pwned"
    with ModelClient(demo_server.zmq_port) as c:
        reply = c.send_bytes(pickle.dumps({"type": "predict", "image": _Evil(str(target))}))
        assert reply["status"] == "error"
        assert "posix.system" in reply["message"] and "not allowed" in reply["message"]
        reply = c.send_bytes(pickle.dumps(_Evil(str(target))))
        assert reply["status"] == "error"
        assert_zmq_pred(c.predict(frame(3)))
    assert not target.exists()


def test_reply_bytes_load_with_numpy_1_names(demo_server):
    """Replies name only numpy.ndarray/numpy.dtype (not numpy 2's numpy._core), which every numpy has."""
    with ModelClient(demo_server.zmq_port) as c:
        c.socket.send(pickle.dumps({"type": "predict", "image": frame(8)}))
        raw = c.socket.recv()
    assert b"numpy._core" not in raw and b"numpy.core" not in raw and b"numpy\nndarray" in raw
    pred = pickle.loads(raw)
    assert_zmq_pred(pred)
    pred["pred"]["j_left"][0, 0] = 0.5  # writable, like the original's arrays


def test_idle_sessions_expire(server_errors):
    """A session unused for session_idle_s is forgotten: the client's next request starts afresh."""
    with ServerThread(server_settings(session_idle_s=0.3)) as srv, ModelClient(srv.zmq_port) as c:
        assert c.call({"type": "reset", "cfg_scale": 3.0}) == {"status": "ok"}
        assert c.call({"type": "info"})["info"]["cfg_scale"] == 3.0
        deadline = time.monotonic() + 30
        while c.call({"type": "info"})["info"]["cfg_scale"] == 3.0:  # info itself refreshes the session
            assert time.monotonic() < deadline, "session never expired"
            time.sleep(1.0)
        assert_zmq_pred(c.predict(frame(9)))


def test_session_limit_drops_the_least_recently_used(server_errors):
    """A client opening sessions without end cannot grow memory: the oldest idle one is dropped."""
    with ServerThread(server_settings(max_sessions=2)) as srv, ModelClient(srv.zmq_port) as c:
        for name in ("a", "b"):
            assert c.call({"type": "reset", "session": name, "cfg_scale": 3.0}) == {"status": "ok"}
        assert c.call({"type": "info", "session": "a"})["info"]["cfg_scale"] == 3.0
        assert_zmq_pred(c.call({"type": "predict", "image": frame(1), "session": "c"}))  # evicts b
        assert len(srv.server.service.sessions) == 2
        assert c.call({"type": "info", "session": "b"})["info"]["cfg_scale"] == 1.0  # b is gone
        assert c.call({"type": "info", "session": "a"})["info"]["cfg_scale"] == 3.0


def test_hand_written_pickle_from_the_protocol_doc(demo_server):
    """The byte template in docs/protocol.md (for clients without Python) is accepted as documented."""
    def text(s: str) -> bytes:
        return b"X" + struct.pack("<I", len(s)) + s.encode()

    img = frame(10, 300, 2)
    rgb = img.tobytes()
    msg = (b"\x80\x03}(" + text("type") + text("predict") + text("image")
           + b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + b"K\x00\x85" + b"C\x01b"
           + b"\x87R(" + b"K\x01" + b"M" + struct.pack("<H", 300) + b"K\x02K\x03\x87"
           + b"cnumpy\ndtype\n" + text("u1") + b"\x89\x88\x87R" + b"\x89"
           + b"B" + struct.pack("<I", len(rgb)) + rgb + b"tb"
           + text("seed") + b"J" + struct.pack("<i", 7) + b"u.")
    with ModelClient(demo_server.zmq_port) as c:
        by_hand = c.send_bytes(msg)
        by_pickle = c.predict(img, seed=7)
    assert_zmq_pred(by_hand)
    for key in by_pickle["pred"]:
        np.testing.assert_array_equal(by_hand["pred"][key], by_pickle["pred"][key])
