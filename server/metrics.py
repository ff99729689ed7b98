"""Prometheus metrics: what an operator steers by (load, latency, batching, memory), on /metrics.

Off unless `--http-port` (or its old name `--metrics-port`) is given; server/http_view.py serves them
on that listener. Every server gets its own registry, so several servers in one
process (tests, notebooks) never share or clash over counters. Values that are cheap to read at
scrape time (queue depth, sessions, device memory) are read then, by a collector, instead of being
pushed on every change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .protocol import ErrorResult

log = logging.getLogger("nitrogen_server.metrics")

# Seconds: a GPU predict is a few ms, a CPU one up to seconds; a queue wait can be anything between.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
PORTS = ("zmq", "tcp")


def port_of(client_key: str) -> str:
    """The port a request came in on, from the frontend's client key (`tcp:7`, `zmq:00d9f3a1b2`).

    The key handed to PolicyService.handle is always the connection's own, never `named:...` (that is
    the session key, derived later), so its prefix names the port.
    """
    prefix = client_key.split(":", 1)[0]
    return prefix if prefix in PORTS else "other"


def engine_labels(engines: Sequence[Any]) -> list[tuple[str, str]]:
    """(engine index, device) per engine: `--device cpu,cpu` gives two engines on one device."""
    return [(str(i), str(getattr(e, "device", "unknown"))) for i, e in enumerate(engines)]


class _ScrapeTimeCollector(Collector):
    """Gauges read when Prometheus scrapes: sessions open, queue depth per engine, device memory."""

    def __init__(self, engines: Sequence[Any], sessions_open: Callable[[], int]) -> None:
        self._engines = list(engines)
        self._sessions_open = sessions_open

    def collect(self) -> Iterator[Metric]:
        sessions = GaugeMetricFamily("nitrogen_sessions_open", "Client sessions the server holds now")
        sessions.add_metric([], float(self._sessions_open()))
        yield sessions
        depth = GaugeMetricFamily("nitrogen_engine_queue_depth",
                                  "Predicts waiting for an engine's worker (not counting the batch running)",
                                  labels=["engine", "device"])
        for (index, device), engine in zip(engine_labels(self._engines), self._engines):
            depth.add_metric([index, device], float(engine.queue_depth()))
        yield depth
        yield from self._device_memory()

    def _device_memory(self) -> Iterator[Metric]:
        """torch's allocator counters for each CUDA device in use (absent on CPU/MPS: nothing to say)."""
        devices = sorted({str(e.device) for e in self._engines if getattr(e.device, "type", "") == "cuda"})
        if not devices:
            return
        import torch  # only here: a CUDA engine means torch is loaded already

        allocated = GaugeMetricFamily("nitrogen_device_memory_allocated_bytes",
                                      "Device memory held by tensors (torch.cuda.memory_allocated)",
                                      labels=["device"])
        reserved = GaugeMetricFamily("nitrogen_device_memory_reserved_bytes",
                                     "Device memory reserved by torch's caching allocator", labels=["device"])
        for device in devices:
            allocated.add_metric([device], float(torch.cuda.memory_allocated(device)))
            reserved.add_metric([device], float(torch.cuda.memory_reserved(device)))
        yield allocated
        yield reserved


class ServerMetrics:
    """The server's metrics; `request_done` is PolicyService's hook, `exposition` what /metrics serves."""

    def __init__(self, engines: Sequence[Any], sessions_open: Callable[[], int],
                 info: Mapping[str, str] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("nitrogen_requests", "Requests answered, by port, type and outcome (ok|error)",
                                ["port", "type", "outcome"], registry=r)
        self.request_seconds = Histogram("nitrogen_request_duration_seconds",
                                         "Time from a decoded request to its reply, in the server",
                                         ["port", "type"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("nitrogen_predict_queue_seconds",
                                       "A predict's wait for its engine's worker (from the reply's server_timing)",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram("nitrogen_predict_inference_seconds",
                                           "A predict's time in its batch's forward pass (from server_timing)",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("nitrogen_batch_size", "Predicts per forward pass, per engine",
                                    ["engine", "device"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("nitrogen_batch_duration_seconds", "Time of one forward pass, per engine",
                                       ["engine", "device"], buckets=LATENCY_BUCKETS, registry=r)
        if info:
            Info("nitrogen_server", "What this server runs", registry=r).info(dict(info))
        self._engines = list(engines)
        r.register(_ScrapeTimeCollector(self._engines, sessions_open))
        self._closed = False
        for (index, device), engine in zip(engine_labels(self._engines), self._engines):
            engine.add_batch_listener(self._batch_listener(index, device))

    def _batch_listener(self, index: str, device: str) -> Callable[[int, float], None]:
        size = self.batch_size.labels(index, device)
        seconds = self.batch_seconds.labels(index, device)

        def listener(batch_size: int, elapsed: float) -> None:  # on the engine's worker thread
            if not self._closed:  # an engine outlives a server that borrowed it (tests)
                size.observe(batch_size)
                seconds.observe(elapsed)

        return listener

    def request_done(self, client_key: str, kind: str, response: Any, seconds: float) -> None:
        """Count one answered request; PolicyService.handle calls this for every request."""
        port = port_of(client_key)
        outcome = "error" if isinstance(response, ErrorResult) else "ok"
        self.requests.labels(port, kind, outcome).inc()
        self.request_seconds.labels(port, kind).observe(seconds)
        self.observe_server_timing(getattr(response, "server_timing", None))

    def observe_server_timing(self, timing: Any) -> None:
        """The queue/inference split of one predict, when the reply carries `server_timing`
        (`{"queue_ms", "infer_ms", "total_ms"}`, or the library's Timing with those attributes);
        replies without it leave these histograms alone."""
        if timing is None:
            return
        for key, histogram in (("queue_ms", self.queue_seconds), ("infer_ms", self.inference_seconds)):
            ms = timing.get(key) if isinstance(timing, Mapping) else getattr(timing, key, None)
            if ms is not None:
                histogram.observe(float(ms) / 1000)

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format of every metric now, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """Stop observing the engines."""
        self._closed = True


def start_metrics(server: Any) -> ServerMetrics | None:
    """The metrics for a NitrogenServer whose service exists, if it has an HTTP port to serve them on.

    Takes every engine the server runs (`server.engines`, or the one `server.engine`).
    """
    settings = server.settings
    if settings.http_listen_port is None:
        return None
    engines = list(getattr(server, "engines", None) or [server.engine])
    service = server.service
    info = {"checkpoint": str(settings.checkpoint),
            "devices": ",".join(device for _, device in engine_labels(engines))}
    metrics = ServerMetrics(engines, lambda: len(service.sessions), info)
    service.on_request = metrics.request_done
    return metrics
