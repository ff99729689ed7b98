"""Closed-loop load from a process of its own: N clients, each sending R predicts back to back.

A client thread inside the server's process would share its GIL with the event loop and inflate
every latency, so the benchmark measures from here. Prints one JSON object: per-predict latencies
(seconds) and the wall time of the timed part.

    python -m benchmarks.load_client tcp_raw 5556 --clients 32 --rounds 20
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np
from nitrogen_client import ModelClient, TcpClient
from nitrogen_client.base import PolicyClient

FRAME = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
KINDS = ("zmq", "tcp_raw", "tcp_png")


def connect(kind: str, port: int, timeout_s: float = 3600.0) -> PolicyClient:
    """A client of the given kind on 127.0.0.1 (one session each)."""
    if kind == "zmq":
        return ModelClient("127.0.0.1", port, timeout_ms=int(timeout_s * 1000))
    if kind in ("tcp_raw", "tcp_png"):
        return TcpClient("127.0.0.1", port, timeout_s=timeout_s, encoding=kind.removeprefix("tcp_"))
    raise ValueError(f"client kind {kind!r} is not one of {', '.join(KINDS)}")


def run(kind: str, port: int, clients: int, rounds: int, warmup: int) -> dict[str, object]:
    conns = [connect(kind, port) for _ in range(clients)]
    for c in conns:
        c.info()  # connected (and, over TCP, a session) before the clock starts
        for _ in range(warmup):
            c.predict(FRAME)
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def play(c: PolicyClient) -> None:
        barrier.wait()
        for _ in range(rounds):
            t = time.perf_counter()
            c.predict(FRAME)
            with lock:
                latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=play, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for c in conns:
        c.close()
    return {"latencies_s": latencies, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("port", type=int)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=0, help="untimed predicts per client first")
    args = ap.parse_args()
    print(json.dumps(run(args.kind, args.port, args.clients, args.rounds, args.warmup)))


if __name__ == "__main__":
    main()
