"""`--record DIR`: every predict's frames, parameters, reply and timings, for a person or a script.

One directory per server start, one per session inside it (named from the session key, sanitised and
hashed: a client never chooses a path here):

    DIR/20261121-210138-4242/run.json                         the server's settings
    DIR/20261121-210138-4242/named_alice-3fa2b1c9d0e4/
        requests-000001.jsonl    one JSON line per request (parameters, reply, timings, file names)
        000001-received.png      the frame as received (decoded)
        000001-model.png         the 256x256 frame the model saw (resize_mode, then the model's resize)

Writing is off the reply path: `submit` only queues references, a background thread decodes, encodes
and writes. A full queue drops the record (counted and logged), never delays the reply. Everything
this server wrote under DIR, earlier runs included, stays under `--record-max-mb`: the oldest records
go first, and their lines leave the index with them, so every line names files that exist.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from .images import EncodedFrame, PickledImage, frame_to_rgb, model_view
from .protocol import PredictRequest, Response, to_wire_dict

log = logging.getLogger("nitrogen_server.recorder")
MODEL_SIDE = 256  # the model's square input
RUN_NAME = re.compile(r"^\d{8}-\d{6}-\d+$")
OUR_FILES = re.compile(r"^(\d{6,}-(received|model)\.png|requests-\d{6,}\.jsonl|run\.json)$")
PART_LINES = 64  # index lines per file: pruning rewrites a part without the dropped lines, so keep it small
DISK_RESERVE = 256 << 20  # never fill the disk: leave at least this much free
HELD_TRIES, HELD_WAIT_S = 5, 0.05  # Windows will not delete a file another program has open (WinError 32)
_T = TypeVar("_T")


def _retry_held(op: Callable[[], _T], tries: int = HELD_TRIES) -> _T:
    """Run a file operation again while another program holds the file; the last error propagates."""
    for attempt in range(1, tries):
        try:
            return op()
        except PermissionError:
            time.sleep(HELD_WAIT_S * attempt)
    return op()


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


@dataclass
class _Job:
    seq: int
    client_key: str
    session_key: str
    request: PredictRequest
    response: Response
    seconds: float
    at: float = field(default_factory=time.time)


@dataclass
class _Stored:
    seq: int
    part: Path
    images: list[Path]
    nbytes: int  # images plus the index line
    line_bytes: int


def safe_dir_name(session_key: str) -> str:
    """A directory name for a session key: readable characters kept, the rest `_`, plus a hash."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", session_key).strip("_")[:40] or "session"
    digest = hashlib.sha256(session_key.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slug}-{digest}"


def describe_image(image: Any) -> dict[str, Any]:
    """What arrived, without the pixels: encoding and size of TCP bytes, dtype/shape of an array."""
    if isinstance(image, EncodedFrame):
        magic = {b"\x89P": "png", b"\xff\xd8": "jpeg", b"BM": "bmp"}.get(image.data[:2], "raw")
        return {"encoding": magic, "bytes": len(image.data), "width": image.width, "height": image.height}
    if isinstance(image, np.ndarray):
        return {"array": str(image.dtype), "shape": list(image.shape)}
    if isinstance(image, PickledImage):
        state = image.state
        return {"pil": state[1] if len(state) > 1 else None, "size": state[2] if len(state) > 2 else None}
    return {"type": type(image).__name__}


def _payload_bytes(image: Any) -> int:
    if isinstance(image, EncodedFrame):
        return len(image.data)
    return int(getattr(image, "nbytes", 0)) or 1 << 20


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


