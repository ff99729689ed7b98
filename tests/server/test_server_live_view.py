"""The live view on --http-port, over real sockets: what a browser and a hostile viewer get.

A demo-model server in-process (its own thread and loop); clients speak the wire from outside. The
browser itself is tests/browser/test_live_page.py; the log line and the old flag name are checked on
a real `python -m nitrogen_server` process.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest
from nitrogen_client import overlay
from nitrogen_server import http_view
from nitrogen_server.app import ServerThread
from nitrogen_server.cli import settings_from_args
from PIL import Image
from process_kit import ServerProcess
from server_testkit import ModelClient, TcpClient, assert_tcp_pred, encode, frame, server_settings

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def live(server_errors) -> Iterator[ServerThread]:
    with ServerThread(server_settings(http_port=0)) as srv:
        yield srv


def get(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None,
        ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def sessions(port: int) -> dict[str, dict]:
    status, headers, body = get(port, "/api/sessions")
    assert status == 200 and headers["content-type"].startswith("application/json"), (status, headers)
    rows = json.loads(body)
    assert isinstance(rows, list)
    return {row["key"]: row for row in rows}


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def picture(port: int, path: str) -> Image.Image:
    status, headers, body = get(port, path)
    assert status == 200 and headers["content-type"] == "image/jpeg", (status, headers, body[:200])
    return Image.open(io.BytesIO(body)).convert("RGB")


def solid(rgb: tuple[int, int, int], h: int = 144, w: int = 160) -> np.ndarray:
    return np.full((h, w, 3), rgb, np.uint8)


def test_sessions_listed_with_their_last_frame_and_reply(live):
    port = live.server.http.port
    assert sessions(port) == {}
    with TcpClient(live.tcp_port) as tcp, ModelClient(live.zmq_port) as zq:
        for i in range(2):
            assert_tcp_pred(tcp.request({"type": "predict", "seed": i}, frame(i).tobytes()))
        png = encode(solid((220, 30, 30)), "PNG")
        assert_tcp_pred(tcp.request({"type": "predict", "len": len(png), "resize_mode": "pad"}, png))
        assert zq.predict(solid((30, 30, 220)), seed=1)["status"] == "ok"
        assert tcp.request({"type": "reset", "session": "idle one", "cfg_scale": 2.5})["status"] == "ok"
        rows = sessions(port)
        assert set(rows) == {"tcp:1", "named:idle one"} | {k for k in rows if k.startswith("zmq:")}, rows
        (zmq_key,) = [k for k in rows if k.startswith("zmq:")]
        assert rows["tcp:1"]["predicts"] == 3 and rows[zmq_key]["predicts"] == 1
        assert rows["named:idle one"]["predicts"] == 0 and rows["named:idle one"]["frame"] is None
        assert rows["named:idle one"]["cfg"] == 2.5 and rows["tcp:1"]["cfg"] == 1.0
        row = rows["tcp:1"]
        assert (row["engine"], row["device"], row["steps"]) == (0, "cpu", 4)
        assert set(row["server_timing"]) == {"queue_ms", "infer_ms", "total_ms"}
        assert row["idle_s"] >= 0 and row["error"] is None
        # the picture: the model's 256x256 view (red frame, letterboxed: black bars) and the panel
        img = picture(port, row["frame"])
        assert img.size == (360 + 500, 360)
        px = np.asarray(img).astype(int)
        assert np.abs(px[180, 180] - (220, 30, 30)).max() < 40, px[180, 180]  # centre: the frame
        assert px[5, 180].max() < 40, px[5, 180]  # top: the pad's black bar
        assert np.abs(px[350, 700] - overlay.BG).max() < 30  # the overlay panel's background
        zmq_img = np.asarray(picture(port, rows[zmq_key]["frame"])).astype(int)
        assert np.abs(zmq_img[180, 180] - (30, 30, 220)).max() < 40
        # a failed predict keeps the last good picture and says why
        bad = tcp.request({"type": "predict", "len": 9}, b"not a png")
        assert bad["status"] == "error"
        row = sessions(port)["tcp:1"]
        assert row["predicts"] == 4 and "neither a PNG" in row["error"]
        assert row["frame"].endswith("seq=3")
    # the connection's session ends with it, and leaves the list
    wait_for(lambda: "tcp:1" not in sessions(port), what="tcp:1 to leave the list")
    assert get(port, "/frame/1.jpg")[0] == 404


def test_events_push_each_predict(live):
    port = live.server.http.port
    sock = socket.create_connection((HOST, port), timeout=30)
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    stream = sock.makefile("rb")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += stream.readline()
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head, head

    def next_list() -> list[dict]:
        for line in stream:
            if line.startswith(b"data: "):
                return json.loads(line[6:])
        raise AssertionError("event stream ended")

    try:
        with TcpClient(live.tcp_port) as tcp:
            for n in (1, 2):
                assert_tcp_pred(tcp.request({"type": "predict", "session": "watched", "seed": n}, frame(n).tobytes()))
                wait_for(lambda n=n: any(r["key"] == "named:watched" and r["predicts"] == n for r in next_list()),
                         what=f"an event with predict {n}")
    finally:
        stream.close()
        sock.close()


def test_read_only_and_hostile_requests(live):
    port = live.server.http.port
    with TcpClient(live.tcp_port) as tcp:
        assert_tcp_pred(tcp.request({"type": "predict", "session": "kept"}, frame(3).tobytes()))
        before = sessions(port)["named:kept"]
        for method in ("POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
            for path in ("/", "/api/sessions", "/events", "/metrics", "/frame/1.jpg", "/anything"):
                status, headers, _ = get(port, path, method)
                assert status == 405 and headers.get("allow") == "GET", (method, path, status)
        for path in ("/nope", "/api/sessions/named:kept", "/frame/x.jpg", "/frame/999999.jpg", "/../etc/passwd",
                     "/frame/1.png", "/api"):
            assert get(port, path)[0] == 404, path
        assert get(port, "/", headers={"X-Big": "a" * 9000})[0] in (400, 431)
        many = {f"X-{i}": "1" for i in range(100)}
        assert get(port, "/", headers=many)[0] in (400, 431)
        status, headers, page = get(port, "/")
        assert status == 200 and headers["content-type"].startswith("text/html") and b"EventSource" in page
        status, headers, metrics = get(port, "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert b'nitrogen_requests_total{outcome="ok",port="tcp",type="predict"}' in metrics
        after = sessions(port)["named:kept"]
        assert after["predicts"] == before["predicts"] == 1, "a viewer's requests reached the session"
        assert_tcp_pred(tcp.request({"type": "predict", "session": "kept"}, frame(4).tobytes()))


def test_connection_flood_and_stalled_viewers_cost_the_predicts_nothing(live, monkeypatch):
    """Connections past the cap get 503; a viewer that never reads is dropped once its events back up;
    predicts are answered all along."""
    monkeypatch.setattr(http_view, "WRITE_TIMEOUT_S", 1.0)
    port = live.server.http.port
    held: list[socket.socket] = []
    try:
        # a stalled viewer: asks for events, never reads them (a small receive buffer fills quickly)
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((HOST, port))
        stalled.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        held.append(stalled)
        # a slow one that never finishes its request line, and a flood up to the cap
        while len(held) < http_view.MAX_CONNECTIONS:
            s = socket.create_connection((HOST, port), timeout=10)
            s.sendall(b"GET / HT")
            held.append(s)
        time.sleep(0.3)
        extra = socket.create_connection((HOST, port), timeout=10)
        assert extra.recv(200).startswith(b"HTTP/1.1 503"), "a connection past the cap was served"
        extra.close()
        # big events: 400 sessions with long names (resets only: no inference), so the stalled viewer's
        # buffers fill in a few seconds; meanwhile predicts go on
        with TcpClient(live.tcp_port) as tcp:
            for i in range(400):
                tcp.send({"type": "reset", "session": f"{i:03d}-" + "x" * 120, "cfg_scale": 1.5})
            assert all(tcp.reply()["status"] == "ok" for _ in range(400))
            for i in range(10):
                assert_tcp_pred(tcp.request({"type": "predict", "seed": i}, frame(i).tobytes()))
            stalled.settimeout(0.5)
            wait_for(lambda: live.server.http.streams == 0, timeout=60, what="the stalled viewer to be dropped")
            for i in range(3):
                assert_tcp_pred(tcp.request({"type": "predict", "seed": i}, frame(i).tobytes()))
    finally:
        for s in held:
            s.close()
    wait_for(lambda: get(live.server.http.port, "/")[0] == 200, what="the page to answer again")


def test_log_line_and_the_old_flag_name(server_errors):
    srv = ServerProcess("demo", "--metrics-port", "0")
    try:
        port = int(srv.wait_for(re.compile(r"listening http on 127\.0\.0\.1:(\d+)")).group(1))
        assert "--metrics-port (NITROGEN_METRICS_PORT) is the old name of --http-port" in srv.log()
        assert get(port, "/api/sessions")[1]["content-type"].startswith("application/json")
        assert b"nitrogen_sessions_open" in get(port, "/metrics")[2]
    finally:
        assert srv.stop() == 0, srv.log()
    with pytest.raises(SystemExit):
        settings_from_args(["--http-port", "5557", "--metrics-port", "9555"])
    assert settings_from_args(["--http-port", "0"]).http_listen_port == 0
    assert settings_from_args([]).http_listen_port is None


def test_viewers_of_a_busy_session_cost_one_render_at_a_time(live, monkeypatch):
    """A review found each request for a new predict's picture queueing a render of its own while
    predicts kept coming (each pinning a frame, real viewers waiting behind stale work); now a session
    has at most one render queued or running, and it draws the newest predict."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    view = live.server.http
    port = view.port
    drawn: list[int] = []
    real = view._encode_latest

    def slow(session_id: int):
        drawn.append(len(view._rendering))  # renders queued or running, this one included
        time.sleep(0.2)
        return real(session_id)

    monkeypatch.setattr(view, "_encode_latest", slow)
    stop = threading.Event()

    def keep_predicting() -> None:
        with TcpClient(live.tcp_port) as c:
            while not stop.is_set():
                assert_tcp_pred(c.request({"type": "predict", "session": "busy-viewed"}, frame(9).tobytes()))

    predictor = threading.Thread(target=keep_predicting, daemon=True)
    predictor.start()
    try:
        # listed once its first predict is stored (the registry lists the session a moment before)
        row = wait_for(lambda: (r := sessions(port).get("named:busy-viewed")) and r["frame"] and r,
                       what="the session's first picture")
        with ThreadPoolExecutor(24) as pool:  # 24 viewers, 4 pictures each, while predicts keep coming
            statuses = list(pool.map(lambda _: get(port, f"/frame/{row['id']}.jpg")[0], range(96)))
        shown = sessions(port)["named:busy-viewed"]["predicts"]
    finally:
        stop.set()
        predictor.join(30)
    assert statuses == [200] * 96
    assert shown > 2, "too few predicts during the test to show anything"
    assert drawn and max(drawn) == 1, f"up to {max(drawn)} renders queued at once ({len(drawn)} in all)"
