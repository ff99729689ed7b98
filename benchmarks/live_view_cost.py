"""What the live view costs a predict: the demo model over TCP, with and without someone watching.

Two servers in processes of their own, both idle but for the block being timed: one without
--http-port, one with it. Blocks of predicts go round-robin over four conditions, so machine drift
hits them alike: no HTTP listener; the listener and nobody watching; one viewer doing what the page
does (reads the events, fetches each new picture once the last one has arrived); one stalled viewer
(asks for the events, never reads them). Prints a JSON object: per condition, the client's round
trip and the server's own total_ms (median and p90, ms) over every predict of its blocks.

    python -m benchmarks.live_view_cost --rounds 10 --per-block 30
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
from nitrogen_client import TcpClient

HOST = "127.0.0.1"
FRAME = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
PORTS = {k: re.compile(rf"listening {k} on (?:tcp://)?127\.0\.0\.1:(\d+)") for k in ("tcp", "http")}
CONDITIONS = ("no listener", "listener, no viewer", "one viewer", "stalled viewer")


def start_server(http: bool) -> tuple[subprocess.Popen, dict[str, int]]:
    cmd = [sys.executable, "-m", "nitrogen_server", "demo", "--device", "cpu", "--host", HOST, "--zmq-port", "0",
           "--tcp-port", "0"]
    cmd += ["--http-port", "0"] if http else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    ports: dict[str, int] = {}
    want = {"tcp", "http"} if http else {"tcp"}
    assert proc.stderr is not None
    for line in proc.stderr:
        for name, pattern in PORTS.items():
            if m := pattern.search(line):
                ports[name] = int(m.group(1))
        if want <= ports.keys():
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its log from filling the pipe
            return proc, ports
    raise RuntimeError("server exited before listening")


def viewer(port: int) -> None:
    """What the page does: read events; fetch a session's picture when it changed and the last one is in."""
    shown: dict[str, str] = {}
    with urllib.request.urlopen(f"http://{HOST}:{port}/events", timeout=60) as events:
        for line in events:
            if not line.startswith(b"data: "):
                continue
            for row in json.loads(line[6:]):
                if row["frame"] and shown.get(row["key"]) != row["frame"]:
                    urllib.request.urlopen(f"http://{HOST}:{port}{row['frame']}", timeout=60).read()
                    shown[row["key"]] = row["frame"]
                    print("fetched", flush=True)


def timed_block(client: TcpClient, n: int) -> tuple[list[float], list[float]]:
    rtt, total = [], []
    for _ in range(n):
        t = time.perf_counter()
        client.predict(FRAME)
        rtt.append((time.perf_counter() - t) * 1000)
        total.append(float(client.last_timing["total_ms"]))
    return rtt, total


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(values)), 3), "p90": round(float(np.percentile(values, 90)), 3),
            "n": len(values)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--per-block", type=int, default=30)
    p.add_argument("--viewer", type=int, help=argparse.SUPPRESS)  # internal: run the viewer on this port
    args = p.parse_args()
    if args.viewer:
        viewer(args.viewer)
        return
    plain, plain_ports = start_server(http=False)
    live, live_ports = start_server(http=True)
    results: dict[str, tuple[list[float], list[float]]] = {c: ([], []) for c in CONDITIONS}
    pictures, watched_s = 0, 0.0  # what the viewer got while it watched
    try:
        clients = {False: TcpClient(HOST, plain_ports["tcp"]), True: TcpClient(HOST, live_ports["tcp"])}
        for c in clients.values():
            timed_block(c, 5)  # warm up; the live server now has a session with a picture
        for _ in range(args.rounds):
            for condition in CONDITIONS:
                client = clients[condition != "no listener"]
                helper, stalled = None, None
                if condition == "one viewer":
                    helper = subprocess.Popen([sys.executable, "-m", "benchmarks.live_view_cost",
                                               "--viewer", str(live_ports["http"])], stdout=subprocess.PIPE, text=True)
                    assert helper.stdout is not None
                    helper.stdout.readline()  # it has fetched a picture: it is watching
                elif condition == "stalled viewer":
                    stalled = socket.socket()
                    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    stalled.connect((HOST, live_ports["http"]))
                    stalled.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
                    time.sleep(0.2)
                started = time.perf_counter()
                rtt, total = timed_block(client, args.per_block)
                results[condition][0].extend(rtt)
                results[condition][1].extend(total)
                if helper is not None:
                    watched_s += time.perf_counter() - started
                    helper.kill()
                    pictures += helper.communicate()[0].count("fetched")
                if stalled is not None:
                    stalled.close()
        for c in clients.values():
            c.close()
    finally:
        for proc in (plain, live):
            proc.terminate()
            proc.wait(30)
    report: dict[str, object] = {c: {"round_trip_ms": summary(r), "server_total_ms": summary(t)}
                                 for c, (r, t) in results.items()}
    report["viewer_pictures_per_s"] = round(pictures / watched_s, 2) if watched_s else None
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
