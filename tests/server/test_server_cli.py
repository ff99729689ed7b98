"""The real command as a subprocess: ready lines, healthcheck, SIGTERM with requests in flight."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from nitrogen_server.cli import main as cli_main
from nitrogen_server.cli import serve, settings_from_args
from server_testkit import ModelClient, TcpClient, assert_tcp_pred, assert_zmq_pred, frame

REPO = Path(__file__).resolve().parents[2]
READY = {"zmq": re.compile(r"listening zmq on tcp://127\.0\.0\.1:(\d+)"),
         "tcp": re.compile(r"listening tcp on 127\.0\.0\.1:(\d+)")}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


class Server:
    """`python -m nitrogen_server` with ports 0, read back from its log."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "nitrogen_server", *args], cwd=REPO, env=ENV,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()
        self.ports = {kind: int(self.wait_for(rx).group(1)) for kind, rx in READY.items()}

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.lines.append("<EOF>")
            self.changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str], count: int = 1, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                hits = [m for m in map(pattern.search, self.lines) if m]
                if len(hits) >= count:
                    return hits[count - 1]
                left = deadline - time.monotonic()
                assert left > 0 and "<EOF>" not in self.lines, f"no {pattern.pattern!r} in log:\n{self.log()}"
                self.changed.wait(left)

    def log(self) -> str:
        return "".join(self.lines[-50:])


def healthcheck(*args: str) -> int:
    return subprocess.run([sys.executable, "-m", "nitrogen_server", "healthcheck", *args], env=ENV,
                          cwd=REPO, capture_output=True, timeout=60, check=False).returncode


def test_sigterm_finishes_requests_in_flight_and_exits_0():
    # --max-wait-ms 900: the engine waits that long to fill a batch, so each predict stays in flight
    # for about a second: long enough to be sure SIGTERM lands while both requests are running.
    srv = Server("--checkpoint", "demo", "--host", "127.0.0.1", "--zmq-port", "0", "--tcp-port", "0",
                 "--device", "cpu", "--log-level", "debug", "--max-wait-ms", "900")
    try:
        ports = ["--zmq-port", str(srv.ports["zmq"]), "--tcp-port", str(srv.ports["tcp"])]
        assert healthcheck(*ports) == 0, srv.log()
        img = frame(1)

        def zmq_call() -> dict:
            with ModelClient(srv.ports["zmq"]) as c:
                return c.predict(img)

        def tcp_call() -> dict:
            with TcpClient(srv.ports["tcp"]) as c:
                return c.request({"type": "predict"}, img.tobytes())

        started = re.compile(r"(zmq|tcp):\S+ predict started")
        with ThreadPoolExecutor(2) as pool:
            zmq_reply, tcp_reply = pool.submit(zmq_call), pool.submit(tcp_call)
            srv.wait_for(started, count=2)
            srv.proc.send_signal(signal.SIGTERM)
            assert_zmq_pred(zmq_reply.result(timeout=30))
            assert_tcp_pred(tcp_reply.result(timeout=30))
        assert srv.proc.wait(timeout=10) == 0, srv.log()
        srv.wait_for(re.compile(r"received SIGTERM"))
        srv.wait_for(re.compile(r"nitrogen_server: stopped"))
        assert healthcheck(*ports, "--timeout", "1") == 1
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()


def test_healthcheck_in_process(demo_server, capsys):
    ports = ["--zmq-port", str(demo_server.zmq_port), "--tcp-port", str(demo_server.tcp_port)]
    assert cli_main(["healthcheck", *ports]) == 0
    assert cli_main(["healthcheck", "--only", "tcp", "--tcp-port", str(demo_server.tcp_port)]) == 0
    assert cli_main(["healthcheck", "--only", "zmq", "--zmq-port", "1", "--timeout", "0.5"]) == 1
    assert "unhealthy: zmq" in capsys.readouterr().err


def test_bad_checkpoint_exits_2_with_a_message(tmp_path, server_errors):
    missing = tmp_path / "nothing.pt"
    assert serve(settings_from_args([str(missing), "--zmq-port", "0", "--tcp-port", "0"])) == 2
    expected = [r for r in server_errors if "could not load the model" in r.getMessage()]
    assert expected and "nothing.pt" in expected[0].getMessage()
    for record in expected:
        server_errors.remove(record)


@pytest.mark.parametrize("argv", [["--tcp-port", "notaport"], ["--cfg", "-3"]])
def test_bad_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    assert exc.value.code == 2


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nitrogen_server", *args], env={**ENV, **(env or {})}, cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


def test_help_lists_every_setting_with_its_variable_and_the_subcommands():
    from nitrogen_server.config import ServerSettings

    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # argparse wraps lines
    for name, field in ServerSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert re.search(rf"{flag}\b", text), f"{flag} missing from --help"
        assert f"NITROGEN_{name.upper()}" in text, name
        if field.annotation is bool:  # a switch on by default: turned off with --no-...
            assert f"--no-{name.replace('_', '-')}" in text, name
    for expected in ("CHECKPOINT", "--no-gpu-preprocess", "--dtype {float32,bfloat16}", "healthcheck", "selfcheck"):
        assert expected in text, expected
    health = run_cli("healthcheck", "--help")
    assert health.returncode == 0 and all(f in health.stdout for f in ("--only", "--zmq-port", "--timeout"))


