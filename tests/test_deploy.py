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
from tests.debian import program
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
                      "docker-compose.yml", "deploy/compose.gpu.yml", "deploy/compose.keys.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_manifests_validate_against_the_schemas():
    manifests = sorted(str(p.relative_to(DEPLOY.parent)) for p in (DEPLOY / "k8s").glob("*.yaml"))
    result = run_tool("kubernetes-validate", "--strict", *manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    for kind in ("deployment/zhserve", "deployment/zhserve-gpu", "horizontalpodautoscaler/zhserve",
                 "poddisruptionbudget/zhserve", "service/zhserve"):
        assert f"passed for resource {kind} " in result.stdout + result.stderr, kind
    assert "passed for resource secret/zhserve-api-keys " in result.stdout + result.stderr


@pytest.fixture(scope="module")
def promtool() -> str:
    return program("promtool", "prometheus")


def test_prometheus_config_is_valid_as_shipped(promtool):
    """Checked where it lies: the rule files it names resolve beside it, as in the compose container's folder."""
    result = subprocess.run([promtool, "check", "config", "deploy/prometheus/prometheus.yml"], capture_output=True,
                            text=True, cwd=DEPLOY.parent, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


def test_alert_rules_are_valid(promtool):
    result = subprocess.run([promtool, "check", "rules", "deploy/prometheus/alerts.yml"], capture_output=True,
                            text=True, cwd=DEPLOY.parent, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_mounts_the_prometheus_folder_whole():
    """prometheus.yml names its rule files relative to itself: the container must see the folder, not single files."""
    compose = yaml.safe_load((DEPLOY.parent / "docker-compose.yml").read_text())
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert "./deploy/prometheus:/etc/prometheus:ro" in compose["services"]["prometheus"]["volumes"]
    for rule_file in config["rule_files"]:
        assert not Path(rule_file).is_absolute() and (DEPLOY / "prometheus" / rule_file).is_file(), rule_file


def test_api_keys_are_wired_in_compose_and_kubernetes():
    keys = yaml.safe_load((DEPLOY / "compose.keys.yml").read_text())
    zhserve = keys["services"]["zhserve"]
    assert zhserve["secrets"] == ["zhserve_api_keys"] and "zhserve_api_keys" in keys["secrets"]
    assert zhserve["environment"]["ZHSERVE_API_KEY_FILE"] == "/run/secrets/zhserve_api_keys"
    example = yaml.safe_load((DEPLOY / "k8s" / "api-keys.example.yaml").read_text())
    for manifest in ("deployment.yaml", "deployment-gpu.yaml"):
        deployment = yaml.safe_load((DEPLOY / "k8s" / manifest).read_text())
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        ref = env["ZHSERVE_API_KEYS"]["valueFrom"]["secretKeyRef"]
        assert ref["optional"] is True, manifest  # no Secret: the server still starts, without keys
        assert ref["name"] == example["metadata"]["name"] and ref["key"] in example["stringData"], manifest
