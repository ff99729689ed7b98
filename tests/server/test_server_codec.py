"""The codec layer without sockets: image decoding, resize modes, the JSON formatter, the unpickler."""

from __future__ import annotations

import io
import json
import os
import pickle
import re

import numpy as np
import pytest
from nitrogen_server.cli import settings_from_args
from nitrogen_server.images import (
    BMP_PROBE_BYTES,
    EncodedFrame,
    ImageError,
    apply_resize_mode,
    bmp_total_size,
    decode_frame,
)
from nitrogen_server.jsonfmt import encode_reply, encode_value, format_number
from nitrogen_server.protocol import (
    InfoRequest,
    PredictRequest,
    PredictResult,
    RequestError,
    ResetRequest,
    parse_request,
)
from nitrogen_server.safe_pickle import PickledImage, PickleLimits, UnsafePickleError, safe_loads
from PIL import Image
from server_testkit import bmp_top_down, encode, frame

from nitrogen.frames import FrameError

MAX = 4096


@pytest.mark.parametrize("fmt", ["PNG", "BMP"])
def test_lossless_formats_decode_exactly(fmt):
    img = frame(1, 30, 41)  # odd width: BMP rows are padded
    assert np.array_equal(decode_frame(EncodedFrame(encode(img, fmt)), MAX), img)


def test_jpeg_decodes_close_and_top_down_bmp_exactly():
    img = frame(2, 64, 48)
    smooth = np.repeat(np.repeat(img[::8, ::8], 8, 0), 8, 1)
    got = decode_frame(EncodedFrame(encode(smooth, "JPEG", quality=95)), MAX)
    assert got.shape == smooth.shape and np.abs(got.astype(int) - smooth).mean() < 8
    img = frame(3, 5, 7)
    assert np.array_equal(decode_frame(EncodedFrame(bmp_top_down(img)), MAX), img)


def test_raw_rgb_by_width_height_and_default_size():
    img = frame(4, 3, 5)
    assert np.array_equal(decode_frame(EncodedFrame(img.tobytes(), 5, 3), MAX), img)
    img = frame(5)
    assert np.array_equal(decode_frame(EncodedFrame(img.tobytes()), MAX), img)
    with pytest.raises(ImageError, match=r"width\*height\*3 = 45 bytes"):
        decode_frame(EncodedFrame(bytes(44), 5, 3), MAX)
    with pytest.raises(ImageError, match="196608 bytes of raw 256x256 RGB"):
        decode_frame(EncodedFrame(b"hello"), MAX)


def test_bmp_size_from_header():
    bmp = encode(frame(6, 7, 9), "BMP")
    assert bmp_total_size(bmp[:BMP_PROBE_BYTES]) == len(bmp)
    zeroed = bmp[:2] + bytes(4) + bmp[6:]  # a writer that left bfSize 0: computed from the DIB header
    assert bmp_total_size(zeroed[:BMP_PROBE_BYTES]) == len(bmp)
    assert bmp_total_size(bmp_top_down(frame(7, 4, 3))[:BMP_PROBE_BYTES]) == 54 + 4 * 12
    assert bmp_total_size(b"BM" + bytes(28)) is None  # implausible header: raw pixels that start with BM
    assert bmp_total_size(frame(8).tobytes()[:BMP_PROBE_BYTES]) is None


def test_decompression_bomb_and_corrupt_images_refused():
    bomb = encode(np.zeros((1, MAX + 1, 3), np.uint8), "PNG")
    with pytest.raises(FrameError, match="limit is 4096x4096"):  # the library's one size rule
        decode_frame(EncodedFrame(bomb), MAX)
    png = encode(frame(9, 16, 16), "PNG")
    with pytest.raises(ImageError, match="could not decode"):
        decode_frame(EncodedFrame(png[:40]), MAX)
    gif = io.BytesIO()
    Image.fromarray(frame(10, 8, 8)).save(gif, "GIF")
    with pytest.raises(ImageError, match="neither a PNG/JPEG/BMP"):
        decode_frame(EncodedFrame(gif.getvalue()), MAX)


