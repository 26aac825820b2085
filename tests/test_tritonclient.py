"""The real KServe v2 client, tritonclient[http], against a live `zhserve serve` on the shipped models: health,
server metadata, and for every stage of every shipped model its metadata, configuration, readiness (versioned
too) and inference in both of the client's modes (binary tensors, its default, and JSON), which must agree.
Errors reach the client as InferenceServerException with the server's message; statistics count what ran.
Bodies the client would never send (a header length past the body, sizes that do not add up) are posted raw.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from bench.extract import free_port, start, stop

pytestmark = pytest.mark.slow

MODELS = Path(__file__).resolve().parent.parent / "models"


def shipped_stages() -> list[str]:
    """v2 model names of the shipped stages: <model> for a single-stage model, else <model>.<stage>."""
    names = []
    for config_path in sorted(MODELS.glob("*/model.json")):
        stages = json.loads(config_path.read_text())["stages"]
        names += [config_path.parent.name] if len(stages) == 1 else [f"{config_path.parent.name}.{s}" for s in stages]
    return names


STAGES = shipped_stages()


@pytest.fixture(scope="module")
def url():
    port = free_port()
    proc = start([sys.executable, "-m", "app", "serve", "--models", str(MODELS), "--port", str(port)],
                 {"ZHSERVE_INTRA_OP_THREADS": "1", "OMP_NUM_THREADS": "1"}, port)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def client(url):
    with triton.InferenceServerClient(url) as c:
        yield c


def example_inputs(metadata: dict, batch: int = 2, seq: int = 5) -> dict[str, np.ndarray]:
    """Valid arrays for a stage's inputs: variable axes get `batch` then `seq`; ids small enough for any bound."""
    rng = np.random.default_rng(0)
    arrays = {}
    for t in metadata["inputs"]:
        shape = [d if d >= 0 else batch if i == 0 else seq for i, d in enumerate(t["shape"])]
        arrays[t["name"]] = {"INT64": lambda s: (np.arange(np.prod(s)).reshape(s) % 4 + 1),
                             "FP32": lambda s: rng.random(s, dtype=np.float32),
                             "BOOL": lambda s: np.ones(s, dtype=bool)}[t["datatype"]](shape)
    return arrays


def infer_inputs(arrays: dict[str, np.ndarray], metadata: dict, binary: bool) -> list[triton.InferInput]:
    types = {t["name"]: t["datatype"] for t in metadata["inputs"]}
    return [triton.InferInput(name, list(a.shape), types[name]).set_data_from_numpy(a, binary_data=binary)
            for name, a in arrays.items()]


def test_health_and_server_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "zhserve"
    assert set(meta["extensions"]) == {"binary_tensor_data", "model_configuration", "statistics", "model_repository"}


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_has_metadata_config_and_readiness(client, name):
    meta = client.get_model_metadata(name)
    assert meta["name"] == name and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert client.get_model_metadata(name, "1") == meta
    config = client.get_model_config(name)
    assert client.get_model_config(name, "1") == config
    assert config["name"] == name and config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] >= 1
    for kind in ("input", "output"):  # Triton's dims: the metadata shape less its batch axis
        assert [(t["name"], t["data_type"], t["dims"]) for t in config[kind]] == \
               [(t["name"], "TYPE_" + t["datatype"], t["shape"][1:]) for t in meta[kind + "s"]]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] >= 0
    assert int(config["parameters"]["max_batch_tokens"]["string_value"]) >= 1
    assert client.is_model_ready(name) and client.is_model_ready(name, "1")
    assert not client.is_model_ready(name, "2")


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_infers_alike_in_binary_and_json(client, name):
    meta = client.get_model_metadata(name)
    arrays = example_inputs(meta)
    binary = client.infer(name, infer_inputs(arrays, meta, binary=True))  # the client's default: all binary
    outputs = [o["name"] for o in meta["outputs"]]
    as_json = client.infer(name, infer_inputs(arrays, meta, binary=False), model_version="1",
                           outputs=[triton.InferRequestedOutput(o, binary_data=False) for o in outputs])
    assert all("binary_data_size" in o["parameters"] for o in binary.get_response()["outputs"])
    assert all("data" in o for o in as_json.get_response()["outputs"])
    assert as_json.get_response()["model_version"] == "1"
    for o in meta["outputs"]:
        a, b = binary.as_numpy(o["name"]), as_json.as_numpy(o["name"])
        assert a.shape == b.shape and a.shape[0] == 2 and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_outputs_may_mix_binary_and_json(client):
    ids = np.array([[5, 6, 7, 8]], dtype=np.int64)
    (token_ids,) = infer_inputs({"token_ids": ids}, client.get_model_metadata("extract.subject"), binary=False)
    result = client.infer("extract.subject", [token_ids], request_id="mixed", outputs=[
        triton.InferRequestedOutput("subject_probs", binary_data=True),
        triton.InferRequestedOutput("hidden", binary_data=False)])
    probs, hidden = result.get_response()["outputs"]
    assert result.get_response()["id"] == "mixed"
    assert probs["parameters"] == {"binary_data_size": 4 * 2 * 4} and "data" not in probs
    assert len(hidden["data"]) == 4 * 128
    assert result.as_numpy("subject_probs").shape == (1, 4, 2) and result.as_numpy("hidden").shape == (1, 4, 128)
    assert ((result.as_numpy("subject_probs") >= 0) & (result.as_numpy("subject_probs") <= 1)).all()


