"""Latency, throughput, protocol overhead and memory of nitrogen-server, as JSON and a PNG plot.

    python -m benchmarks.bench                 # CPU here: fewer iterations
    python -m benchmarks.bench --device cuda   # on a GPU host; add --compare-flags for the ablation

The model is randomly initialised with the released ng.pt's reported shape (benchmarks/shapes.py):
speed depends on shapes, not on weight values. "naive" reproduces the original's schedule (mixer and
cross-attention keys/values recomputed at every Euler step) on the same weights, for the speed-up.
Clients run in processes of their own (load_client.py), servers for the overhead test too.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from nitrogen_server.app import ServerThread
from nitrogen_server.config import ServerSettings

from benchmarks.load_client import FRAME, connect
from benchmarks.shapes import build_ng_shaped_model
from nitrogen import EngineOptions, EnginePool, InferenceEngine, InferenceSession
from nitrogen.demo import build_demo_model
from nitrogen.jobs import Frame, Job

log = logging.getLogger("bench")


def cpu_name() -> str:
    """The CPU's model name and core count (platform.processor() is empty on Linux)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs"


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)

    def pick(q: float) -> float:
        return ms[min(len(ms) - 1, round(q * (len(ms) - 1)))]

    return {"n": len(ms), "p50_ms": round(pick(0.5), 3), "p99_ms": round(pick(0.99), 3),
            "mean_ms": round(statistics.fmean(ms), 3)}


def timed(fn: Callable[[], Any], n: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def naive_predict(engine: InferenceEngine) -> None:
    """The original's schedule: vision once, but mixer + K/V + velocity at every one of the N steps."""
    fwd, n = engine.forward, engine.default_steps
    job = Job([Frame(FRAME)], engine.make_noise(seed=0), 1.0, 0, n)
    with torch.inference_mode():
        fwd.encode_missing_frames([job])
        vl = fwd._vl_row(job.frames, 0)[None]
        x = job.noise[None].to(engine.device)
        with fwd.autocast():
            for step in fwd.step_constants(n):
                kv = engine.model.condition(vl)
                x = x + (1.0 / n) * engine.model.velocity(x, step, kv).float()
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)


def precision_and_steps(build: Callable[[], Any], device: str, iters: int, steps: list[int]) -> dict[str, Any]:
    """p50 per dtype (and the bf16 actions' distance from float32's), then per denoising step count."""
    out: dict[str, Any] = {}
    reference = None
    for dtype in ("float32", "bfloat16"):
        engine = InferenceEngine(build, ckpt_path="ng-shaped-random", device=device,
                                 options=EngineOptions(dtype=dtype))
        session = InferenceSession(engine)
        x1 = session.predict_raw(FRAME, seed=0)
        entry = percentiles(timed(lambda s=session: s.predict(FRAME, seed=0), iters))
        if reference is None:
            reference = x1
        else:
            entry["max_abs_dx_vs_float32"] = float(abs(x1 - reference).max())
            entry["buttons_agree_vs_float32"] = float(((x1[:, :21] > 0.5) == (reference[:, :21] > 0.5)).mean())
        out[dtype] = entry
        if dtype == "float32":
            out["steps"] = {}
            for n in steps:
                fast = InferenceSession(engine, steps=n)
                entry_n = percentiles(timed(lambda s=fast: s.predict(FRAME, seed=0), iters))
                entry_n["max_abs_dx_vs_checkpoint_steps"] = float(abs(fast.predict_raw(FRAME, seed=0) - x1).max())
                out["steps"][str(n)] = entry_n
        engine.close()
    return out