def test_resize_modes():
    img = frame(11, 2, 4)
    padded = apply_resize_mode(img, "pad")
    assert padded.shape == (4, 4, 3) and not padded[0].any() and not padded[3].any()
    assert np.array_equal(padded[1:3], img)
    assert np.array_equal(apply_resize_mode(img, "crop"), img[:, 1:3])
    assert apply_resize_mode(img, "stretch") is img
    tall = frame(12, 5, 2)
    assert np.array_equal(apply_resize_mode(tall, "crop"), tall[1:3])
    assert np.array_equal(apply_resize_mode(tall, "pad")[:, 1:3], tall)


def test_numbers_never_use_exponents():
    assert format_number(1e-7) == "0.0000001"
    assert format_number(1.5e20) == "150000000000000000000"
    assert format_number(-0.00001, 4) == "0"
    assert format_number(0.123456, 4) == "0.1235"
    assert format_number(-1.0, 4) == "-1"
    assert "e" not in encode_value({"a": [1e-9, 2.5e-12], "b": np.float32(3e-8)})
    assert json.loads(encode_value({"x": float("nan"), "s": "é\n"})) == {"x": None, "s": "é\n"}


def test_predict_reply_of_18_steps_fits_a_lua_read():
    h = 18
    worst = -0.12345678 * np.ones((h, 2), np.float32)
    pred = {"j_left": worst, "j_right": worst, "buttons": np.ones((h, 21), np.float32)}
    line = encode_reply(PredictResult(pred, repeat=4))
    assert len(line) < 4096 and line.endswith(b"\n") and not re.search(rb"\d[eE]", line)
    reply = json.loads(line)
    assert reply["repeat"] == 4 and reply["pred"]["j_left"][0] == [-0.1235, -0.1235]
    assert reply["pred"]["buttons"][0] == [1] * 21


def test_parse_request_checks_every_field():
    assert isinstance(parse_request({"type": "info"}), InfoRequest)
    req = parse_request({"type": "predict", "seed": np.int64(7), "session": "a"}, image="img")
    assert req == PredictRequest("img", 7, "a", "stretch")
    reset = parse_request({"type": "reset", "cfg_scale": 2, "context_length": 3, "game": 5})
    assert reset == ResetRequest(None, 2.0, 3, 5) and reset.reconfigures
    bad = [
        ({"type": "jump"}, "'type' is 'jump'; expected one of predict, reset, info"),
        ([1, 2], "request is a list; expected a dict"),
        ({"type": "predict", "seed": "x"}, "'seed' is 'x'; expected an integer"),
        ({"type": "predict", "seed": True}, "'seed' is True"),
        ({"type": "predict", "seed": -1}, "'seed' is -1"),
        ({"type": "predict", "resize_mode": "zoom"}, "expected one of pad, crop, stretch"),
        ({"type": "predict", "session": ""}, "'session' is ''"),
        ({"type": "reset", "cfg_scale": "high"}, "'cfg_scale'"),
    ]
    for fields, message in bad:
        with pytest.raises(RequestError, match=message.replace("(", r"\(").replace("*", r"\*")):
            parse_request(fields, image="img")
    with pytest.raises(RequestError, match="no 'image'"):
        parse_request({"type": "predict"})


def test_unpickler_allows_data_numpy_and_pil():
    img = frame(13, 4, 6)
    for protocol in (2, 4, 5):
        msg = {"type": "predict", "image": img, "seed": np.int64(3), "t": (1, 2.5, None, b"x", {1, 2}),
               "f": np.float32(1.5), "a": np.arange(3, dtype=np.float64)}
        out = safe_loads(pickle.dumps(msg, protocol=protocol))
        assert np.array_equal(out["image"], img) and out["seed"] == 3 and out["t"][4] == {1, 2}
    for mode in ("RGB", "RGBA", "P", "L"):
        pil = Image.fromarray(img).convert(mode)
        for protocol in (1, 4):
            got = safe_loads(pickle.dumps(pil, protocol=protocol))
            assert isinstance(got, PickledImage)
            assert np.array_equal(np.asarray(got.to_pil(MAX).convert("RGB")), np.asarray(pil.convert("RGB")))
    opened = Image.open(io.BytesIO(encode(img, "PNG")))  # PngImageFile, as Image.open returns it
    assert np.array_equal(np.asarray(safe_loads(pickle.dumps(opened)).to_pil(MAX)), img)