def client_error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


def test_errors_reach_the_client_with_the_servers_message(client):
    meta = client.get_model_metadata("mlm")
    wrong_type = triton.InferInput("token_ids", [1, 3], "FP32").set_data_from_numpy(np.ones((1, 3), np.float32))
    error = client_error(lambda: client.infer("mlm", [wrong_type]))
    assert error.status() == "400" and "input token_ids: datatype FP32, expected INT64" in error.message()
    too_big = infer_inputs({"token_ids": np.array([[5, 99999, 3]])}, meta, binary=True)
    assert "id 99999 is outside [0, 8661)" in client_error(lambda: client.infer("mlm", too_big)).message()
    ok = infer_inputs({"token_ids": np.array([[5, 6]])}, meta, binary=True)
    assert "version '2' is not served (version 1 is)" in \
        client_error(lambda: client.infer("mlm", ok, model_version="2")).message()
    assert "unknown model 'nope'" in client_error(lambda: client.get_model_config("nope")).message()
    assert "unknown output(s) ['x']" in client_error(
        lambda: client.infer("mlm", ok, outputs=[triton.InferRequestedOutput("x")])).message()
    assert "not supported" in client_error(
        lambda: client.infer("mlm", ok, outputs=[triton.InferRequestedOutput("hidden", class_count=3)])).message()


def test_statistics_count_what_ran(client):
    def stats() -> dict:
        (s,) = client.get_inference_statistics("mlm")["model_stats"]
        return s

    meta = client.get_model_metadata("mlm")
    before = stats()
    for _ in range(3):
        client.infer("mlm", infer_inputs({"token_ids": np.full((2, 6), 7)}, meta, binary=True))
    too_long = infer_inputs({"token_ids": np.full((1, 200), 7)}, meta, binary=True)  # over max_length 128
    assert "over the stage's max_length 128" in client_error(lambda: client.infer("mlm", too_long)).message()
    after = stats()
    assert after["name"] == "mlm" and after["version"] == "1"
    assert after["inference_count"] - before["inference_count"] == 6  # rows
    assert after["execution_count"] - before["execution_count"] == 3  # each request's two rows ran as one batch
    inference, earlier = after["inference_stats"], before["inference_stats"]
    assert inference["success"]["count"] - earlier["success"]["count"] == 3
    assert inference["fail"]["count"] - earlier["fail"]["count"] == 1
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert inference[phase]["count"] - earlier[phase]["count"] == 3
    assert inference["compute_infer"]["ns"] > earlier["compute_infer"]["ns"]
    twos = {b["batch_size"]: b["count"] for b in after["batch_stats"]}.get(2, 0)
    assert twos - {b["batch_size"]: b["count"] for b in before["batch_stats"]}.get(2, 0) == 3
    assert after["last_inference"] >= before["last_inference"] > 0
    assert client.get_inference_statistics("mlm", "1") == client.get_inference_statistics("mlm")
    assert sorted(s["name"] for s in client.get_inference_statistics()["model_stats"]) == sorted(STAGES)


