"""Failover behind a real load balancer: three `nitrogen-server` processes (golden tiny-a checkpoint) behind
Debian's HAProxy in TCP mode, 16 clients on both protocols through it (6 ZeroMQ and 6 TCP Python
clients, 4 BizHawk scripts under lua5.4), one replica SIGKILLed mid-run.

What a user must see: every client carries on through the survivors; a request in flight when its
replica died fails at most once, with a clear transport error, and is retried; no answer is ever
wrong (each checked against the golden vectors); before the kill the load was spread over all three
replicas (read from their /metrics).

Balancing: the spread frontends use `balance roundrobin`. Every test client connects from 127.0.0.1, so
`balance source` (client-IP affinity, what a Kubernetes Service with sessionAffinity: ClientIP does)
would put them all on one replica and show no spread at all. The affinity is checked on its own
frontend: every connection from one address, named session included, lands on one replica, and
after that replica dies, on one survivor.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from clusterkit import HOST, HAProxy, ServerProcess, check_golden, free_port, scrape, value
from luaplay import LuaPlayer, Reference, check_episode
from nitrogen_client import ModelClient, ServerTimeout, TcpClient, TransportError

log = logging.getLogger("cluster_test")
REPLICAS = 3
ZMQ_CLIENTS, TCP_CLIENTS = 6, 6
LUA_SYSTEMS = ("NES", "SNES", "GBA", "GEN")
BEFORE_KILL = 8  # answers every client has before the kill...
AFTER_KILL = 8  # ...and after it
PHASE_TIMEOUT_S = 120
ZMQ_TIMEOUT_MS = 5000  # a REQ whose replica died never gets its reply: this is how long that costs
KILLED = [float("inf")]  # when the replica was killed (monotonic), for the failure messages


@dataclass
class PyClient:
    """One Python client thread's record."""

    name: str
    answered: int = 0
    answered_at_kill: int | None = None
    back_after_s: float | None = None  # kill -> this client's first answer after it
    failures: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


RETRY_DELAY_S = 0.5


def python_client(stats: PyClient, make: Any, g: dict, stop: threading.Event, offset: int) -> None:
    """Predict golden call i = step mod n, retrying a request that failed in transport."""
    n = int(g["n_steps"])
    step = offset
    deadline = time.monotonic() + 3 * PHASE_TIMEOUT_S
    with make() as client:
        while not stop.is_set() and time.monotonic() < deadline:
            i = step % n
            try:
                pred = client.predict(g[f"image_{i}"], seed=100 + i)
            except (ServerTimeout, TransportError) as exc:
                stats.failures.append(f"{type(exc).__name__}: {exc} ({time.monotonic() - KILLED[0]:+.2f} s)")
                if len(stats.failures) > 3:
                    return  # the test fails on this; no point hammering
                # Back off before the retry, as the player (1 s) and the Lua scripts (30 frames) do: a
                # SIGKILLed replica's listening socket still accepts connections for a while (the
                # kernel frees its memory before its sockets), and an immediate retry can land there.
                time.sleep(RETRY_DELAY_S)
                continue  # the same request again: the client reconnects by itself
            except Exception as exc:  # noqa: BLE001 - a server error reply or a bad reply is a wrong answer
                stats.wrong.append(f"call {i}: {type(exc).__name__}: {exc}")
                return
            try:
                check_golden(pred, g, i)
            except AssertionError as exc:
                stats.wrong.append(f"call {i}: {exc}")
                return
            stats.answered += 1
            step += 1
            if stats.back_after_s is None and time.monotonic() > KILLED[0]:
                stats.back_after_s = time.monotonic() - KILLED[0]


def predicts(samples: dict, port: str | None = None) -> float:
    labels = {"type": "predict", "outcome": "ok"} | ({"port": port} if port else {})
    return value(samples, "nitrogen_requests_total", **labels)


def wait_until(what: str, predicate: Any, timeout: float, clients: list) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        problems = [c for c in clients if getattr(c, "wrong", None) or getattr(c, "problems", None)]
        assert not problems, f"while waiting for {what}: {problems}"
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}: " + ", ".join(
            f"{c.name if hasattr(c, 'name') else c.system}={c.answered}" for c in clients)
        time.sleep(0.1)