@pytest.mark.parametrize("axes", [(1, 0, 2), (2, 0, 1), (0, 2, 1)])
def test_unpickler_rebuilds_arrays_in_neither_c_nor_f_order(axes):
    """numpy pickles such an array (a transposed frame) with protocol 5, Python 3.14's default, as its
    bytes in memory order plus the axis order: refused before (found by the player's tests)."""
    arr = frame(21, 5, 7).transpose(axes)
    assert not (arr.flags["C_CONTIGUOUS"] or arr.flags["F_CONTIGUOUS"])
    for protocol in (2, 4, 5):
        assert np.array_equal(safe_loads(pickle.dumps({"image": arr}, protocol=protocol))["image"], arr)
    good = pickle.dumps({"image": arr}, protocol=5)
    ints = b"".join(b"K" + bytes([a]) for a in axes)  # the axis order, as BININT1 opcodes
    assert good.count(ints) == 1
    with pytest.raises(UnsafePickleError, match="axis order"):  # one that is not a permutation
        safe_loads(good.replace(ints, b"K\x00K\x00K\x01"))


class _WritesFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class _RunsShell:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_unpickler_refuses_code(tmp_path):
    for evil_cls in (_WritesFile, _RunsShell):
        target = tmp_path / f"pwned-{evil_cls.__name__}"
        data = pickle.dumps({"type": "predict", "image": evil_cls(str(target))})
        with pytest.raises(UnsafePickleError, match="not allowed"):
            safe_loads(data)
        assert not target.exists()
    huge = Image.new("L", (2, 2))
    state = pickle.dumps(huge).replace(b"K\x02K\x02", b"M\x00\x7fM\x00\x7f")  # claims 32512x32512
    with pytest.raises(FrameError, match="limit is 4096x4096"):
        safe_loads(state).to_pil(MAX)
    for junk in (b"", b"not a pickle", b"\x80\x05\x95"):
        with pytest.raises(UnsafePickleError):
            safe_loads(junk)


def test_cli_settings_from_args_and_env(monkeypatch):
    monkeypatch.setenv("NITROGEN_TCP_PORT", "6001")
    monkeypatch.setenv("NITROGEN_CFG", "1.5")
    s = settings_from_args(["demo", "--zmq-port", "0", "--old-layout", "--log-level", "DEBUG", "--ctx", "2"])
    assert (s.checkpoint, s.zmq_port, s.tcp_port, s.cfg, s.old_layout, s.log_level, s.ctx) == (
        "demo", 0, 6001, 1.5, True, "debug", 2)
    assert settings_from_args(["--checkpoint", "x.pt", "--tcp-port", "7"]).tcp_port == 7
    monkeypatch.setenv("NITROGEN_GAME", "12")
    assert settings_from_args([]).game_arg == 12
    with pytest.raises(SystemExit):
        settings_from_args(["--zmq-port", "70000"])
    with pytest.raises(SystemExit):
        settings_from_args(["a.pt", "--checkpoint", "b.pt"])


def test_every_engine_option_is_a_server_setting_with_the_same_default():
    """ServerSettings repeats EngineOptions' fields (so the CLI and health check never import torch);
    this keeps the two from drifting apart."""
    from nitrogen_server.config import ServerSettings

    from nitrogen import EngineOptions

    for name, field in EngineOptions.model_fields.items():
        assert name in ServerSettings.model_fields, f"--{name.replace('_', '-')} missing from the server"
        assert ServerSettings.model_fields[name].default == field.default, name


@pytest.mark.parametrize("axes", [(0, "a", 1), ({}, {}, {}), (0, [1], 2), (0, 1), (True, 0, 1)])
def test_an_axis_order_of_the_wrong_kind_is_the_clients_mistake(axes):
    """Not a TypeError from sorting it (which the server would log as its own fault, traceback and all)."""
    from nitrogen_server.pickle_records import ArrayRecord, DTypeRecord

    record = ArrayRecord()
    dtype = DTypeRecord("u1", False, True)
    record.parts, record.axes = ((2, 2, 3), dtype, False, bytes(12)), axes
    with pytest.raises(UnsafePickleError, match="axis order"):
        record.to_array("image", PickleLimits())
