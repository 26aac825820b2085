"""Operating the server: API keys, the per-request deadline header, CORS and the per-route-group body limits.

Access is checked on routes that need no model (/v1/models answers 200 on an empty repository); the deadline and
the /v2 body limit run the shipped extractor (models/extract, its own repository beside nothing else).
"""

from __future__ import annotations

import http.client
import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.app import create_app
from app.settings import Settings
from tests.live_server import live_server
from tests.test_api import wait_ready

MODELS = Path(__file__).resolve().parent.parent / "models"
KEYS = ("k1-3f9a0c7e5b2d4e6f8a1b", "k2-77c1d2e3f4a5b6c7d8e9")
FILE_KEY = "kf-0d1e2f3a4b5c6d7e8f90"
WRONG = "k1-3f9a0c7e5b2d4e6f8a1c"  # one character off KEYS[0]
CHALLENGE = 'Bearer realm="zhserve"'
TEXT = "《邪少兵王》是冰火未央写的网络小说"


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def unauthorized_count(metrics_text: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "zhserve_errors_total" and sample.labels.get("type") == "unauthorized":
                return sample.value
    raise AssertionError("zhserve_errors_total{type=unauthorized} is not exported")


@pytest.fixture(scope="module")
def empty_repo(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("empty_repo")


@pytest.fixture(scope="module")
def keyed(empty_repo):
    with TestClient(create_app(Settings(models=empty_repo, api_keys=list(KEYS)))) as c:
        yield c


@pytest.fixture(scope="module")
def extract_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("extract_repo")
    (root / "extract").symlink_to(MODELS / "extract", target_is_directory=True)
    return root


def serving(repo: Path, **settings) -> TestClient:
    return TestClient(create_app(Settings(models=repo, intra_op_threads=1, **settings)))


@pytest.fixture(scope="module")
def model(extract_repo):
    """The shipped extractor, no keys, a small body limit for the task routes and a larger one for /v2."""
    with serving(extract_repo, max_body_bytes=1000, max_v2_body_bytes=20_000) as c:
        assert wait_ready(c)["models"] == {"extract": "ready"}
        yield c


# --- API keys ---------------------------------------------------------------------------------------------------

def test_keys_are_off_by_default(empty_repo):
    with TestClient(create_app(Settings(models=empty_repo))) as c:
        assert c.get("/v1/models").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert "securitySchemes" not in c.get("/openapi.json").json().get("components", {})


@pytest.mark.parametrize("headers", [
    {}, bearer(WRONG), bearer(KEYS[0][:-1]), bearer(KEYS[0] + "0"), bearer(KEYS[0].upper()),
    {"Authorization": f"Basic {KEYS[0]}"}, {"Authorization": KEYS[0]}, {"Authorization": "Bearer "},
    {"X-Api-Key": KEYS[0]},
], ids=["none", "wrong", "prefix", "longer", "other-case", "basic", "no-scheme", "empty", "other-header"])
def test_a_missing_or_wrong_key_is_401(keyed, headers):
    r = keyed.get("/v1/models", headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == CHALLENGE
    error = r.json()["error"]
    assert error["type"] == "unauthorized" and "API key" in error["message"]
    assert KEYS[0] not in r.text


@pytest.mark.parametrize("header", [f"Bearer {KEYS[0]}", f"Bearer {KEYS[1]}", f"bearer {KEYS[1]}",
                                    f"  Bearer   {KEYS[0]} "])
def test_every_configured_key_opens(keyed, header):
    assert keyed.get("/v1/models", headers={"Authorization": header}).status_code == 200


def test_v2_answers_401_with_the_protocol_body(keyed):
    r = keyed.post("/v2/models/extract.subject/infer", json={"inputs": []})
    assert r.status_code == 401 and r.headers["www-authenticate"] == CHALLENGE
    assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str)
    r = keyed.post("/v2/models/extract.subject/infer", json={"inputs": []}, headers=bearer(KEYS[1]))
    assert r.status_code == 400  # past the key: the protocol's own checks


def test_without_a_key_no_body_is_read(keyed):
    """The key is checked before the body limit: a huge body without a key gets 401, not 413."""
    r = keyed.post("/extract", content=b"x" * 2_000_000, headers={"Content-Type": "application/json"})
    assert r.status_code == 401


@pytest.mark.parametrize("path", [
    "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/docs", "/redoc", "/openapi.json",
    "/docs/oauth2-redirect",
    "/static-offline-docs/swagger-ui-bundle.js", "/static-offline-docs/redoc.standalone.js"])
def test_probes_and_docs_need_no_key(keyed, path):
    assert keyed.get(path).status_code != 401


@pytest.mark.parametrize("path", ["/metrics", "/v1/models", "/v2", "/v2/models/stats", "/no-such-route",
                                  "/static-offline-docs-other/x", "/docs/../v1/models"])
def test_everything_else_needs_a_key(keyed, path):
    assert keyed.get(path).status_code == 401


def test_metrics_are_public_only_when_configured(empty_repo):
    with TestClient(create_app(Settings(models=empty_repo, api_keys=[KEYS[0]], public_metrics=True))) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/v1/models").status_code == 401


def test_unauthorized_requests_are_counted(keyed):
    before = unauthorized_count(keyed.get("/metrics", headers=bearer(KEYS[0])).text)
    for headers in ({}, bearer(WRONG), {}):
        assert keyed.get("/v1/models", headers=headers).status_code == 401
    assert unauthorized_count(keyed.get("/metrics", headers=bearer(KEYS[0])).text) == before + 3


def test_keys_from_a_file(empty_repo, tmp_path):
    keys = tmp_path / "api-keys"
    keys.write_text(f"# rotated 2026-12: the old key below stays a week\n\n  {FILE_KEY}  \n# {WRONG}\n{KEYS[1]}\n")
    with TestClient(create_app(Settings(models=empty_repo, api_keys=[KEYS[0]], api_key_file=keys))) as c:
        for key in (FILE_KEY, KEYS[1], KEYS[0]):  # the file's keys and the setting's
            assert c.get("/v1/models", headers=bearer(key)).status_code == 200, key
        assert c.get("/v1/models", headers=bearer(WRONG)).status_code == 401  # a comment is not a key


def test_a_key_file_that_cannot_be_read_stops_the_start(empty_repo, tmp_path):
    with pytest.raises(ValueError, match="api_key_file .*absent"):
        create_app(Settings(models=empty_repo, api_key_file=tmp_path / "absent"))


def test_a_key_that_cannot_travel_is_refused_without_being_shown(empty_repo, tmp_path):
    (tmp_path / "keys").write_text("ok-key\nsecret with spaces\n")
    with pytest.raises(ValueError, match=r"keys, line 2") as refused:
        create_app(Settings(models=empty_repo, api_key_file=tmp_path / "keys"))
    assert "secret" not in str(refused.value)


def test_the_openapi_document_carries_the_bearer_scheme(keyed):
    doc = keyed.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "one of the server's API keys (ZHSERVE_API_KEYS)"}
    assert doc["security"] == [{"apiKey": []}]
    healthz = doc["paths"]["/healthz"]["get"]
    assert healthz["security"] == [] and "401" not in healthz["responses"]
    extract_401 = doc["paths"]["/extract"]["post"]["responses"]["401"]
    assert extract_401["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    v2_401 = doc["paths"]["/v2/models/{name}/infer"]["post"]["responses"]["401"]
    assert v2_401["content"]["application/json"]["schema"]["$ref"].endswith("/V2Error")


def test_no_key_in_metrics_nor_in_the_log_of_a_live_server(tmp_path, empty_repo):
    """uvicorn's most verbose level (trace: every ASGI message, beyond debug) and the access log on, requests with
    good and wrong keys: no key string is ever written."""
    log = tmp_path / "server.log"
    with live_server(log, ZHSERVE_MODELS=str(empty_repo), ZHSERVE_API_KEYS=",".join(KEYS),
                     ZHSERVE_LOG_LEVEL="trace", ZHSERVE_ACCESS_LOG="true") as url:
        for key in (*KEYS, WRONG, FILE_KEY):
            httpx.get(f"{url}/v1/models", headers=bearer(key))
            httpx.post(f"{url}/extract", json={"text": TEXT}, headers=bearer(key))
        metrics = httpx.get(f"{url}/metrics", headers=bearer(KEYS[0])).text
        # a raw path (no client normalises it) through the public docs files reaches no keyed route
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", "/static-offline-docs/../v1/models")
        assert connection.getresponse().status == 404
        connection.close()
    text = log.read_text()
    assert re.search(r'"GET /v1/models HTTP/1.1" 200', text) and re.search(r'"GET /v1/models HTTP/1.1" 401', text)
    assert "ASGI [" in text and "API keys: 2," in text  # the log did trace every request; it counts the keys
    assert unauthorized_count(metrics) == 4
    for key in (*KEYS, WRONG, FILE_KEY):
        assert key not in text and key not in metrics, key


# --- the per-request deadline: X-Request-Timeout --------------------------------------------------------------------

def test_a_tiny_request_timeout_is_a_504(model):
    r = model.post("/extract", json={"text": TEXT}, headers={"X-Request-Timeout": "0.000001"})
    assert r.status_code == 504 and r.json()["error"]["type"] == "deadline_exceeded"
    assert model.post("/extract", json={"text": TEXT}).status_code == 200  # the next request keeps the default


@pytest.mark.parametrize("value", ["30", "1e6", "2.5"])
def test_a_request_timeout_within_or_above_the_cap_answers(model, value):
    assert model.post("/extract", json={"text": TEXT}, headers={"X-Request-Timeout": value}).status_code == 200


def test_a_request_timeout_never_raises_the_server_deadline(extract_repo):
    """A server whose own deadline is 1 µs answers 504 whatever longer deadline a request asks for."""
    with serving(extract_repo, request_timeout_s=0.000001) as c:
        wait_ready(c)
        r = c.post("/extract", json={"text": TEXT}, headers={"X-Request-Timeout": "60"})
        assert r.status_code == 504


BAD_TIMEOUTS = ["0", "-1", "nan", "inf", "-inf", "1e999", "soon", "5s", "0x10"]


@pytest.mark.parametrize("value", BAD_TIMEOUTS)
def test_a_bad_request_timeout_is_422(model, value):
    r = model.post("/extract", json={"text": TEXT}, headers={"X-Request-Timeout": value})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["type"] == "invalid_input" and "X-Request-Timeout" in error["message"]


def v2_body(rows: int = 1, length: int = 5) -> dict:
    return {"inputs": [{"name": "token_ids", "shape": [rows, length], "datatype": "INT64",
                        "data": [7 + i % 11 for i in range(rows * length)]}]}


@pytest.mark.parametrize("value", BAD_TIMEOUTS)
def test_a_bad_request_timeout_is_400_under_v2(model, value):
    r = model.post("/v2/models/extract.subject/infer", json=v2_body(), headers={"X-Request-Timeout": value})
    assert r.status_code == 400 and "X-Request-Timeout" in r.json()["error"]


def test_v2_honours_the_request_timeout(model):
    url = "/v2/models/extract.subject/infer"
    assert model.post(url, json=v2_body(), headers={"X-Request-Timeout": "0.000001"}).status_code == 504
    assert model.post(url, json=v2_body(), headers={"X-Request-Timeout": "30"}).status_code == 200


def test_v2_honours_tritons_timeout_parameter(model):
    """Triton's request parameter `timeout` (microseconds) shortens the deadline; a bad one is a 400."""
    url = "/v2/models/extract.subject/infer"
    assert model.post(url, json={**v2_body(), "parameters": {"timeout": 1}}).status_code == 504
    assert model.post(url, json={**v2_body(), "parameters": {"timeout": 30_000_000}}).status_code == 200
    for bad in (0, -5, 1.5, "10", True):
        r = model.post(url, json={**v2_body(), "parameters": {"timeout": bad}})
        assert r.status_code == 400 and "timeout" in r.json()["error"]


def test_the_header_is_documented_on_every_inference_route(model):
    doc = model.get("/openapi.json").json()
    for path in ("/extract", "/qa", "/solve_math", "/segment", "/parse", "/explain", "/v2/models/{name}/infer"):
        names = [p["name"] for p in doc["paths"][path]["post"].get("parameters", []) if p["in"] == "header"]
        assert names == ["X-Request-Timeout"], path


# --- CORS ---------------------------------------------------------------------------------------------------------

ORIGIN = "https://console.example"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type, x-request-timeout"}


def test_cors_is_off_by_default(keyed):
    assert "access-control-allow-origin" not in keyed.options("/extract", headers=PREFLIGHT).headers
    r = keyed.get("/v1/models", headers={"Origin": ORIGIN, **bearer(KEYS[0])})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.fixture(scope="module")
def cors(empty_repo):
    with TestClient(create_app(Settings(models=empty_repo, api_keys=[KEYS[0]], cors_origins=[ORIGIN]))) as c:
        yield c


def test_a_preflight_from_the_allowed_origin_passes_without_a_key(cors):
    r = cors.options("/extract", headers=PREFLIGHT)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    allowed = r.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "x-request-timeout" in allowed


def test_the_allowed_origin_reads_answers_and_refusals(cors):
    r = cors.get("/v1/models", headers={"Origin": ORIGIN, **bearer(KEYS[0])})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-total-time" in r.headers["access-control-expose-headers"].lower()
    r = cors.get("/v1/models", headers={"Origin": ORIGIN})  # a browser page can read why it was refused
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ORIGIN


def test_another_origin_is_refused(cors):
    r = cors.options("/extract", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "cors_refused"
    assert "access-control-allow-origin" not in r.headers
    r = cors.options("/v2/models/extract.subject/infer", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    r = cors.get("/v1/models", headers={"Origin": "https://evil.example", **bearer(KEYS[0])})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_origins_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ZHSERVE_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("ZHSERVE_CORS_ORIGINS", f"{ORIGIN}, http://localhost:5173")
    monkeypatch.setenv("ZHSERVE_API_KEYS", ",".join(KEYS))
    settings = Settings()
    assert settings.cors_origins == [ORIGIN, "http://localhost:5173"]
    assert settings.api_key_values() == [k.encode() for k in KEYS] and KEYS[0] not in repr(settings)


# --- body limits per route group ----------------------------------------------------------------------------------

def test_v2_has_its_own_body_limit(model):
    big_v2 = v2_body(rows=4, length=64)  # about 1.5 KB: over the task routes' 1,000 bytes, under /v2's 20,000
    r = model.post("/v2/models/extract.subject/infer", json=big_v2)
    assert r.status_code == 200, r.text
    r = model.post("/extract", json={"texts": [TEXT] * 40})
    assert r.status_code == 413 and "1000 bytes" in r.json()["error"]["message"]
    r = model.post("/v2/models/extract.subject/infer", json=v2_body(rows=16, length=512))  # about 29 KB
    assert r.status_code == 413 and r.json() == {"error": "request body over 20000 bytes"}


def test_v2_body_limit_defaults_to_the_global_one():
    settings = Settings(max_body_bytes=1234)
    assert settings.body_limits() == (1234, 1234)
    assert Settings(max_body_bytes=1234, max_v2_body_bytes=99_999).body_limits() == (1234, 99_999)