def _env() -> dict[str, str]:
    """Child processes import this checkout's modules (benchmarks/ is not an installed package)."""
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def load(kind: str, port: int, clients: int, rounds: int, warmup: int = 0) -> tuple[list[float], float]:
    """Run benchmarks.load_client in its own process: (latencies, wall seconds)."""
    cmd = [sys.executable, "-m", "benchmarks.load_client", kind, str(port), "--clients", str(clients),
           "--rounds", str(rounds), "--warmup", str(warmup)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load client failed ({done.returncode}): {done.stderr[-2000:]}")
    out = json.loads(done.stdout)
    return out["latencies_s"], out["wall_s"]


def end_to_end(engine: InferenceEngine, n: int) -> dict[str, Any]:
    """One client per port, sequential predicts: the agent's reaction time."""
    settings = ServerSettings(host="127.0.0.1", zmq_port=0, tcp_port=0, max_wait_ms=engine.options.max_wait_ms)
    with ServerThread(settings, EnginePool([engine])) as srv:
        ports = {"zmq": srv.zmq_port, "tcp_raw": srv.tcp_port, "tcp_png": srv.tcp_port}
        return {kind: percentiles(load(kind, port, 1, n, warmup=1)[0]) for kind, port in ports.items()}


def concurrency(engine: InferenceEngine, clients: int, rounds: int) -> dict[str, Any]:
    """``clients`` TCP connections (= sessions) each sending ``rounds`` predicts back to back."""
    settings = ServerSettings(host="127.0.0.1", zmq_port=0, tcp_port=0, max_batch=engine.options.max_batch,
                              max_wait_ms=engine.options.max_wait_ms)
    with ServerThread(settings, EnginePool([engine])) as srv:
        lat, wall = load("tcp_raw", srv.tcp_port, clients, rounds)
    return {"clients": clients, "predicts_per_s": round(clients * rounds / wall, 2), **percentiles(lat)}


def _free_ports(n: int) -> list[int]:
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(n)]
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@contextlib.contextmanager
def _subprocess_server(args: list[str], tcp_port: int) -> Iterator[None]:
    """A server in its own process, as users run it (one torch thread, like the in-process baseline)."""
    proc = subprocess.Popen([sys.executable, *args], env={**_env(), "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args} exited with {proc.returncode} before serving")
            try:
                socket.create_connection(("127.0.0.1", tcp_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{args} did not open port {tcp_port} within 120 s") from None
                time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        proc.wait(30)


def protocol_overhead(n: int, device: str) -> dict[str, Any]:
    """Demo model: what each port adds to an in-process predict, as the median of paired differences.

    The real server runs in its own process (`nitrogen-server --checkpoint demo`), as a player's
    client sees it; so does the "floor": the same model behind blocking one-thread-per-port servers
    (benchmarks/floor_server.py), i.e. what the kernel, libzmq and thread wake-ups cost with no event
    loop at all. All ways of calling are interleaved round-robin, so machine noise hits them alike;
    one torch thread everywhere, because the toy model's kernels are too small to split.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = InferenceEngine.from_checkpoint("demo", device=device, options=EngineOptions(max_wait_ms=0))
    session = InferenceSession(engine)
    zp, tp, fzp, ftp = _free_ports(4)
    server = ["-m", "nitrogen_server", "--checkpoint", "demo", "--device", device, "--max-wait-ms", "0",
              "--host", "127.0.0.1", "--zmq-port", str(zp), "--tcp-port", str(tp), "--log-level", "warning"]
    floor = ["-m", "benchmarks.floor_server", str(fzp), str(ftp), device]
    with _subprocess_server(server, tp), _subprocess_server(floor, ftp), contextlib.ExitStack() as stack:
        clients = {"zmq": ("zmq", zp), "tcp_raw": ("tcp_raw", tp), "tcp_png": ("tcp_png", tp),
                   "floor_zmq": ("zmq", fzp), "floor_tcp_raw": ("tcp_raw", ftp)}
        calls: dict[str, Callable[[], Any]] = {"in_process": lambda: session.predict(FRAME)}
        for name, (kind, port) in clients.items():
            calls[name] = functools.partial(stack.enter_context(connect(kind, port, timeout_s=30)).predict, FRAME)
        samples: dict[str, list[float]] = {k: timed(fn, 0, warmup=10) for k, fn in calls.items()}
        for _ in range(n):
            for key, fn in calls.items():
                samples[key] += timed(fn, 1, warmup=0)
    engine.close()
    torch.set_num_threads(threads)
    base = samples["in_process"]
    out: dict[str, Any] = {"in_process": percentiles(base)}
    for key in calls:
        if key != "in_process":
            paired = statistics.median(e - b for e, b in zip(samples[key], base))
            out[key] = {**percentiles(samples[key]), "overhead_p50_ms": round(paired * 1000, 3)}
    return out


def memory(engine: InferenceEngine) -> dict[str, Any]:
    out = {"model_weights_mb": round(engine.weight_bytes / 2**20, 1),
           "host_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if engine.device.type == "cuda":  # this engine's device, peaks since this engine was built
        out["device_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(engine.device) / 2**20, 1)
        out["device_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved(engine.device) / 2**20, 1)
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    lat = {"in-process": results["single"]["optimised"]["p50_ms"],
           **{f"e2e {k}": v["p50_ms"] for k, v in results["end_to_end"].items()}}
    if "naive" in results["single"]:
        lat = {"original schedule": results["single"]["naive"]["p50_ms"], **lat}
    a.barh(list(lat), list(lat.values()), color="#76b900")
    a.set_xlabel("p50 latency per predict (ms)")
    a.set_title(f"one client, {results['machine']['device']}")
    conc = results["concurrency"]
    xs = [c["clients"] for c in conc]
    b.plot(xs, [c["predicts_per_s"] for c in conc], "o-", color="#76b900", label="predicts/s")
    b.set_xscale("log", base=2)
    b.set_xlabel("concurrent sessions")
    b.set_ylabel("predicts/s")
    b2 = b.twinx()
    b2.plot(xs, [c["p99_ms"] for c in conc], "s--", color="#555", label="p99 ms")
    b2.set_ylabel("p99 latency (ms)")
    b.set_title("batched throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    ap.add_argument("--iters", type=int, default=None, help="single-client iterations (default 5 CPU, 100 GPU)")
    ap.add_argument("--concurrency", default="1,4,16,32")
    ap.add_argument("--rounds", type=int, default=None, help="predicts per session in the concurrency test")
    ap.add_argument("--overhead-rounds", type=int, default=200, help="round-robin rounds of the protocol overhead test")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--model", choices=["ng", "demo"], default="ng",
                    help="ng: random weights in the released shape; demo: the toy model (smoke-tests this script)")
    ap.add_argument("--compare-flags", action="store_true", help="also time each fast-path flag turned off")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                    help="precision of the main measurements (default: the server's: bf16 on CUDA)")
    ap.add_argument("--steps", default="16,8,4",
                    help="denoising step counts to time (each at most the checkpoint's)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device.startswith("cuda")
    iters = args.iters or (100 if gpu else 5)
    rounds = args.rounds or (20 if gpu else 1)

    results: dict[str, Any] = {"machine": {
        "device": torch.cuda.get_device_name(torch.device(args.device)) if gpu else cpu_name(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
    }}
    log.info("protocol overhead with the demo model...")
    results["protocol_overhead_demo"] = protocol_overhead(args.overhead_rounds, args.device)

    log.info("building the ng.pt-shaped model...")
    build = build_ng_shaped_model if args.model == "ng" else build_demo_model
    if gpu:  # the demo engine above must not count in this engine's peaks
        torch.cuda.reset_peak_memory_stats(torch.device(args.device))
    engine = InferenceEngine(build, ckpt_path=f"{args.model}-shaped-random", device=args.device,
                             options=EngineOptions(dtype=args.dtype))
    m = engine.config.model_cfg
    results["model"] = {"kind": args.model, "parameters": engine.num_parameters, "dtype": engine.dtype_name,
                        "steps": m.num_inference_timesteps, "horizon": m.action_horizon}
    session = InferenceSession(engine)
    results["single"] = {"optimised": percentiles(timed(lambda: session.predict(FRAME), iters))}
    log.info("end to end over both ports...")
    results["end_to_end"] = end_to_end(engine, iters)
    results["concurrency"] = []
    for n in [int(c) for c in args.concurrency.split(",")]:
        log.info("%d concurrent sessions...", n)
        results["concurrency"].append(concurrency(engine, n, rounds))
    results["memory"] = memory(engine)
    if gpu:
        from benchmarks.gpu_report import gpu_report

        log.info("host syncs, graph coverage, memory per step count...")
        results["gpu"] = gpu_report(engine, FRAME, [n for n in (int(v) for v in args.steps.split(","))
                                                     if n <= m.num_inference_timesteps])
    if not args.skip_naive:  # last: it runs kernels on this thread, which would slow the worker's
        log.info("original schedule...")
        results["single"]["naive"] = percentiles(timed(lambda: naive_predict(engine), max(2, iters // 5)))
        results["single"]["speedup_vs_naive"] = round(
            results["single"]["naive"]["p50_ms"] / results["single"]["optimised"]["p50_ms"], 2)
    engine.close()
    log.info("precision and step count...")
    steps = [n for n in (int(v) for v in args.steps.split(",")) if n <= m.num_inference_timesteps]
    results["precision_and_steps"] = precision_and_steps(build, args.device, iters, steps)
    if args.compare_flags and gpu:
        results["ablation"] = {}
        for flag, off in (("cuda_graphs", False), ("dtype", "float32"), ("gpu_preprocess", False)):
            e = InferenceEngine(build, ckpt_path="ng-shaped-random", device=args.device,
                                options=EngineOptions(**{flag: off}))
            s = InferenceSession(e)
            results["ablation"][f"{flag}={off}"] = percentiles(timed(functools.partial(s.predict, FRAME), iters))
            e.close()

    args.out.mkdir(parents=True, exist_ok=True)
    tag = "cuda" if gpu else "cpu"
    (args.out / f"bench-{tag}.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / f"bench-{tag}.png")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