def test_engine_switches_are_flat_flags_and_the_command_line_beats_the_environment(monkeypatch):
    monkeypatch.setenv("NITROGEN_DTYPE", "bfloat16")
    monkeypatch.setenv("NITROGEN_WARMUP", "0")
    monkeypatch.setenv("NITROGEN_MAX_BATCH", "4")
    s = settings_from_args(["demo", "--dtype", "float32", "--steps", "8", "--no-cuda-graphs", "--gpu-preprocess",
                            "--max-batch", "2"])
    opts = s.engine_options
    assert (opts.dtype, opts.steps, opts.cuda_graphs, opts.gpu_preprocess, opts.warmup, opts.max_batch) == (
        "float32", 8, False, True, False, 2)
    assert settings_from_args(["--no-gpu-preprocess"]).gpu_preprocess is False
    assert settings_from_args([]).engine_options.dtype == "bfloat16"
    monkeypatch.delenv("NITROGEN_DTYPE")
    assert settings_from_args([]).engine_options.dtype is None  # auto: bfloat16 on CUDA, float32 elsewhere


@pytest.mark.parametrize(("argv", "message"), [
    (["--no-bf16"], "--no-bf16 was replaced by --dtype float32"),
    (["--dtype", "float16"], "--dtype / NITROGEN_DTYPE: Input should be 'float32' or 'bfloat16'"),
    (["--steps", "0"], "--steps / NITROGEN_STEPS"),
    (["--record-max-mb", "-1"], "--record-max-mb / NITROGEN_RECORD_MAX_MB"),
    (["a.pt", "--checkpoint", "b.pt"], "give the checkpoint once"),
])
def test_bad_options_name_the_flag_and_exit_2(argv, message):
    out = run_cli(*argv)
    assert out.returncode == 2
    assert message in out.stderr, out.stderr


def test_the_command_line_and_the_health_check_never_import_torch():
    code = (
        "import sys\n"
        "from nitrogen_server.cli import main, settings_from_args\n"
        "s = settings_from_args(['demo', '--dtype', 'bfloat16', '--no-warmup'])\n"
        "assert s.engine_options.dtype == 'bfloat16'\n"
        "assert main(['healthcheck', '--zmq-port', '1', '--tcp-port', '1', '--timeout', '0.2']) == 1\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr


def test_healthcheck_reads_the_servers_variables(monkeypatch, capsys):
    monkeypatch.setenv("NITROGEN_HOST", "0.0.0.0")  # the server's bind address: checked on this machine
    monkeypatch.setenv("NITROGEN_TCP_PORT", "1")
    assert cli_main(["healthcheck", "--only", "tcp", "--timeout", "0.5"]) == 1
    assert "unhealthy: tcp 127.0.0.1:1" in capsys.readouterr().err


def test_selfcheck_is_the_librarys_selfcheck():
    import importlib.util

    ours = run_cli("selfcheck", "--help")
    if importlib.util.find_spec("nitrogen.selfcheck") is None:  # the library's self-check not installed yet
        assert ours.returncode == 2 and "no nitrogen.selfcheck" in ours.stderr
        return
    theirs = subprocess.run([sys.executable, "-m", "nitrogen.selfcheck", "--help"], env=ENV, cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=False)
    assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
    flags = re.compile(r"--[a-z][a-z0-9-]*")  # the usage line names the program differently
    assert set(flags.findall(ours.stdout)) == set(flags.findall(theirs.stdout)) != set()


def test_bf16_on_a_cpu_without_bf16_units_is_refused_saying_why() -> None:
    """Issue 20: bf16 mode is ~6.5x slower than float32 on AVX2-only CPUs; the server refuses it there
    (and serves it where the CPU has AVX512-BF16 or AMX). Holds on either kind of CPU."""
    import torch
    from nitrogen_server.app import refuse_slow_bf16

    from nitrogen.precision import native_bf16

    settings = settings_from_args(["demo", "--device", "cpu", "--dtype", "bfloat16"])
    if native_bf16(torch.device("cpu")):
        refuse_slow_bf16(settings)  # allowed: bf16 is fast here
        return
    with pytest.raises(ValueError, match=r"--dtype bfloat16 refused on cpu: this CPU \(.*no AVX512-BF16 or AMX\)"):
        refuse_slow_bf16(settings)
    run = subprocess.run([sys.executable, "-m", "nitrogen_server", "demo", "--device", "cpu", "--dtype",
                          "bfloat16", "--zmq-port", "0", "--tcp-port", "0"], capture_output=True, text=True,
                         timeout=120, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 2
    assert "could not load the model: ValueError: --dtype bfloat16 refused on cpu" in run.stderr
    assert "--dtype float32" in run.stderr
    refuse_slow_bf16(settings_from_args(["demo", "--device", "cpu"]))  # float32: nothing to refuse