class RequestRecorder:
    """Records predicts under `directory`, at most `max_bytes` in all (see the module docstring)."""

    def __init__(self, directory: str | Path, max_bytes: int, max_image_side: int,
                 run_info: dict[str, Any] | None = None, queue_records: int = 64,
                 queue_bytes: int = 256 << 20) -> None:
        self.root = Path(directory).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.max_image_side = max_image_side
        self.queue_bytes = queue_bytes
        self.written = self.dropped = self.pruned = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_records)
        self._queued_bytes = 0
        self._closed = False
        self._seq = itertools.count(1)
        self._stored: deque[_Stored] = deque()
        self._parts: dict[Path, tuple[Path, int]] = {}  # session dir -> (current part, its lines)
        self._held: dict[Path, int] = {}  # files another program held when deleted: counted, retried later
        self._stale: dict[Path, dict[int, int]] = {}  # index part -> {pruned seq: bytes of its line there}
        self._old_runs = self._scan_old_runs()
        self._total = sum(size for _, size in self._old_runs)
        self.run_dir = self._new_run_dir()
        info = json.dumps(run_info or {}, indent=1, default=_jsonable).encode()
        self._make_room(len(info))
        (self.run_dir / "run.json").write_bytes(info)
        self._total += len(info)
        self._thread = threading.Thread(target=self._run, name="nitrogen-recorder", daemon=True)
        self._thread.start()
        log.info("recording predicts to %s (at most %.0f MB)", self.run_dir, self.max_bytes / 2**20)

    # ---- the event loop's side: never blocks ----

    def submit(self, client_key: str, session_key: str, request: PredictRequest, response: Response,
               seconds: float) -> None:
        """Queue one predict for writing; drop it (counted) if the writer is behind."""
        size = _payload_bytes(request.image)
        with self._lock:
            if self._closed or self._queued_bytes + size > self.queue_bytes:
                self._drop_locked("the writer is behind")
                return
            try:
                self._queue.put_nowait(_Job(next(self._seq), client_key, session_key, request, response, seconds))
            except queue.Full:
                self._drop_locked("the writer is behind")
                return
            self._queued_bytes += size

    def is_alive(self) -> bool:
        """False once the writer thread has ended (after close, or because it failed)."""
        return self._thread.is_alive()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, stop the writer and log a summary."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        log.info("recording stopped: %d predicts written, %d dropped, %d pruned for the cap (%s)",
                 self.written, self.dropped, self.pruned, self.run_dir)

    def _drop_locked(self, why: str) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 100 == 0:
            log.warning("recording: %d predict(s) not recorded so far (%s)", self.dropped, why)

    # ---- the writer thread ----

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                self._write(job)
            except Exception:  # a recording failure must never stop serving (or the writer)
                log.exception("recording: could not write predict %d", job.seq)
            finally:
                with self._lock:
                    self._queued_bytes -= _payload_bytes(job.request.image)

    def _write(self, job: _Job) -> None:
        session_dir = self._session_dir(job.session_key)
        request = job.request
        images: dict[str, bytes] = {}
        line: dict[str, Any] = {
            "seq": job.seq,
            "time": datetime.fromtimestamp(job.at, timezone.utc).isoformat(timespec="milliseconds"),
            "session": job.session_key,
            "client": job.client_key,
            "request": {"type": "predict", "seed": request.seed, "resize_mode": request.resize_mode,
                        "session": request.session, "image": describe_image(request.image)},
        }
        try:
            received = frame_to_rgb(request.image, self.max_image_side)
            seen = model_view(received, request.resize_mode, MODEL_SIDE)
            images = {f"{job.seq:06d}-received.png": _png(received), f"{job.seq:06d}-model.png": _png(seen)}
            line["received_size"] = [int(received.shape[1]), int(received.shape[0])]
        except ValueError as exc:  # the reply says the same: the frame could not be used
            line["frame_error"] = str(exc)
        names = list(images)
        line["received"], line["model_input"] = (names[0], names[1]) if names else (None, None)
        line["reply"] = to_wire_dict(job.response)
        line["timing"] = {"handle_ms": round(job.seconds * 1000, 3)}
        data = (json.dumps(line, default=_jsonable) + "\n").encode()
        nbytes = len(data) + sum(map(len, images.values()))
        if nbytes > self.max_bytes:
            with self._lock:
                self._drop_locked(f"one record is {nbytes} bytes, over --record-max-mb")
            return
        if shutil.disk_usage(self.root).free < nbytes + DISK_RESERVE:
            with self._lock:
                self._drop_locked(f"less than {DISK_RESERVE >> 20} MB free on the disk")
            return
        self._make_room(nbytes)
        if self._total + nbytes > self.max_bytes:
            with self._lock:
                self._drop_locked("files other programs hold open fill --record-max-mb")
            return
        for name, blob in images.items():
            _retry_held(partial((session_dir / name).write_bytes, blob))
        part = self._part(session_dir, job.seq)
        try:
            _retry_held(partial(_append, part, data))
        except PermissionError as exc:  # another program holds the index part: start a new one
            log.warning("recording: %s is held open (%s); continuing in a new index file", part, exc)
            self._parts.pop(session_dir, None)
            part = self._part(session_dir, job.seq)
            _append(part, data)
        self._stored.append(_Stored(job.seq, part, [session_dir / n for n in names], nbytes, len(data)))
        self._total += nbytes
        self.written += 1

    def _session_dir(self, session_key: str) -> Path:
        path = self.run_dir / safe_dir_name(session_key)
        if path.parent != self.run_dir:  # cannot happen with safe_dir_name; never write elsewhere
            raise ValueError(f"session directory {path} is outside {self.run_dir}")
        path.mkdir(exist_ok=True)
        return path

    def _part(self, session_dir: Path, seq: int) -> Path:
        part, lines = self._parts.get(session_dir, (None, PART_LINES))
        if part is None or lines >= PART_LINES or not part.exists():
            part, lines = session_dir / f"requests-{seq:06d}.jsonl", 0
        self._parts[session_dir] = (part, lines + 1)
        return part

    # ---- the cap ----

    def _make_room(self, nbytes: int) -> None:
        """Delete the oldest recordings (earlier runs first) until `nbytes` more fit under the cap. A file
        another program holds open (Windows will not delete it) stays counted and goes at a later call."""
        for path, size in list(self._held.items()):
            try:
                path.unlink(missing_ok=True)
            except PermissionError:
                continue
            del self._held[path]
            self._total -= size
        while self._total + nbytes > self.max_bytes and self._old_runs:
            run, size = self._old_runs.pop(0)
            held = _delete_ours(run)
            self._held.update(held)
            self._total -= size - sum(held.values())
        pruned_now: set[Path] = set()
        while self._total + nbytes > self.max_bytes and self._stored:
            old = self._stored.popleft()
            self._total -= old.nbytes - old.line_bytes  # the line counts until its part is rewritten
            for path in old.images:
                self._remove(path)
            self._stale.setdefault(old.part, {})[old.seq] = old.line_bytes
            pruned_now.add(old.part)
            self.pruned += 1
        for part in list(self._stale):
            self._rewrite_part(part, HELD_TRIES if part in pruned_now else 1)

    def _remove(self, path: Path) -> None:
        if (size := _unlink_or_hold(path)) is not None:
            self._held[path] = size
            self._total += size

    def _rewrite_part(self, part: Path, tries: int) -> None:
        """Drop the pruned records' lines from an index part; an emptied part goes, with its directory."""
        seqs = self._stale[part]
        tmp = part.with_suffix(".tmp")
        try:
            kept = [ln for ln in part.read_bytes().splitlines(keepends=True) if json.loads(ln)["seq"] not in seqs]
            if kept:
                tmp.write_bytes(b"".join(kept))
                _retry_held(partial(os.replace, tmp, part), tries)
            else:
                _retry_held(part.unlink, tries)
                self._drop_session_dir(part.parent)
        except FileNotFoundError:  # gone already: nothing left to drop
            pass
        except PermissionError as exc:
            tmp.unlink(missing_ok=True)
            if tries > 1:
                log.warning("recording: %s is held open (%s); its pruned lines go later", part, exc)
            return
        self._total -= sum(self._stale.pop(part).values())

    def _drop_session_dir(self, session_dir: Path) -> None:
        """An emptied session directory goes too (with its bookkeeping): a client naming a new session
        per request must not leave directories, or memory, behind."""
        try:
            session_dir.rmdir()  # only if empty: a file someone else put there keeps it
        except OSError:
            return
        self._parts.pop(session_dir, None)

    def _scan_old_runs(self) -> list[tuple[Path, int]]:
        runs = [p for p in self.root.iterdir() if p.is_dir() and RUN_NAME.match(p.name)]
        sized = [(run, sum(f.stat().st_size for f in _our_files(run))) for run in runs]
        return sorted(sized, key=lambda item: item[0].name)

    def _new_run_dir(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        for n in itertools.count():
            path = self.root / f"{stamp}-{os.getpid() + n}"
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
        raise AssertionError("unreachable")


def _our_files(run: Path) -> list[Path]:
    """Files this recorder writes inside a run directory (nothing else there is ever counted or deleted)."""
    found = [f for f in run.iterdir() if f.is_file() and OUR_FILES.match(f.name)]
    for sub in run.iterdir():
        if sub.is_dir():
            found += [f for f in sub.iterdir() if f.is_file() and OUR_FILES.match(f.name)]
    return found


def _unlink_or_hold(path: Path) -> int | None:
    """Delete one of our files; its size if another program holds it open (Windows), else None."""
    try:
        size = path.stat().st_size
        _retry_held(partial(path.unlink, missing_ok=True))
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        log.warning("recording: %s is held open (%s); it stays counted and goes later", path, exc)
        return size
    return None


def _delete_ours(run: Path) -> dict[Path, int]:
    """Delete our files in an old run; returns the ones another program holds open, with their sizes."""
    held: dict[Path, int] = {}
    for f in _our_files(run):
        if (size := _unlink_or_hold(f)) is not None:
            held[f] = size
    for sub in [run, *[d for d in run.iterdir() if d.is_dir()]][::-1]:
        try:
            sub.rmdir()  # only if empty: a file someone else put there stays
        except OSError:
            pass
    return held


def start_recorder(settings: Any) -> RequestRecorder | None:
    """The recorder `--record` asks for (None without it); run.json gets the server's settings."""
    if settings.record is None:
        return None
    return RequestRecorder(settings.record, int(settings.record_max_mb * 2**20), settings.max_image_side,
                           run_info={"settings": settings.model_dump(mode="json")})
