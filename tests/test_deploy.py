"""Every metric a dashboard panel or an alert rule uses is really exported after real traffic."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.app import create_app
from app.settings import Settings
from tests.test_api import wait_ready

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
OURS = re.compile(r"\b((?:zhserve|process)_[a-z_]+)\b")


def dashboard_queries() -> list[str]:
    board = json.loads((DEPLOY / "grafana" / "dashboards" / "zhserve.json").read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def alert_queries() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


@pytest.fixture(scope="module")
def exported(tiny_models) -> set[str]:
    with TestClient(create_app(Settings(models=tiny_models, max_queue_rows=2))) as c:
        wait_ready(c)
        c.post("/extract", json={"texts": ["《邪少兵王》是冰火未央写的网络小说", "周杰伦"]})
        c.post("/extract", json={"text": ""})
        c.post("/extract", json={"texts": ["a", "b", "c"]})  # 429: over max_queue_rows
        text = c.get("/metrics").text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_queried_metric_is_exported(exported, source):
    queries = dashboard_queries() if source == "dashboard" else alert_queries()
    used = {name for q in queries for name in OURS.findall(q)}
    assert used, "no zhserve metrics found in the queries"
    missing = sorted(used - exported)
    assert not missing, f"{source} queries metrics that /metrics does not export: {missing}"


def test_dashboard_covers_the_operator_questions():
    queries = " ".join(dashboard_queries())
    for name in ("zhserve_request_duration_seconds_bucket", "zhserve_queue_depth", "zhserve_queue_wait_seconds_bucket",
                 "zhserve_batch_size_bucket", "zhserve_inference_duration_seconds_bucket", "zhserve_rows_total",
                 "zhserve_model_ready", "process_resident_memory_bytes", "process_cpu_seconds_total"):
        assert name in queries, name


def run_tool(*args: str) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).parent / args[0]
    return subprocess.run([str(tool), *args[1:]], capture_output=True, text=True, cwd=DEPLOY.parent, timeout=120)


def test_dockerfile_passes_hadolint():
    result = run_tool("hadolint", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_files_follow_the_compose_specification():
    result = run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec",
                      "docker-compose.yml", "deploy/compose.gpu.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_manifests_validate_against_the_schemas():
    manifests = sorted(str(p.relative_to(DEPLOY.parent)) for p in (DEPLOY / "k8s").glob("*.yaml"))
    result = run_tool("kubernetes-validate", "--strict", *manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    for kind in ("deployment/zhserve", "deployment/zhserve-gpu", "horizontalpodautoscaler/zhserve",
                 "poddisruptionbudget/zhserve", "service/zhserve"):
        assert f"passed for resource {kind} " in result.stdout + result.stderr, kind
