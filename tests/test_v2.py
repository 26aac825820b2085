"""Open Inference Protocol (KServe v2) on the tiny model, with hand-built requests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.settings import Settings
from tests.test_api import wait_ready


@pytest.fixture(scope="module")
def client(tiny_models):
    with TestClient(create_app(Settings(models=tiny_models))) as c:
        wait_ready(c)
        yield c


def ids_tensor(shape=(2, 5), datatype="INT64", data=None):
    n = shape[0] * shape[1] if len(shape) == 2 else 1
    return {"name": "token_ids", "shape": list(shape), "datatype": datatype,
            "data": data if data is not None else [7 + i % 11 for i in range(n)]}


def test_health_and_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/extract.subject/ready").json() == {"name": "extract.subject", "ready": True}
    assert client.get("/v2/models/extract.subject/versions/1/ready").json()["ready"] is True
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
    meta = client.get("/v2/models/extract.subject").json()
    assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "token_ids", "datatype": "INT64", "shape": [-1, -1]}]
    assert {o["name"] for o in meta["outputs"]} == {"subject_probs", "hidden"}


def test_infer_runs_the_onnx_stage(client):
    r = client.post("/v2/models/extract.subject/infer",
                    json={"id": "r1", "inputs": [ids_tensor()], "outputs": [{"name": "subject_probs"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "r1" and body["model_name"] == "extract.subject" and body["model_version"] == "1"
    (out,) = body["outputs"]
    assert out["name"] == "subject_probs" and out["shape"] == [2, 5, 2] and out["datatype"] == "FP32"
    assert len(out["data"]) == 20 and all(0.0 <= p <= 1.0 for p in out["data"])


def test_infer_agrees_with_extract_stage_rows(client):
    """The same ids give the same probabilities alone and batched with another row."""
    one = client.post("/v2/models/extract.subject/infer", json={"inputs": [ids_tensor((1, 5))]}).json()
    two = client.post("/v2/models/extract.subject/infer", json={"inputs": [ids_tensor((2, 5))]}).json()
    p1 = next(o for o in one["outputs"] if o["name"] == "subject_probs")["data"]
    p2 = next(o for o in two["outputs"] if o["name"] == "subject_probs")["data"]
    assert p2[:10] == pytest.approx(p1, abs=1e-5)


@pytest.mark.parametrize("tensor, words", [
    (ids_tensor(datatype="FP32"), "datatype FP32, expected INT64"),
    (ids_tensor(shape=(2, 5, 1)), "3 axes, expected 2"),
    (ids_tensor(shape=(2, 5), data=[1, 2, 3]), "3 values for shape [2, 5]"),
    (ids_tensor(data=[0.5] * 10), "not INT64"),
    ({**ids_tensor(), "name": "tokens"}, "unknown input(s) ['tokens']"),
    (ids_tensor(shape=(0, 5), data=[]), "empty batch"),
])
def test_bad_tensors_get_400_with_a_clear_message(client, tensor, words):
    r = client.post("/v2/models/extract.subject/infer", json={"inputs": [tensor]})
    assert r.status_code == 400
    assert words in r.json()["error"]


def test_missing_input_unknown_output_and_unknown_model(client):
    r = client.post("/v2/models/extract.object/infer", json={"inputs": [
        {"name": "mask", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]})
    assert r.status_code == 400 and "missing input(s) ['hidden', 'subject']" in r.json()["error"]
    r = client.post("/v2/models/extract.subject/infer", json={"inputs": [ids_tensor()], "outputs": [{"name": "x"}]})
    assert r.status_code == 400 and "unknown output(s) ['x']" in r.json()["error"]
    r = client.post("/v2/models/nope/infer", json={"inputs": [ids_tensor()]})
    assert r.status_code == 400 and "unknown model 'nope'" in r.json()["error"]
    r = client.post("/v2/models/extract.subject/infer", json={"inputs": "x"})
    assert r.status_code == 400 and "inputs" in r.json()["error"]


def test_v2_traffic_shares_the_batcher_metrics(client):
    client.post("/v2/models/extract.subject/infer", json={"inputs": [ids_tensor()]})
    metrics = client.get("/metrics").text
    assert 'zhserve_request_duration_seconds_count{endpoint="/v2/models/{name}/infer",status="200"}' in metrics
    assert 'zhserve_batch_size_count{model="extract/subject"}' in metrics


MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="module")
def degraded(tmp_path_factory):
    """The shipped qa model beside one whose ONNX file is not one (it fails to load)."""
    root = tmp_path_factory.mktemp("degraded")
    (root / "qa").symlink_to(MODELS / "qa", target_is_directory=True)
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "subject.onnx").write_bytes(b"not an onnx file")
    shutil.copy(MODELS / "extract" / "model.json", root / "broken" / "model.json")
    with TestClient(create_app(Settings(models=root))) as c:
        assert wait_ready(c)["models"] == {"broken": "failed", "qa": "ready"}
        yield c


@pytest.mark.slow
def test_a_failed_model_has_no_statistics_or_configuration(degraded):
    assert [s["name"] for s in degraded.get("/v2/models/stats").json()["model_stats"]] == ["qa.gradient", "qa.reader"]
    assert degraded.get("/v2/models/qa.reader/config").json()["input"][1] == {
        "name": "question_ids", "data_type": "TYPE_INT64", "dims": [64]}
    for path in ("config", "stats", "versions/1/stats", "versions/1/config"):
        r = degraded.get(f"/v2/models/broken.subject/{path}")
        assert r.status_code == 503 and "model broken is failed" in r.json()["error"], (path, r.text)
    assert degraded.get("/v2/models/broken.subject/ready").status_code == 503
    r = degraded.get("/v2/models/qa.reader/versions/7/config")
    assert r.status_code == 400 and r.json() == {"error": "model 'qa.reader': version '7' is not served (version 1 is)"}
