"""`--record DIR` over real sockets: what each port's predicts leave on disk, the size cap, hostile names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from nitrogen_server.app import ServerThread
from nitrogen_server.recorder import RequestRecorder
from PIL import Image
from server_testkit import ModelClient, TcpClient, encode, frame, server_settings

from nitrogen.preprocess import resize_rgb

REPO = Path(__file__).resolve().parents[2]


def records(root: Path) -> list[dict[str, Any]]:
    """Every index line under the recording, each with `dir`: the session directory holding its files."""
    out = []
    for part in sorted(root.glob("*/*/requests-*.jsonl")):
        for line in part.read_text().splitlines():
            out.append({**json.loads(line), "dir": part.parent})
    return sorted(out, key=lambda r: r["seq"])


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def padded(rgb: np.ndarray) -> np.ndarray:
    """The `pad` resize mode, written out: the frame centred on a black square."""
    h, w, _ = rgb.shape
    side = max(h, w)
    out = np.zeros((side, side, 3), np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = rgb
    return out


def tree_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def test_both_ports_leave_frames_parameters_reply_and_timing(tmp_path, server_errors):
    rec = tmp_path / "rec"
    wide = frame(3, 240, 320)
    square = frame(4)
    data = encode(wide, "PNG")
    with ServerThread(server_settings(record=rec)) as srv:
        with TcpClient(srv.tcp_port) as tcp:
            r1 = tcp.request({"type": "predict", "len": len(data), "seed": 7, "session": "alice",
                              "resize_mode": "pad"}, data)
            r2 = tcp.request({"type": "predict", "seed": 8, "resize_mode": "crop"}, square.tobytes())
            bad = tcp.request({"type": "predict", "len": 5, "session": "alice"}, b"\x89PNG!")
        with ModelClient(srv.zmq_port) as zmq:
            r3 = zmq.predict(wide, seed=9)
    assert r1["status"] == r2["status"] == r3["status"] == "ok" and bad["status"] == "error"

    lines = records(rec)
    assert len(lines) == 4
    by_seed = {ln["request"]["seed"]: ln for ln in lines if "frame_error" not in ln}
    run = next(rec.iterdir())
    assert json.loads((run / "run.json").read_text())["settings"]["record_max_mb"] == 1024.0

    # TCP, PNG, padded, named session
    one = by_seed[7]
    assert one["session"] == "named:alice" and one["client"].startswith("tcp:")
    assert one["request"]["resize_mode"] == "pad" and one["request"]["image"]["encoding"] == "png"
    np.testing.assert_array_equal(png(one["dir"] / one["received"]), wide)
    np.testing.assert_array_equal(png(one["dir"] / one["model_input"]), resize_rgb(padded(wide), 256))
    assert one["reply"]["status"] == "ok"
    np.testing.assert_allclose(one["reply"]["pred"]["buttons"], r1["pred"]["buttons"])
    # the recording keeps float32 values; the TCP reply line rounds them to 4 decimals
    np.testing.assert_allclose(one["reply"]["pred"]["j_left"], r1["pred"]["j_left"], atol=5.1e-5, rtol=0)
    assert one["timing"]["handle_ms"] > 0

    # TCP raw 256x256: the frame the model saw is the frame sent
    two = by_seed[8]
    assert two["request"]["image"]["encoding"] == "raw" and two["request"]["resize_mode"] == "crop"
    np.testing.assert_array_equal(png(two["dir"] / two["model_input"]), square)

    # ZeroMQ array, the port's default (stretch)
    three = by_seed[9]
    assert three["client"].startswith("zmq:") and three["request"]["image"] == {"array": "uint8", "shape": [240, 320, 3]}
    np.testing.assert_array_equal(png(three["dir"] / three["received"]), wide)
    np.testing.assert_array_equal(png(three["dir"] / three["model_input"]), resize_rgb(wide, 256))
    np.testing.assert_allclose(three["reply"]["pred"]["j_right"], r3["pred"]["j_right"], atol=1e-6)

    # an undecodable frame: the request and the error reply, no images
    err = next(ln for ln in lines if "frame_error" in ln)
    assert err["received"] is None and err["reply"] == bad and err["dir"] == one["dir"]

    # each session has its own directory; every file named in the index exists, and only those
    assert len({ln["dir"] for ln in lines}) == 3
    named = {ln["dir"] / ln[k] for ln in lines for k in ("received", "model_input") if ln[k]}
    assert named == set(run.glob("*/*.png"))


def test_the_cap_holds_and_the_oldest_go_first(tmp_path, server_errors):
    rec = tmp_path / "rec"
    # an earlier run's leftovers count against the cap and go first; a stranger's file there stays
    old = rec / "20200101-000000-1" / "tcp_1-000000000000"
    old.mkdir(parents=True)
    (old / "000001-received.png").write_bytes(b"x" * 200_000)
    (rec / "20200101-000000-1" / "notes.txt").write_text("mine")
    cap_mb = 1.5
    with ServerThread(server_settings(record=rec, record_max_mb=cap_mb)) as srv, TcpClient(srv.tcp_port) as tcp:
        for i in range(12):  # noise frames: ~200 KB per record, so only the last few fit
            assert tcp.request({"type": "predict", "seed": i}, frame(100 + i).tobytes())["status"] == "ok"
    assert tree_bytes(rec) - len("mine") <= cap_mb * 2**20
    assert not (old / "000001-received.png").exists() and (rec / "20200101-000000-1" / "notes.txt").exists()
    lines = records(rec)
    assert 1 <= len(lines) < 12
    assert [ln["request"]["seed"] for ln in lines] == list(range(12 - len(lines), 12))  # the newest survive
    for ln in lines:  # and every line still has its frames
        np.testing.assert_array_equal(png(ln["dir"] / ln["received"]), frame(100 + ln["request"]["seed"]))


def test_a_new_session_per_request_leaves_no_directories_behind(tmp_path, server_errors):
    """Pruned sessions take their directories with them: names cannot pile up past the cap."""
    rec = tmp_path / "rec"
    with ServerThread(server_settings(record=rec, record_max_mb=1.0)) as srv, TcpClient(srv.tcp_port) as tcp:
        for i in range(15):  # ~200 KB each: most are pruned
            header = {"type": "predict", "seed": i, "session": f"throwaway-{i}"}
            assert tcp.request(header, frame(200 + i).tobytes())["status"] == "ok"
        recorder = srv.server.service.recorder
        recorder.close()  # flush the writer before counting
        kept = {ln["dir"] for ln in records(rec)}
        session_dirs = [p for p in rec.glob("*/*") if p.is_dir()]
        assert 1 <= len(kept) < 15 and sorted(session_dirs) == sorted(kept)
        assert len(recorder._parts) == len(kept)


HOSTILE = ["../../escape", "/etc/passwd", "..", ".", "a/../../b", "C:\\Windows\\x", "con", "名前", "a\u0000b",
           "x" * 128, "../" * 40, "named:..", "~root", "$HOME", "a\nb"]


def test_hostile_session_names_stay_inside(tmp_path, server_errors):
    base = tmp_path / "box"
    rec = base / "rec"
    rec.mkdir(parents=True)
    with ServerThread(server_settings(record=rec)) as srv, TcpClient(srv.tcp_port) as tcp:
        for i, name in enumerate(HOSTILE):
            assert tcp.request({"type": "predict", "session": name}, frame(i).tobytes())["status"] == "ok", name
    assert sorted(p.name for p in base.iterdir()) == ["rec"]
    files = [f.resolve() for f in rec.rglob("*") if f.is_file()]
    assert all(rec.resolve() in f.parents for f in files)
    lines = records(rec)
    assert [ln["session"] for ln in lines] == [f"named:{name}" for name in HOSTILE]
    assert len({ln["dir"] for ln in lines}) == len(HOSTILE)  # one directory each, none shared
    assert all(ln["dir"].parent.parent == rec for ln in lines)


def test_a_full_queue_drops_records_instead_of_waiting(tmp_path):
    """The writer is slower than the submitter (big noisy frames to PNG-encode): records are dropped and
    counted, submit never waits for the disk, and what was kept is complete."""
    from nitrogen_server.protocol import PredictRequest, PredictResult

    recorder = RequestRecorder(tmp_path / "rec", 1 << 30, 4096, queue_records=2)
    big = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    reply = PredictResult({"buttons": np.zeros((2, 21), np.float32)}, 1)
    for i in range(40):
        recorder.submit("zmq:1", "zmq:1", PredictRequest(image=big, seed=i), reply, 0.001)
    recorder.close()
    assert recorder.dropped > 0 and recorder.written + recorder.dropped == 40
    lines = records(tmp_path / "rec")
    assert len(lines) == recorder.written
    assert all((ln["dir"] / ln["received"]).exists() for ln in lines)


def test_record_flag_on_the_command_line(tmp_path):
    rec = tmp_path / "rec"
    proc = subprocess.Popen([sys.executable, "-m", "nitrogen_server", "demo", "--device", "cpu", "--host", "127.0.0.1",
                             "--zmq-port", "0", "--tcp-port", "0", "--record", str(rec), "--record-max-mb", "5"],
                            cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listening tcp on 127.0.0.1:" in line:
                port = int(line.rsplit(":", 1)[1])
                break
        assert port, "server did not start"
        with TcpClient(port) as tcp:
            assert tcp.request({"type": "predict"}, frame(5).tobytes())["status"] == "ok"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    (line,) = records(rec)
    np.testing.assert_array_equal(png(line["dir"] / line["received"]), frame(5))
    assert abs(datetime.fromisoformat(line["time"]) - datetime.now(timezone.utc)) < timedelta(minutes=10)
