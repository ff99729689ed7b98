"""`--record` when another program holds a recorded file open (an antivirus scan, an image viewer).

Windows then refuses to delete or replace the file (PermissionError, WinError 32); Linux does not, so
`hold` stands in for Windows: os.unlink and os.replace refuse the held paths, for every thread, with
Windows' own message. The server, its recorder and the sockets are real.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from nitrogen_server.app import ServerThread
from server_testkit import TcpClient, frame, server_settings
from test_server_record import records, tree_bytes

CAP_MB = 1.5


@pytest.fixture
def hold(monkeypatch) -> set[Path]:
    """Paths put in this set behave as files another program has open on Windows."""
    held: set[Path] = set()
    unlink, replace = os.unlink, os.replace

    def refuse(path: object) -> None:
        if Path(os.fspath(path)).resolve() in held:
            raise PermissionError(
                13, "The process cannot access the file because it is being used by another process", str(path)
            )

    def held_unlink(path, *args, **kwargs):
        refuse(path)
        return unlink(path, *args, **kwargs)

    def held_replace(src, dst, *args, **kwargs):
        refuse(src)
        refuse(dst)
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", held_unlink)
    monkeypatch.setattr(os, "replace", held_replace)
    return held


def settle(recorder, count: int) -> None:
    """Wait until the writer has handled `count` predicts (it runs off the reply path)."""
    deadline = time.monotonic() + 60
    while recorder.written + recorder.dropped < count:
        assert time.monotonic() < deadline, f"the recorder handled {recorder.written} of {count}"
        time.sleep(0.02)


def predict(tcp: TcpClient, i: int) -> None:
    reply = tcp.request({"type": "predict", "seed": i, "session": "alice"}, frame(300 + i).tobytes())
    assert reply["status"] == "ok", reply


def assert_index_matches_files(rec: Path) -> None:
    lines = records(rec)
    named = {ln["dir"] / ln[k] for ln in lines for k in ("received", "model_input")}
    assert named == set(rec.glob("*/*/*.png"))  # every line's frames exist, and no pruned frame is left


def test_a_held_file_from_an_earlier_run_neither_stops_the_server_nor_stretches_the_cap(tmp_path, hold,
                                                                                         server_errors):
    rec = tmp_path / "rec"
    old = rec / "20200101-000000-1" / "tcp_1-000000000000"
    old.mkdir(parents=True)
    for name in ("000001-received.png", "000001-model.png", "requests-000001.jsonl"):
        (old / name).write_bytes(b"x" * 600_000)  # 1.8 MB in all, over the cap: pruned at start-up
    viewed = old / "000001-received.png"
    hold.add(viewed.resolve())
    with ServerThread(server_settings(record=rec, record_max_mb=CAP_MB)) as srv, TcpClient(srv.tcp_port) as tcp:
        recorder = srv.server.service.recorder
        assert viewed.exists() and not (old / "000001-model.png").exists()
        for i in range(4):
            predict(tcp, i)
        settle(recorder, 4)
        assert viewed.exists() and tree_bytes(rec) <= CAP_MB * 2**20  # still counted: the cap holds
        hold.clear()  # the viewer closes it: it goes at the next record
        predict(tcp, 4)
        settle(recorder, 5)
        assert not viewed.exists() and tree_bytes(rec) <= CAP_MB * 2**20
        assert recorder.dropped == 0 and recorder.written == 5
    assert_index_matches_files(rec)


def test_held_frames_and_index_neither_drop_records_nor_stretch_the_cap(tmp_path, hold, server_errors):
    rec = tmp_path / "rec"
    with ServerThread(server_settings(record=rec, record_max_mb=CAP_MB)) as srv, TcpClient(srv.tcp_port) as tcp:
        recorder = srv.server.service.recorder
        predict(tcp, 0)
        settle(recorder, 1)
        (first,) = records(rec)
        viewed = first["dir"] / first["received"]
        index = next(first["dir"].glob("requests-*.jsonl"))
        hold.update({viewed.resolve(), index.resolve()})
        for i in range(1, 9):  # ~400 KB a record: the first ones are pruned while held
            predict(tcp, i)
        settle(recorder, 9)
        assert recorder.written == 9 and recorder.dropped == 0 and recorder.pruned > 0
        assert viewed.exists() and tree_bytes(rec) <= CAP_MB * 2**20
        hold.clear()
        predict(tcp, 9)
        settle(recorder, 10)
        assert recorder.written == 10 and recorder.dropped == 0
        assert not viewed.exists() and tree_bytes(rec) <= CAP_MB * 2**20
    lines = records(rec)
    assert 1 <= len(lines) < 10 and [ln["request"]["seed"] for ln in lines] == list(range(10 - len(lines), 10))
    assert_index_matches_files(rec)