def sticky_round(port: int, count: int, g: dict) -> None:
    """`count` new connections through the client-IP-affinity frontend, one named-session predict each."""
    for _ in range(count):
        with TcpClient(HOST, port, timeout_s=10, encoding="raw", session="sticky") as c:
            check_golden(c.predict(g["image_0"], seed=100), g, 0)


@pytest.fixture
def cluster(golden_dir, tmp_path):
    servers = [ServerProcess(str(golden_dir / "tiny-a.pt"), name=f"r{i}") for i in range(REPLICAS)]
    proxy = None
    try:
        for s in servers:
            s.wait_ready()
        ports = {"zmq": free_port(), "tcp": free_port(), "sticky": free_port()}
        proxy = HAProxy(tmp_path, {
            "zmq": (ports["zmq"], "roundrobin", [s.zmq_port for s in servers]),
            "tcp": (ports["tcp"], "roundrobin", [s.tcp_port for s in servers]),
            "sticky": (ports["sticky"], "source", [s.tcp_port for s in servers]),
        })
        yield servers, proxy
    finally:
        if proxy:
            proxy.stop()
        for s in servers:
            s.stop()


def test_clients_ride_through_a_replica_dying(cluster, golden, golden_dir, golden_pngs, lua_exe, tmp_path):
    servers, proxy = cluster
    g = golden("tiny-a")
    steps = int(g["n_steps"])
    started, KILLED[0] = time.monotonic(), float("inf")

    # Client-IP affinity: six connections from one address, all on one replica, named session with them.
    base = [scrape(s.metrics_port) for s in servers]
    sticky_round(proxy.ports["sticky"], 6, g)
    after = [scrape(s.metrics_port) for s in servers]
    landed = [predicts(a) - predicts(b) for a, b in zip(after, base)]
    assert sorted(landed) == [0, 0, 6], f"balance source spread one client address over replicas: {landed}"
    victim = landed.index(6)
    assert [value(a, "nitrogen_sessions_open") for a in after][victim] == 1, "the named session lives there"

    # 16 clients through the round-robin frontends.
    stop = threading.Event()
    py: list[PyClient] = []
    threads: list[threading.Thread] = []
    for k in range(ZMQ_CLIENTS + TCP_CLIENTS):
        if k < ZMQ_CLIENTS:
            stats = PyClient(f"zmq{k}")
            make = functools.partial(ModelClient, HOST, proxy.ports["zmq"], timeout_ms=ZMQ_TIMEOUT_MS)
        else:
            stats = PyClient(f"tcp{k}")
            enc = "png" if k % 2 else "raw"
            make = functools.partial(TcpClient, HOST, proxy.ports["tcp"], timeout_s=10, encoding=enc,
                                     resize_mode="stretch")
        py.append(stats)
        threads.append(threading.Thread(target=python_client, args=(stats, make, g, stop, k), daemon=True))
    lua = [LuaPlayer(lua_exe, tmp_path / f"lua{j}", system, proxy.ports["tcp"], golden_pngs, steps)
           for j, system in enumerate(LUA_SYSTEMS)]
    threads += [threading.Thread(target=p.play, args=(stop, 200), daemon=True) for p in lua]
    everyone: list[Any] = [*py, *lua]
    try:
        for t in threads:
            t.start()
        wait_until("answers before the kill", lambda: all(c.answered >= BEFORE_KILL for c in everyone),
                   PHASE_TIMEOUT_S, everyone)

        # The spread, from each replica's own metrics.
        pre = [scrape(s.metrics_port) for s in servers]
        spread = {port: [predicts(p, port) - predicts(b, port) for p, b in zip(pre, base)]
                  for port in ("zmq", "tcp")}
        total = sum(map(sum, spread.values()))
        for port, per_replica in spread.items():
            assert all(n > 0 for n in per_replica), f"{port} predicts per replica before the kill: {per_replica}"
        shares = [sum(spread[p][r] for p in spread) / total for r in range(REPLICAS)]
        assert min(shares) >= 0.15, f"load share per replica before the kill: {shares}"
        # the victim holds the named session and live clients' sessions: the kill hits players mid-game
        assert value(pre[victim], "nitrogen_sessions_open") >= 3, value(pre[victim], "nitrogen_sessions_open")

        for c in everyone:
            c.answered_at_kill = c.answered
        killed_at = KILLED[0] = time.monotonic()
        servers[victim].kill()
        wait_until("answers after the kill",
                   lambda: all(c.answered - c.answered_at_kill >= AFTER_KILL for c in everyone),
                   PHASE_TIMEOUT_S, everyone)
        recovered_s = time.monotonic() - killed_at
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert not [t for t in threads if t.is_alive()], "a client did not stop"

    # Every Python answer was golden; at most one transport failure each, and a clear one.
    for c in py:
        assert not c.wrong, f"{c.name}: wrong answer {c.wrong}"
        assert len(c.failures) <= 1, f"{c.name} failed more than once: {c.failures}\n" + diagnose(servers, proxy)
        for f in c.failures:
            assert f"{HOST}:" in f and ("within" in f or "closed" in f or "failed" in f), f
    # Every frame the scripts played matches the answer its (frame, seed) must get.
    reference = Reference(golden_dir / "tiny-a.pt", g)
    repeat = _repeat(servers, victim)
    frames_checked = 0
    for p in lua:
        assert not p.problems, f"{p.system}: {p.problems}"
        assert sum(len(e.failures) for e in p.episodes) <= 1, [e.failures for e in p.episodes if e.failures]
        for episode in p.episodes:
            frames_checked += check_episode(episode, p.system, reference, repeat, steps)

    # The survivors took over: their metrics count every answer given after the kill.
    survivors = [s for i, s in enumerate(servers) if i != victim]
    post = [scrape(s.metrics_port) for s in survivors]
    after_kill = sum(c.answered - c.answered_at_kill for c in everyone)
    gained = sum(predicts(a) - predicts(pre[servers.index(s)]) for a, s in zip(post, survivors))
    # A reply the victim sent just before it died may still arrive after: at most one per client.
    assert gained >= after_kill - len(everyone), f"survivors answered {gained}, clients got {after_kill} since"

    # Affinity again: the one address now sticks to one survivor.
    base2 = post
    sticky_round(proxy.ports["sticky"], 6, g)
    after2 = [scrape(s.metrics_port) for s in survivors]
    landed2 = [predicts(a) - predicts(b) for a, b in zip(after2, base2)]
    assert sorted(landed2) == [0, 6], f"after the kill, one address spread over survivors: {landed2}"

    lua_failures = sum(len(e.failures) for p in lua for e in p.episodes)
    back = {kind: max(c.back_after_s for c in py if c.name.startswith(kind)) for kind in ("zmq", "tcp")}
    log.info("failover: %d clients, %d answers (%d after the kill), all right; %d Lua frames checked "
             "(%d against the library, off the golden pairs after a reconnect); transport failures: "
             "zmq %d, tcp %d, lua %d; slowest first answer after the kill: zmq %.1f s, tcp %.1f s; "
             "every client %d more answers within %.1f s; load shares before: %s; test %.0f s",
             len(everyone), sum(c.answered for c in everyone), after_kill, frames_checked,
             reference.computed, *(sum(len(c.failures) for c in py if c.name.startswith(k))
                                   for k in ("zmq", "tcp")), lua_failures, back["zmq"], back["tcp"],
             AFTER_KILL, recovered_s, [round(s, 2) for s in shares], time.monotonic() - started)
    seen = sorted({re.sub(r"\d+", "N", f) for c in py for f in c.failures}
                  | {f for p in lua for e in p.episodes for f in e.failures})
    log.info("failures as the clients saw them: %s", seen)


def diagnose(servers: list[ServerProcess], proxy: HAProxy) -> str:
    """The replicas' warnings and HAProxy's abnormal connection ends, for a failure message."""
    lines = [f"{s.name}: {line}" for s in servers for line in s.lines if " INFO " not in line]
    lines += [f"haproxy: {line}" for line in proxy.lines if " -- " not in line]
    return "\n".join(lines[-60:])


def _repeat(servers: list[ServerProcess], victim: int) -> int:
    """action_downsample_ratio, from a surviving replica's info."""
    alive = next(s for i, s in enumerate(servers) if i != victim)
    with TcpClient(HOST, alive.tcp_port, timeout_s=10) as c:
        return int(c.info()["action_downsample_ratio"])