# -- bodies the client would not send, posted raw -------------------------------------------------------------------

def client_body(arrays: dict[str, np.ndarray], metadata: dict) -> tuple[bytes, int]:
    """The body tritonclient would send (JSON header + binary tensors) and its header length."""
    return triton.InferenceServerClient.generate_request_body(infer_inputs(arrays, metadata, binary=True))


def post(url: str, content: bytes, headers: dict) -> httpx.Response:
    return httpx.post(f"http://{url}/v2/models/mlm/infer", content=content, headers=headers, timeout=30)


def test_raw_bodies_that_do_not_add_up_are_400(client, url):
    meta = client.get_model_metadata("mlm")
    body, header_length = client_body({"token_ids": np.array([[5, 6, 7]])}, meta)
    ok = post(url, body, {"Inference-Header-Content-Length": str(header_length)})
    assert ok.status_code == 200 and ok.headers["content-type"] == "application/octet-stream"
    json_length = int(ok.headers["inference-header-content-length"])
    header = json.loads(ok.content[:json_length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == len(ok.content) - json_length == 3 * 256 * 4
    cases = {
        (body, str(len(body) + 1)): f"Inference-Header-Content-Length {len(body) + 1} is past the end",
        (body, "-3"): "is not a byte count",
        (body[:-1], str(header_length)): "binary_data_size 24 runs past the end of the body (23 bytes",
        (body + b"\0", str(header_length)): "1 bytes of binary data after the last binary input",
        (body, None): "JSON decode error",
        (body.replace(b'"binary_data_size":24', b'"binary_data_size":16')[:-8], str(header_length)):
            "input token_ids: 16 bytes of binary data for shape [1, 3] of INT64 (24 expected)",
    }
    for (content, length), message in cases.items():
        headers = {} if length is None else {"Inference-Header-Content-Length": length}
        r = post(url, content, headers)
        assert r.status_code == 400 and message in r.json()["error"], (message, r.text)


def test_json_bodies_are_read_whatever_their_content_type(url):
    body = json.dumps({"inputs": [{"name": "token_ids", "shape": [1, 2], "datatype": "INT64", "data": [5, 6]}]})
    for content_type in (None, "text/plain", "application/octet-stream", "application/json"):
        r = post(url, body.encode(), {} if content_type is None else {"Content-Type": content_type})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json" and r.json()["outputs"][0]["shape"] == [1, 2, 256]
    r = post(url, body.encode(), {"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "Content-Encoding gzip is not supported" in r.json()["error"]


# -- the model repository extension (the repository's names are model folders: qa is one stage) ---------------------

def test_repository_index_unload_and_load(client):
    index = {e["name"]: e for e in client.get_model_repository_index()}
    assert sorted(index) == sorted(p.parent.name for p in MODELS.glob("*/model.json"))
    assert all(e["state"] == "READY" and e["version"] == "1" for e in index.values())
    meta = client.get_model_metadata("mlm")
    arrays, output = example_inputs(meta), meta["outputs"][0]["name"]
    before = client.infer("mlm", infer_inputs(arrays, meta, binary=True)).as_numpy(output)
    client.unload_model("mlm")
    try:
        assert not client.is_model_ready("mlm") and client.is_server_live()
        assert "model mlm is unloaded" in client_error(
            lambda: client.infer("mlm", infer_inputs(arrays, meta, binary=True))).message()
        assert "mlm" not in {s["name"] for s in client.get_inference_statistics()["model_stats"]}
        assert {e["name"]: e["state"] for e in client.get_model_repository_index()}["mlm"] == "UNAVAILABLE"
    finally:
        client.load_model("mlm")
    assert client.is_model_ready("mlm", "1")
    after = client.infer("mlm", infer_inputs(arrays, meta, binary=False)).as_numpy(output)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    assert client.get_inference_statistics("mlm")["model_stats"][0]["inference_count"] == 2  # a fresh version
    assert "no model 'nope'" in client_error(lambda: client.load_model("nope")).message()
