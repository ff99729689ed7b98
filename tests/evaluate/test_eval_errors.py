"""What a user sees when something is wrong before the run (exit status 2, the problem named, nothing
written), and when they press Ctrl+C during one (finished episodes kept, no partial files)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest
from conftest import REPO, eval_cmd, eval_env, predict_lines, results, run_eval


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("env_id", "message"), [
    ("NoSuchGame-v0", "env id 'NoSuchGame-v0' has no pad mapping; supported backends: ALE: 'ALE/<Game>-v5'"),
    ("ALE/NoSuchGame-v5", "env id 'ALE/NoSuchGame-v5': Environment `NoSuchGame` doesn't exist"),
    ("VizdoomBasic-v1", "use its MultiBinary variant, e.g. VizdoomBasic-MultiBinary-v1"),
    ("SonicTheHedgehog-Genesis-v0", "stable-retro has no ROM for it"),
    ("Pitfall-Atari2600-v0", "stable-retro system 'Atari2600' has no console map; supported systems: Genesis"),
])
def test_bad_env_id_is_refused_before_anything_starts(tmp_path, env_id, message):
    out = tmp_path / "out"
    proc = run_eval(env_id, "--port", str(free_port()), "--out", str(out), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    if env_id == "NoSuchGame-v0":
        assert "ViZDoom: 'Vizdoom<Scenario>-MultiBinary-v1'" in proc.stderr and "stable-retro: " in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(("protocol", "message"), [
    ("zmq", "no reply to 'info' from tcp://127.0.0.1:{port} within 2 s"),
    ("tcp", "cannot connect to 127.0.0.1:{port}"),
])
def test_unreachable_server_is_named(tmp_path, protocol, message):
    port = free_port()
    proc = run_eval("ALE/Breakout-v5", "--host", "127.0.0.1", "--port", str(port), "--protocol", protocol,
                    "--timeout", "2", "--out", str(tmp_path / "out"), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot reach nitrogen-server at 127.0.0.1:{port} (protocol {protocol})" in proc.stderr
    assert message.format(port=port) in proc.stderr


def test_bad_option_names_it(tmp_path):
    proc = run_eval("ALE/Breakout-v5", "--envs", "0", "--out", str(tmp_path), timeout=60)
    assert proc.returncode == 2 and "--envs: Input should be greater than or equal to 1" in proc.stderr


def test_ctrl_c_keeps_finished_episodes(golden_server, tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl+C sends it, once an episode is in."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        eval_cmd("ALE/Breakout-v5", "--host", "127.0.0.1", "--port", str(golden_server.tcp_port),
                 "--protocol", "tcp", "--envs", "2", "--episodes", "40", "--max-steps", "48", "--out", str(out)),
        env=eval_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            path = out / "results.json"
            if path.exists() and json.loads(path.read_text())["episodes"]:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[0]
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output
    doc = results(out)
    assert doc["run"]["interrupted"] and not doc["run"]["errors"]
    assert 1 <= len(doc["episodes"]) < 40
    for row in doc["episodes"]:
        assert row["length"] == 48 and len(predict_lines(out, row)) == row["predicts"] == 3
    logs = sorted(p.name for p in (out / "episodes" / "ALE-Breakout-v5").iterdir())
    assert logs == sorted(f"ep{r['episode']:04d}.jsonl" for r in doc["episodes"]), "partial files left"
    assert "Traceback" not in output
