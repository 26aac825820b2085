"""Prometheus metrics (prefix zhserve_, durations in seconds), one registry per server instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram(
            "zhserve_request_duration_seconds", "HTTP request duration", ["endpoint", "status"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "zhserve_queue_wait_seconds", "Time a row waited in the batcher queue", ["model"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "zhserve_batch_size", "Rows per inference batch", ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.inference_duration = Histogram(
            "zhserve_inference_duration_seconds", "Duration of one batch's inference", ["model"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("zhserve_queue_depth", "Rows waiting in the batcher queue", ["model"], registry=r)
        self.rows_in_flight = Gauge("zhserve_rows_in_flight", "Rows queued or running", ["model"], registry=r)
        self.rows = Counter("zhserve_rows", "Rows run through inference", ["model"], registry=r)
        self.rows_dropped = Counter(
            "zhserve_rows_dropped", "Rows dropped before inference (deadline passed or client gone)", ["model"],
            registry=r)
        self.model_ready = Gauge("zhserve_model_ready", "1 when the model is loaded and ready", ["model"], registry=r)
        self.errors = Counter("zhserve_errors", "Errors returned, by type", ["type"], registry=r)
