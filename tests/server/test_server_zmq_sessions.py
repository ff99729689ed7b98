"""ZeroMQ sessions end with their connection, also when it leaves while its request is being served."""

from __future__ import annotations

import pickle
import time

import numpy as np
import zmq
from nitrogen_server.app import ServerThread
from server_testkit import ModelClient, server_settings


def test_peers_leaving_mid_request_leave_no_session_behind(server_errors):
    with ServerThread(server_settings()) as srv:
        sessions = srv.server.service.sessions
        big = pickle.dumps({"type": "predict", "image": np.zeros((2160, 3840, 3), np.uint8)})  # decoded in the pool
        ctx = zmq.Context()
        for _ in range(5):
            peer = ctx.socket(zmq.DEALER)
            peer.setsockopt(zmq.LINGER, 1000)
            peer.connect(f"tcp://127.0.0.1:{srv.zmq_port}")
            peer.send_multipart([b"", big])
            peer.close()  # gone before its reply
        ctx.term()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(sessions):
            time.sleep(0.1)
        assert len(sessions) == 0, f"sessions of departed peers still open: {list(sessions._entries)}"
        with ModelClient(srv.zmq_port) as client:  # and the port still serves
            assert client.predict(np.zeros((8, 8, 3), np.uint8))["status"] == "ok"
