"""Port 5556: newline-JSON header + binary payload, every framing the spec allows."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from nitrogen_server.app import ServerThread
from server_testkit import (
    RAW_BYTES,
    TcpClient,
    assert_tcp_pred,
    bmp_top_down,
    encode,
    frame,
    server_settings,
)


def _pred(client: TcpClient, header: dict, payload: bytes) -> dict:
    reply = client.request(header, payload)
    assert_tcp_pred(reply)
    return reply["pred"]


def test_raw_frame_without_len(demo_server):
    with TcpClient(demo_server.tcp_port) as c:
        _pred(c, {"type": "predict"}, frame(1).tobytes())


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "JPEG"])
def test_encoded_frames_with_len(demo_server, fmt):
    img = frame(2, 240, 320)
    data = encode(img, fmt)
    with TcpClient(demo_server.tcp_port) as c:
        _pred(c, {"type": "predict", "len": len(data)}, data)


def test_lossless_encodings_and_raw_sizes_give_identical_actions(demo_server):
    """The same pixels sent five ways (same seed, fresh session each) yield the same actions."""
    img = frame(3, 120, 160)
    bmp = encode(img, "BMP")
    ways = [
        ({"len": len(p := encode(img, "PNG"))}, p),
        ({"len": len(bmp)}, bmp),
        ({}, bmp),  # BMP without len: sized from its header
        ({}, bmp_top_down(img)),
        ({"len": img.size, "width": 160, "height": 120}, img.tobytes()),
    ]
    preds = []
    for extra, payload in ways:
        with TcpClient(demo_server.tcp_port) as c:
            preds.append(_pred(c, {"type": "predict", "seed": 9, "resize_mode": "crop", **extra}, payload))
    assert all(p == preds[0] for p in preds[1:])


def test_raw_256_with_len(demo_server):
    img = frame(4)
    with TcpClient(demo_server.tcp_port) as c:
        a = _pred(c, {"type": "predict", "len": RAW_BYTES, "seed": 1}, img.tobytes())
        b = _pred(c, {"type": "predict", "seed": 1}, img.tobytes())
    assert a == b


@pytest.mark.parametrize("mode", ["pad", "crop", "stretch"])
def test_resize_modes(demo_server, mode):
    """A non-square frame in each mode = the frame made square that way by hand, sent as is."""
    img = frame(5, 90, 150)
    if mode == "pad":
        square = np.zeros((150, 150, 3), np.uint8)
        square[30:120] = img
    elif mode == "crop":
        square = img[:, 30:120]
    else:
        square = img  # stretch: the model's own resize does it
    png = encode(img, "PNG")
    with TcpClient(demo_server.tcp_port) as c:
        got = _pred(c, {"type": "predict", "len": len(png), "resize_mode": mode, "seed": 3}, png)
    sq = np.ascontiguousarray(square)
    with TcpClient(demo_server.tcp_port) as c:
        want = _pred(c, {"type": "predict", "len": sq.size, "width": sq.shape[1], "height": sq.shape[0],
                         "resize_mode": "stretch", "seed": 3}, sq.tobytes())
    assert got == want


def test_default_resize_mode_is_stretch(demo_server):
    """What the model saw in training and in the original's serving (the NitroGen-Server fork padded)."""
    png = encode(frame(6, 90, 150), "PNG")
    replies = []
    for extra in ({}, {"resize_mode": "stretch"}, {"resize_mode": "pad"}):
        with TcpClient(demo_server.tcp_port) as c:
            replies.append(_pred(c, {"type": "predict", "len": len(png), "seed": 4, **extra}, png))
    assert replies[0] == replies[1] and replies[0] != replies[2]


def test_reset_and_info(demo_server):
    with TcpClient(demo_server.tcp_port) as c:
        assert c.request({"type": "reset"}) == {"status": "ok"}
        info = c.request({"type": "info"})
        assert info["status"] == "ok" and info["info"]["action_horizon"] == 16
        assert info["info"]["buttons"][18] == "SOUTH"


