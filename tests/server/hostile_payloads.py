"""Hostile messages for test_server_hostile.py, built byte by byte (pickle opcodes, JPEG scans, PNG headers)."""

from __future__ import annotations

import contextlib
import io
import pickle
import socket
import struct
import zlib

import numpy as np
import zmq
from PIL import Image
from server_testkit import TcpClient, encode


def u(text: str) -> bytes:
    """Pickle BINUNICODE."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def request_with(field: str, value_ops: bytes, kind: str = "info") -> bytes:
    """A protocol-2 pickle of {"type": kind, field: <the value built by value_ops>}."""
    return b"\x80\x02}(" + u("type") + u(kind) + u(field) + value_ops + b"u."


def dtype_ops(name: str, state: bytes | None) -> bytes:
    """numpy.dtype(name, False, True) with a BUILD of `state` (opcodes that push a tuple)."""
    return b"cnumpy\ndtype\n" + u(name) + b"\x89\x88\x87R" + (state + b"b" if state is not None else b"")


def array_ops(dtype: bytes, raw: bytes, shape: int) -> bytes:
    """numpy's own array pickle: _reconstruct(ndarray, (0,), b'b') + BUILD (1, (n,), dtype, False, raw)."""
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
            + b"(K\x01K" + bytes([shape]) + b"\x85" + dtype + b"\x89" + b"C" + bytes([len(raw)]) + raw + b"tb")


def state_ops(version: int, order: str, names: bytes, elsize: int, align: int, flags: int) -> bytes:
    i4 = lambda v: b"J" + struct.pack("<i", v)
    return b"(" + i4(version) + u(order) + names + b"NN" + i4(elsize) + i4(align) + i4(flags) + b"t"


def zmq_raw(port: int, data: bytes | list[bytes], timeout_ms: int = 30_000) -> dict:
    """Send raw bytes (one frame, or several after the delimiter) from a DEALER; the pickled reply."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://127.0.0.1:{port}")
    try:
        s.send_multipart([b"", *(data if isinstance(data, list) else [data])])
        frames = s.recv_multipart()
        assert frames[0] == b"" and len(frames) == 2, frames[:3]
        return pickle.loads(frames[1])
    finally:
        s.close()
        ctx.term()


def tcp_drain(port: int, data: bytes, timeout: float = 20) -> list[bytes]:
    """Send, half-close, read every reply line until the server closes the connection."""
    with TcpClient(port, timeout=timeout) as c:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            c.sock.sendall(data)
            c.sock.shutdown(socket.SHUT_WR)
        return c.read_until_closed()


def jpeg_with_scans(side: int, scans: int, seed: int = 0) -> bytes:
    """A progressive JPEG whose last scan is repeated up to `scans` scans (libjpeg decodes each)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8).repeat(16, 0).repeat(16, 1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    last = data[data.rindex(b"\xff\xda"):-2]
    return data[:-2] + last * (scans - data.count(b"\xff\xda")) + b"\xff\xd9"


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR (CRC fixed up) claims width x height."""
    png = encode(np.zeros((1, 1, 3), np.uint8), "PNG")
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def pil_with_palette(pil: Image.Image, palette: object) -> bytes:
    """A predict whose PIL image carries `palette` in its pickled state (Pillow's own layout)."""
    class Fake:
        def __reduce__(self):
            return (Image.Image, (), [{}, pil.mode, pil.size, palette, pil.tobytes()])

    return pickle.dumps({"type": "predict", "image": Fake()}, protocol=2)
