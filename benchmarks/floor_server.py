"""The transport floor: the demo model behind the simplest possible blocking servers, one per port.

No event loop, no validation, no session registry: each port is one thread doing recv -> predict ->
send on a blocking socket, with the real server's reply codecs. Whatever the real server's overhead
is above this floor is ours; the floor itself is the kernel, libzmq and thread wake-ups.

    python -m benchmarks.floor_server ZMQ_PORT TCP_PORT [DEVICE]     # run by benchmarks.bench
"""

from __future__ import annotations

import json
import logging
import pickle
import socket
import sys
import threading

import numpy as np
import torch
import zmq
from nitrogen_server.jsonfmt import encode_reply as encode_json_reply
from nitrogen_server.protocol import PredictResult
from nitrogen_server.zmq_frontend import encode_reply as encode_pickle_reply

from nitrogen import EngineOptions, InferenceEngine, InferenceSession

log = logging.getLogger("bench.floor")


def serve_zmq(engine: InferenceEngine, port: int) -> None:
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind(f"tcp://127.0.0.1:{port}")
    session = InferenceSession(engine)
    while True:
        *envelope, body = sock.recv_multipart()
        request = pickle.loads(body)
        pred = session.predict(request["image"])
        sock.send_multipart([*envelope, encode_pickle_reply(PredictResult(pred, 1))])


def serve_tcp(engine: InferenceEngine, listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = InferenceSession(engine)
        with conn, conn.makefile("rb") as stream:
            while header := stream.readline():
                fields = json.loads(header)
                payload = stream.read(fields["len"])
                shape = (fields["height"], fields["width"], 3)  # the benchmark sends raw frames only
                frame = np.frombuffer(payload, np.uint8).reshape(shape)
                conn.sendall(encode_json_reply(PredictResult(session.predict(frame), 1)))


def main() -> None:
    zmq_port, tcp_port = int(sys.argv[1]), int(sys.argv[2])
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    torch.set_num_threads(1)
    engine = InferenceEngine.from_checkpoint("demo", device=device, options=EngineOptions(max_wait_ms=0))
    listener = socket.create_server(("127.0.0.1", tcp_port))
    threading.Thread(target=serve_zmq, args=(engine, zmq_port), daemon=True).start()
    log.info("floor servers on zmq %d, tcp %d", zmq_port, tcp_port)
    serve_tcp(engine, listener)


if __name__ == "__main__":
    main()