def test_pipelined_requests_answered_in_order(demo_server):
    imgs = [frame(10 + i) for i in range(4)]
    with TcpClient(demo_server.tcp_port) as c:
        expected = [_pred(c, {"type": "predict", "seed": i}, img.tobytes()) for i, img in enumerate(imgs)]
    blob = b""
    for i, img in enumerate(imgs):
        blob += json.dumps({"type": "predict", "seed": i}).encode() + b"\n" + img.tobytes()
        blob += b'{"type":"info"}\n\n{"type":"bogus"}\n'  # blank lines are skipped
    with TcpClient(demo_server.tcp_port) as c:
        c.sock.sendall(blob + b'{"type":"reset"}\r\n')
        for i in range(4):
            assert c.reply()["pred"] == expected[i]
            assert c.reply()["status"] == "ok"
            assert "'type' is 'bogus'" in c.reply()["message"]
        assert c.reply() == {"status": "ok"}


def test_reply_fits_one_4096_byte_recv(demo_server):
    """What a Lua client does: send, then a single receive of at most 4 KiB holds the whole line."""
    with socket.create_connection(("127.0.0.1", demo_server.tcp_port), timeout=30) as s:
        s.sendall(b'{"type":"predict"}\n' + frame(7).tobytes())
        data = s.recv(4096)
        if not data.endswith(b"\n"):  # TCP may split even a short line; the server wrote one line
            data += s.recv(4096)
        assert data.endswith(b"\n") and data.count(b"\n") == 1 and len(data) < 4096
        reply = json.loads(data)
    assert_tcp_pred(reply)
    assert reply["repeat"] == 1


def test_recoverable_errors_keep_the_connection(demo_server):
    with TcpClient(demo_server.tcp_port) as c:
        cases = [
            ({"type": "predict", "len": 5}, b"hello", "neither a PNG/JPEG/BMP image nor raw RGB"),
            ({"type": "predict", "len": 12, "width": 2, "height": 3}, bytes(12), "width*height*3 = 18"),
            ({"type": "predict", "len": 12, "width": 2}, bytes(12), "both 'width' and 'height'"),
            ({"type": "predict", "seed": "x"}, frame(1).tobytes(), "'seed' is 'x'"),
            ({"type": "predict", "resize_mode": "zoom"}, frame(1).tobytes(), "'resize_mode' is 'zoom'"),
            ({"type": "predict", "width": 0, "height": 1, "len": 0}, b"", "'width' is 0"),
            ({"type": "reset", "len": 3}, b"abc", None),
            ({"type": "info", "session": 5}, b"", "'session' is 5"),
        ]
        for header, payload, message in cases:
            reply = c.request(header, payload)
            if message is None:
                assert reply["status"] == "ok"
            else:
                assert reply["status"] == "error" and message in reply["message"], (header, reply)
        bomb = encode(np.zeros((4100, 1, 3), np.uint8), "PNG")
        reply = c.request({"type": "predict", "len": len(bomb)}, bomb)
        assert "limit is 4096x4096" in reply["message"]
        _pred(c, {"type": "predict"}, frame(2).tobytes())


def test_read_ahead_is_bounded_in_bytes_yet_all_pipelined_requests_answered(server_errors):
    """With a payload limit of one raw frame, read-ahead pauses after about one queued frame; a client
    that pipelines many frames is still answered, in order."""
    with ServerThread(server_settings(max_payload_bytes=RAW_BYTES)) as srv:
        imgs = [frame(20 + i) for i in range(6)]
        with TcpClient(srv.tcp_port) as c:
            c.sock.sendall(b"".join(b'{"type":"predict","seed":%d}\n' % i + im.tobytes()
                                    for i, im in enumerate(imgs)))
            pipelined = [c.reply()["pred"] for _ in imgs]
        with TcpClient(srv.tcp_port) as c:
            one_by_one = [_pred(c, {"type": "predict", "seed": i}, im.tobytes()) for i, im in enumerate(imgs)]
    assert pipelined == one_by_one
