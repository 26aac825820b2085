"""The HTTP API on a tiny exported model: errors, limits, readiness, isolation, metrics."""

from __future__ import annotations

import shutil
import time

import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.settings import Settings


def wait_ready(client: TestClient, seconds: float = 60) -> dict:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        body = client.get("/readyz").json()
        if "loading" not in body["models"].values():
            return body
        time.sleep(0.05)
    raise AssertionError("models did not finish loading")


@pytest.fixture(scope="module")
def repo(tiny_models, tmp_path_factory):
    """The tiny model plus a broken one beside it."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(tiny_models / "extract", root / "extract")
    broken = root / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "subject.onnx").write_bytes(b"not an onnx file")
    shutil.copy(tiny_models / "extract" / "model.json", root / "broken" / "model.json")
    return root


def client_for(repo, **settings) -> TestClient:
    return TestClient(create_app(Settings(models=repo, **settings)))


@pytest.fixture(scope="module")
def client(repo):
    with client_for(repo) as c:
        wait_ready(c)
        yield c


def error_of(response):
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}
    return body["error"]


def test_extract_answers_each_text(client):
    r = client.post("/extract", json={"texts": ["《邪少兵王》是冰火未央写的网络小说", "周杰伦出生于台湾"]})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "extract" and len(body["results"]) == 2
    assert body["results"][1]["text"] == "周杰伦出生于台湾"
    for result in body["results"]:
        for t in result["triples"]:
            assert result["text"][slice(*t["subject_span"])] == t["subject"]


@pytest.mark.parametrize("payload, field", [
    ({"text": ""}, "texts[0]"),
    ({"text": "   "}, "texts[0]"),
    ({"text": "长" * 600}, "max_length"),
    ({"text": 5}, "text"),
    ({"texts": ["a", 3]}, "texts.1"),
    ({"texts": []}, "texts"),
    ({}, "exactly one"),
    ({"text": "a", "texts": ["b"]}, "exactly one"),
    ({"text": "a", "extra": 1}, "extra"),
])
def test_invalid_input_is_422_naming_the_field(client, payload, field):
    r = client.post("/extract", json=payload)
    assert r.status_code == 422
    err = error_of(r)
    assert err["type"] == "invalid_input" and field in err["message"]


def test_too_many_texts_is_422(client):
    r = client.post("/extract", json={"texts": ["周杰伦"] * 65})
    assert r.status_code == 422 and "65 texts" in error_of(r)["message"]


def test_malformed_json_is_422(client):
    r = client.post("/extract", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and error_of(r)["type"] == "invalid_input"


def test_body_over_the_limit_is_413(repo):
    with client_for(repo, max_body_bytes=200) as c:
        r = c.post("/extract", json={"text": "长" * 300})
        assert r.status_code == 413 and error_of(r)["type"] == "payload_too_large"

        def chunks():  # no Content-Length: the limit holds while streaming too
            yield b'{"text": "'
            for _ in range(10):
                yield "长".encode() * 20
            yield b'"}'

        r = c.post("/extract", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and error_of(r)["type"] == "payload_too_large"


def test_full_queue_is_429_with_retry_after(repo):
    with client_for(repo, max_queue_rows=2) as c:
        wait_ready(c)
        r = c.post("/extract", json={"texts": ["周杰伦"] * 3})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert error_of(r)["type"] == "overloaded"


def test_passed_deadline_is_504(repo):
    with client_for(repo, request_timeout_s=1e-6) as c:
        wait_ready(c)
        r = c.post("/extract", json={"text": "周杰伦出生于台湾"})
        assert r.status_code == 504 and error_of(r)["type"] == "deadline_exceeded"


def test_broken_model_is_reported_and_isolated(client):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["broken"]["state"] == "failed" and models["broken"]["error"]
    assert models["extract"]["state"] == "ready" and models["extract"]["version"] == "1"
    assert models["extract"]["quality"]["f1"] is not None
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"]["broken"] == "failed"
    assert client.post("/extract", json={"text": "周杰伦"}).status_code == 200


def test_no_model_for_a_task_is_503(tmp_path):
    with client_for(tmp_path) as c:
        r = c.post("/extract", json={"text": "周杰伦"})
        assert r.status_code == 503 and error_of(r)["type"] == "unavailable"
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").json() == {"status": "ok"}


def test_metrics_after_traffic(client):
    client.post("/extract", json={"text": "《邪少兵王》是冰火未央写的网络小说"})
    client.post("/extract", json={"text": ""})
    text = client.get("/metrics").text
    for name in ("zhserve_request_duration_seconds_bucket", "zhserve_queue_wait_seconds_bucket",
                 "zhserve_batch_size_bucket", "zhserve_inference_duration_seconds_bucket",
                 "zhserve_queue_depth", "zhserve_model_ready", "zhserve_errors_total", "process_resident_memory_bytes"):
        assert name in text, name
    assert 'zhserve_request_duration_seconds_count{endpoint="/extract",status="200"}' in text
    assert 'zhserve_request_duration_seconds_count{endpoint="/extract",status="422"}' in text
    assert 'zhserve_batch_size_count{model="extract/subject"}' in text
    assert 'zhserve_model_ready{model="extract"} 1.0' in text
    assert 'zhserve_model_ready{model="broken"} 0.0' in text


def test_openapi_docs(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/extract" in paths and "/v1/models" in paths
