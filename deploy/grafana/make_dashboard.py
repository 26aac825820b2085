"""Writes dashboards/zhserve.json, the provisioned Grafana dashboard: `python deploy/grafana/make_dashboard.py`.

The panels are data (title, unit, PromQL per series) so that the dashboard, the metrics-coverage
test and the PNG renderer (deploy/render_dashboard.py) all read the same queries.
"""

import json
from pathlib import Path

W = "[$__rate_interval]"

PANELS = [
    ("Request rate by endpoint", "reqps", [
        ("{{endpoint}}", f"sum by (endpoint) (rate(zhserve_request_duration_seconds_count{W}))")]),
    ("Error ratio by endpoint (4xx and 5xx)", "percentunit", [
        ("{{endpoint}}", f'sum by (endpoint) (rate(zhserve_request_duration_seconds_count{{status=~"4..|5.."}}{W}))'
                         f" / sum by (endpoint) (rate(zhserve_request_duration_seconds_count{W}))")]),
    ("Latency p50 / p95 / p99 by endpoint", "s", [
        (f"p{q} {{{{endpoint}}}}", f"histogram_quantile(0.{q}, sum by (le, endpoint) "
                                   f"(rate(zhserve_request_duration_seconds_bucket{W})))") for q in (50, 95, 99)]),
    ("Errors by type", "reqps", [
        ("{{type}}", f"sum by (type) (rate(zhserve_errors_total{W}))")]),
    ("Queue depth (rows waiting)", "short", [
        ("{{model}}", "sum by (model) (zhserve_queue_depth)")]),
    ("Queue wait p50 / p99", "s", [
        (f"p{q} {{{{model}}}}", f"histogram_quantile(0.{q}, sum by (le, model) "
                                f"(rate(zhserve_queue_wait_seconds_bucket{W})))") for q in (50, 99)]),
    ("Mean batch size", "short", [
        ("{{model}}", f"sum by (model) (rate(zhserve_batch_size_sum{W}))"
                      f" / sum by (model) (rate(zhserve_batch_size_count{W}))")]),
    ("Batch size distribution (batches per second by size bucket)", "ops", [
        ("<= {{le}}", f'sum by (le) (rate(zhserve_batch_size_bucket{W}))')]),
    ("Inference time per batch p50 / p99", "s", [
        (f"p{q} {{{{model}}}}", f"histogram_quantile(0.{q}, sum by (le, model) "
                                f"(rate(zhserve_inference_duration_seconds_bucket{W})))") for q in (50, 99)]),
    ("Rows per second", "rowsps", [
        ("{{model}}", f"sum by (model) (rate(zhserve_rows_total{W}))"),
        ("dropped {{model}} ({{reason}})", f"sum by (model, reason) (rate(zhserve_rows_dropped_total{W}))")]),
    ("Padding overhead (padded tokens / real tokens)", "short", [
        ("{{model}}", f'sum by (model) (rate(zhserve_batch_tokens_total{{kind="padded"}}{W}))'
                      f' / sum by (model) (rate(zhserve_batch_tokens_total{{kind="real"}}{W}))')]),
    ("Model ready", "short", [("{{model}}", "zhserve_model_ready")]),
    ("Rows in flight", "short", [("{{model}}", "sum by (model) (zhserve_rows_in_flight)")]),
    ("Process memory (RSS)", "bytes", [("{{instance}}", "process_resident_memory_bytes")]),
    ("Process CPU (cores)", "short", [("{{instance}}", f"rate(process_cpu_seconds_total{W})")]),
    # From NVIDIA's dcgm-exporter when the GPU variant runs (empty otherwise).
    ("GPU utilisation", "percent", [("GPU {{gpu}}", "DCGM_FI_DEV_GPU_UTIL")]),
    ("GPU memory used", "decmbytes", [("GPU {{gpu}}", "DCGM_FI_DEV_FB_USED")]),
]


def panel(i: int, title: str, unit: str, series: list) -> dict:
    return {
        "id": i + 1, "type": "timeseries", "title": title, "datasource": {"type": "prometheus", "uid": "prometheus"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(65 + k), "expr": expr, "legendFormat": legend,
                     "datasource": {"type": "prometheus", "uid": "prometheus"}}
                    for k, (legend, expr) in enumerate(series)],
    }


def dashboard() -> dict:
    return {"uid": "zhserve", "title": "zhserve", "tags": ["zhserve"], "timezone": "browser", "schemaVersion": 39,
            "refresh": "10s", "time": {"from": "now-30m", "to": "now"}, "editable": True,
            "panels": [panel(i, *p) for i, p in enumerate(PANELS)]}


if __name__ == "__main__":
    out = Path(__file__).parent / "dashboards" / "zhserve.json"
    out.write_text(json.dumps(dashboard(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
