"""Prometheus metrics (prefix zhserve_, durations in seconds), one registry per server instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.runtime.errors import ZhserveError

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
DROP_REASONS = ("deadline", "client_gone", "shutdown")
ERROR_TYPES = tuple(cls.type for cls in (ZhserveError, *ZhserveError.__subclasses__()))


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
        self.batch_tokens = Counter(
            "zhserve_batch_tokens", "Tokens run through inference: real (the rows' own) and padded (rows x the "
            "longest row); their ratio is the padding overhead", ["model", "kind"], registry=r)
        self.rows_dropped = Counter(
            "zhserve_rows_dropped", "Rows dropped before inference, by reason (deadline, client_gone, shutdown)",
            ["model", "reason"], registry=r)
        self.model_ready = Gauge("zhserve_model_ready", "1 when the model is loaded and ready", ["model"], registry=r)
        self.model_loads = Counter(
            "zhserve_model_loads", "Model version loads (startup, repository API, watch), by result (success, "
            "failure)", ["model", "result"], registry=r)
        self.errors = Counter("zhserve_errors", "Errors returned, by type", ["type"], registry=r)
        for error_type in ERROR_TYPES:  # exported at 0 from the start, so rates and alerts have a series
            self.errors.labels(error_type)

    def touch_model(self, model: str) -> None:
        """Create every per-model series at 0, so dashboards and alerts see them before the first event."""
        for metric in (self.queue_wait, self.batch_size, self.inference_duration, self.queue_depth,
                       self.rows_in_flight, self.rows):
            metric.labels(model)
        for kind in ("real", "padded"):
            self.batch_tokens.labels(model, kind)
        for reason in DROP_REASONS:
            self.rows_dropped.labels(model, reason)
