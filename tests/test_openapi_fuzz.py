"""Property-based API test: schemathesis generates requests from /openapi.json and checks every answer against
the document: no 5xx, only documented status codes and content types, bodies matching their schemas.

Two repositories: the shipped models in models/ (every endpoint runs a real model), and a degraded one (the
extractor beside a model that fails to load, no other task) where the readiness endpoints answer 503 and the
missing tasks 503 too. Bounded: a fixed seed, a few dozen examples per operation, and a 4 KB body limit (longer
bodies are a documented 413 before any model runs), so texts stay short and every request is cheap. The
X-Request-Timeout header is fuzzed with the rest: a tiny one is a documented 504.

The app is reached in-process through schemathesis's ASGI transport, which runs the app's lifespan itself, on its
own event loop, where the batchers then live (a TestClient would run a second lifespan on another loop).
schemathesis's pytest plugin ends that lifespan when the test ends.
"""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import time
from pathlib import Path

import pytest
import schemathesis
import schemathesis.specs.openapi
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig
from schemathesis.schemas import BaseSchema

from app.api.app import create_app
from app.settings import Settings

# Import every schemathesis OpenAPI module now, at collection, with a shallow stack: imported lazily deep inside
# a test run, CPython 3.11.7's compiler can fail with "AST constructor recursion depth mismatch".
for _module in pkgutil.walk_packages(schemathesis.specs.openapi.__path__, "schemathesis.specs.openapi."):
    importlib.import_module(_module.name)

MODELS = Path(__file__).resolve().parent.parent / "models"
SEED = 20240611
MAX_EXAMPLES = 40  # fuzzed cases per operation, besides the document's examples and the coverage phase's cases
MAX_BODY_BYTES = 4096  # keeps generated texts short: a longer body is a 413, which is checked too
TIMEOUT_S = 60  # per request: far above the server's own 10 s deadline (a 504, documented)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

pytestmark = pytest.mark.slow


def load_schema(models: Path, max_examples: int, server_errors: tuple[str, ...] = ()) -> tuple[BaseSchema, dict]:
    """The app's /openapi.json, once every model has finished loading (ready or failed). `server_errors`: the 5xx
    statuses that are the right answer in this repository (still checked against the document)."""
    app = create_app(Settings(models=models, max_body_bytes=MAX_BODY_BYTES))
    config = SchemathesisConfig.from_dict({
        "seed": SEED, "request-timeout": TIMEOUT_S,
        "generation": {"max-examples": max_examples, "database": "none", "deterministic": True},
        # 504: the answer to a request whose X-Request-Timeout is tiny (the header is fuzzed too), documented
        "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "504", *server_errors]}}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)  # starts the lifespan
    readyz = schema["/readyz"]["GET"]
    end = time.monotonic() + 120
    while "loading" in (states := readyz.Case().call(timeout=TIMEOUT_S).json()["models"]).values():
        assert time.monotonic() < end, "models did not finish loading"
        time.sleep(0.1)
    return schema, states


@pytest.fixture
def shipped_schema():
    schema, states = load_schema(MODELS, MAX_EXAMPLES)
    assert set(states.values()) == {"ready"}, states
    return schema


@pytest.fixture
def degraded_schema(tmp_path):
    """The shipped extractor, and a model whose ONNX file is not one (it fails to load)."""
    (tmp_path / "extract").symlink_to(MODELS / "extract", target_is_directory=True)
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "subject.onnx").write_bytes(b"not an onnx file")
    shutil.copy(MODELS / "extract" / "model.json", tmp_path / "broken" / "model.json")
    # 503 is the answer for every task but extract, and for the readiness of the server and of the broken model
    schema, states = load_schema(tmp_path, MAX_EXAMPLES // 4, server_errors=("503",))
    assert states == {"broken": "failed", "extract": "ready"}, states
    return schema


@pytest.fixture(autouse=True)
def legacy_nodeid(request):
    """schemathesis 4.32.5's lazy schema reads and rewrites `item._nodeid` (to name each operation's subtest),
    which pytest 9.2 no longer has (it keeps `_id`): give it a plain attribute to work on."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


# Load and unload change which models serve: fuzzed, they would take models away from the other operations
# (tests/test_model_control.py covers them; the repository index is fuzzed here).
CONTROL = r"^/v2/repository/models/"
shipped = schemathesis.pytest.from_fixture("shipped_schema").exclude(path_regex=CONTROL)
degraded = schemathesis.pytest.from_fixture("degraded_schema").exclude(path_regex=CONTROL)
# real models on busy cores: no per-example deadline and no "too slow" health check (the server has its deadline)
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck))


@shipped.parametrize()
@FUZZ
def test_the_shipped_models_answer_as_documented(case):
    case.call_and_validate(checks=CHECKS, timeout=TIMEOUT_S)


@degraded.parametrize()
@FUZZ
def test_a_repository_with_a_failed_model_answers_as_documented(case):
    case.call_and_validate(checks=CHECKS, timeout=TIMEOUT_S)
