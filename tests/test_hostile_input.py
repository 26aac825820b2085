"""Hostile input gets a 4xx naming what is wrong, before any inference, never a 500: lone surrogates in texts,
free-form /explain targets of the wrong types, absurd numbers in math questions, and malformed v2 tensors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.api.app import create_app
from app.api.schemas import ExplainRequest, ExtractRequest, ParseRequest, QARequest, SegmentRequest, SolveMathRequest
from app.api.v2.codec import MAX_NESTING, decode_inputs
from app.runtime.batcher import TensorSpec
from app.runtime.errors import BadRequest, InvalidInput
from app.settings import Settings
from app.tasks.extract.explain import resolve_target
from app.tasks.extract.schema import Predicate, Schema
from app.tasks.math.evaluator import MAX_DIGITS
from app.tasks.math.task import MathTask
from app.tasks.math.text import MAX_SLOTS, slot_question
from tests.test_api import wait_ready

MODELS = Path(__file__).resolve().parent.parent / "models"
TEXT = "周杰伦出生于台湾省新北市"
LONE = "\ud800"  # what the JSON escape "\ud800" decodes to: a str Python holds, UTF-8 cannot


# -- lone surrogates: every request text field ---------------------------------------------------

@pytest.mark.parametrize("model, body, field", [
    (ExtractRequest, {"text": LONE + TEXT}, "text"),
    (ExtractRequest, {"texts": [TEXT, TEXT + LONE]}, "texts.1"),
    (SegmentRequest, {"text": LONE}, "text"),
    (ParseRequest, {"text": "我爱" + LONE}, "text"),
    (ParseRequest, {"text": "我爱北京", "words": ["我", "爱", "\udc00北京"]}, "words.2"),
    (SolveMathRequest, {"question": "1+1=?" + LONE}, "question"),
    (QARequest, {"question": LONE, "passage": TEXT}, "question"),
    (QARequest, {"question": "谁", "passage": LONE}, "passage"),
    (QARequest, {"question": "谁", "passages": [TEXT, LONE]}, "passages.1"),
    (ExplainRequest, {"text": LONE + TEXT, "target": {"subject_span": [1, 4]}}, "text"),
])
def test_a_lone_surrogate_in_any_text_field_is_refused_naming_the_field(model, body, field):
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    (error,) = info.value.errors()
    assert ".".join(str(p) for p in error["loc"]) == field
    assert error["type"] == "lone_surrogate" and "lone surrogate" in error["msg"]


def test_texts_beyond_the_basic_plane_are_valid_utf8():
    body = json.loads('{"text": "\\ud840\\udc00\\ud83d\\ude00周"}')  # a surrogate pair decodes to one character
    assert ExtractRequest.model_validate(body).text == "\U00020000\U0001f600周"


# -- /explain targets of the wrong types ----------------------------------------------------------

SCHEMA = Schema([Predicate("出生地", "人物", {"@value": "地点"})])


@pytest.mark.parametrize("target, message", [
    ({"subject": "周杰伦", "predicate": ["x"]}, "target.predicate: expected a string, got list"),
    ({"subject": "周杰伦", "predicate": {"a": 1}}, "target.predicate: expected a string, got dict"),
    ({"subject": "周杰伦", "predicate": 3}, "target.predicate: expected a string, got int"),
    ({"subject": ["周杰伦"]}, "target.subject: expected a string, got list"),
    ({"subject": {"@value": "周杰伦"}, "subject_span": [0, 3]}, "target.subject: expected a string, got dict"),
    ({"subject_span": "0,3"}, "target.subject_span: expected [start, end] integers, got str"),
    ({"subject_span": [0, "3"]}, "target.subject_span: expected [start, end] integers"),
    ({"subject_span": [True, 3]}, "target.subject_span: expected [start, end] integers"),
    ({"subject_span": [[0], [3]]}, "target.subject_span: expected [start, end] integers"),
    ({"subject_span": [0, 3], "predicate": "出生地", "object": ["台湾"]},
     "target.object: expected a string or {\"@value\": string}, got list"),
    ({"subject_span": [0, 3], "predicate": "出生地", "object": {"@value": ["台湾"]}},
     "target.object.@value: expected a string, got list"),
    ({"subject_span": [0, 3], "predicate": "出生地", "object": {"@value": 5}},
     "target.object.@value: expected a string, got int"),
    ({"subject_span": [0, 3], "predicate": "出生地", "object_span": {"start": 6}},
     "target.object_span: expected [start, end] integers, got dict"),
])
def test_targets_of_the_wrong_types_are_invalid_input_naming_the_field(target, message):
    with pytest.raises(InvalidInput) as info:
        resolve_target(TEXT, target, SCHEMA)
    assert message in info.value.message


def test_a_target_that_is_not_an_object_is_invalid_input():
    with pytest.raises(InvalidInput, match="target: expected an object, got list"):
        resolve_target(TEXT, ["周杰伦"], SCHEMA)  # type: ignore[arg-type]


def test_well_typed_targets_still_resolve():
    goal = resolve_target(TEXT, {"subject": "周杰伦", "predicate": "出生地", "object": {"@value": "台湾省新北市"}},
                          SCHEMA)
    assert goal.subject == (0, 3) and goal.predicate == "出生地" and goal.object == (6, 12)
    plain = resolve_target(TEXT, {"subject_span": [0, 3], "predicate": "出生地", "object": "台湾"}, SCHEMA)
    assert plain.object == (6, 8)


# -- absurd numbers in math questions ---------------------------------------------------------------

def test_a_number_over_the_evaluators_digit_limit_is_refused():
    with pytest.raises(InvalidInput) as info:
        slot_question("小明有" + "9" * 990_000 + "元，花了3元，还剩多少元？")
    assert info.value.message == f"question: a number of 990000 digits, over the limit of {MAX_DIGITS}"


@pytest.mark.parametrize("question, digits", [
    ("一共" + "1" * (MAX_DIGITS - 1) + ".55元", MAX_DIGITS + 2),  # a decimal counts as the evaluator reads it
    ("（" + "１" * (MAX_DIGITS + 1) + "/2）", MAX_DIGITS + 1),  # full-width digits count once normalised
    ("3(1/" + "7" * (MAX_DIGITS + 5) + ")", MAX_DIGITS + 5),  # inside a mixed number
    ("".join(f"{i}个，" for i in range(MAX_SLOTS + 5)) + "4" * (MAX_DIGITS + 1), MAX_DIGITS + 1),  # past the slots
])
def test_every_number_literal_is_checked(question, digits):
    with pytest.raises(InvalidInput, match=f"a number of {digits} digits"):
        slot_question(question)


def test_numbers_within_the_limit_slot_as_before():
    longest = "1" * MAX_DIGITS
    assert slot_question(f"买{longest}个，每个2.5元").numbers == [longest, "2.5"]
    q = slot_question("买一辆汽车要多加价7%，现金只需按原价的95%付款，多付7200元，另有3(1/2)和（1/5）")
    assert q.numbers == ["7", "95", "7200", "3(1/2)", "(1/5)"]


@pytest.mark.parametrize("question", ["1 " * 500_000, "(1" * 500_000, "1." * 500_000, "3(1/" * 250_000])
def test_a_megabyte_of_short_numbers_still_slots_its_first_ones(question):
    assert len(slot_question(question).numbers) == MAX_SLOTS


class _NoModel:
    def stage(self, name: str):
        raise AssertionError(f"model work ({name}) for a question that should have been refused")


async def test_an_absurd_number_is_refused_before_any_model_work():
    task = MathTask.__new__(MathTask)  # no model files: the refusal must come before they are needed
    task.model, task.beam_size, task.vocab, task.pieces = _NoModel(), 4, None, None
    task.limits = SimpleNamespace(max_beam_size=8, max_question_tokens=200)
    with pytest.raises(InvalidInput, match="digits, over the limit"):
        await task.candidates("小明有" + "9" * 990_000 + "元", None, time.monotonic() + 5)


# -- malformed v2 tensors -----------------------------------------------------------------------------

SPECS = [TensorSpec("token_ids", "int64", ("batch", "seq")), TensorSpec("mask", "float32", ("batch", "seq"))]
STEP = [TensorSpec("token", "int64", ("batch",)), TensorSpec("past_mask", "bool", ("batch", "seq"))]


def tensor(name, shape, data, datatype="INT64"):
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def ids_and_mask(ids, shape=(2, 2), mask=None):
    mask = [1.0] * (shape[0] * shape[1]) if mask is None else mask
    return [tensor("token_ids", list(shape), ids), tensor("mask", list(shape), mask, "FP32")]


def deep(levels: int) -> list:
    data: list = [1]
    for _ in range(levels):
        data = [data]
    return data


@pytest.mark.parametrize("inputs, message", [
    (ids_and_mask([[1, 2], [3]]), "input token_ids: nested data does not match shape [2, 2]"),
    (ids_and_mask([[1, 2], 3]), "input token_ids: nested data does not match shape [2, 2]"),
    (ids_and_mask([1, 2], (1, 2), [[1.0], [1.0]]), "input mask: nested data does not match shape [1, 2]"),
    (ids_and_mask([[[1], [2]], [[3], [4]]]), "input token_ids: data nested deeper than the 2 axes"),
    (ids_and_mask(deep(2_000), (1, 1), [1.0]), "input token_ids: data nested deeper"),
    (ids_and_mask(deep(MAX_NESTING + 10), (1, 1), [1.0]), "input token_ids: data nested deeper"),
    (ids_and_mask([1, 2, "3", 4]), "input token_ids: data is not INT64: '3' (str)"),
    (ids_and_mask([1, 2, None, 4]), "input token_ids: data is not INT64: None"),
    (ids_and_mask([1, 2, {"a": 1}, 4]), "input token_ids: data is not INT64"),
    (ids_and_mask([True, False, 1, 2]), "input token_ids: data is not INT64: True (bool)"),
    (ids_and_mask([1, 2, float("nan"), 4]), "input token_ids: data is not INT64: nan"),
    (ids_and_mask([1, 2, float("inf"), 4]), "input token_ids: data is not INT64: inf"),
    (ids_and_mask([1, 2, 3, 4], mask=[1.0, True, 1.0, 1.0]), "input mask: data is not FP32: True (bool)"),
    (ids_and_mask([1, 2, 3, 4], mask=[1.0, float("nan"), 1.0, 1.0]), "input mask: data holds NaN"),
    (ids_and_mask([1, 2, 3, 4], mask=[1.0, 1e300, 1.0, 1.0]), "too large for FP32"),
    (ids_and_mask([1, 2, 3, 4], mask=[1.0, 2 ** 2000, 1.0, 1.0]), "too large for FP32"),
    (ids_and_mask([1, 2, 2 ** 70, 4]), "input token_ids: 1180591620717411303424 is outside the range of INT64"),
    (ids_and_mask([1, -2, 3, 4]), "input token_ids: id -2 is negative"),
    (ids_and_mask({"a": [1, 2]}), "input token_ids: data is dict, expected a list"),
    ([tensor("token", [2], [1, -1]), tensor("past_mask", [2, 1], [True, True], "BOOL")], "input token: id -1"),
    ([tensor("token", [1], [1]), tensor("past_mask", [1, 2], [True, 1], "BOOL")], "input past_mask: data is not BOOL"),
])
def test_malformed_tensors_are_400_naming_the_input(inputs, message):
    specs = STEP if inputs[0]["name"] == "token" else SPECS
    with pytest.raises(BadRequest) as info:
        decode_inputs(inputs, specs)
    assert message in info.value.message


def test_bounds_keep_ids_inside_the_vocabulary():
    bounded = [TensorSpec("token_ids", "int64", ("batch", "seq"), bound=100), SPECS[1]]
    (row,) = decode_inputs(ids_and_mask([0, 99], (1, 2)), bounded)
    assert row["token_ids"].tolist() == [0, 99]
    with pytest.raises(BadRequest, match=r"input token_ids: id 100 is outside \[0, 100\)"):
        decode_inputs(ids_and_mask([0, 100], (1, 2)), bounded)
    with pytest.raises(BadRequest, match="input token_ids: id -1 is negative"):
        decode_inputs(ids_and_mask([-1, 5], (1, 2)), bounded)


def test_flat_and_nested_data_decode_alike():
    flat = decode_inputs(ids_and_mask([1, 2, 3, 4], mask=[1, 1, 1, 0]), SPECS)
    nested = decode_inputs(ids_and_mask([[1, 2], [3, 4]], mask=[[1.0, 1.0], [1.0, 0.0]]), SPECS)
    for a, b in zip(flat, nested, strict=True):
        assert a["token_ids"].tolist() == b["token_ids"].tolist() and a["mask"].tolist() == b["mask"].tolist()
        assert a["token_ids"].dtype.name == "int64" and a["mask"].dtype.name == "float32"
    (row,) = decode_inputs([tensor("token", [1], [7]), tensor("past_mask", [1, 2], [[True, False]], "BOOL")], STEP)
    assert row["token"].tolist() == 7 and row["past_mask"].tolist() == [True, False]


# -- over HTTP, on the shipped models ------------------------------------------------------------------

@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(models=MODELS))) as c:
        assert set(wait_ready(c)["models"].values()) == {"ready"}
        yield c


def post(client: TestClient, path: str, body: str):
    """Post a JSON body written by hand: the escape \\ud800 must reach the server as JSON, not as bytes."""
    return client.post(path, content=body.encode("ascii"), headers={"content-type": "application/json"})


LONE_JSON = '"\\ud800' + json.dumps(TEXT)[1:]  # "\ud800周杰伦...", all in JSON escapes

SURROGATE_BODIES = {
    "/extract": f'{{"text": {LONE_JSON}}}',
    "/segment": f'{{"text": {LONE_JSON}}}',
    "/parse": f'{{"text": {LONE_JSON}}}',
    "/explain": f'{{"text": {LONE_JSON}, "target": {{"subject_span": [1, 4]}}}}',
    "/qa": f'{{"question": "\\u8c01", "passages": ["\\u5468", {LONE_JSON}]}}',
    "/solve_math": f'{{"question": {LONE_JSON}}}',
}


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(SURROGATE_BODIES))
def test_every_endpoint_answers_422_to_a_lone_surrogate(client, path):
    r = post(client, path, SURROGATE_BODIES[path])
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_input" and "lone surrogate" in error["message"]
    assert error["message"].startswith("passages.1:" if path == "/qa" else "question:" if path == "/solve_math"
                                       else "text:")


@pytest.mark.slow
def test_an_error_message_echoing_a_lone_surrogate_is_still_json(client):
    r = post(client, "/extract", '{"text": "\\u5468", "\\ud800": 1}')  # in a field name
    assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_input"
    r = post(client, "/v2/models/mlm/infer", '{"inputs": [{"name": "token_ids", "shape": [1, 1], '
                                             '"datatype": "\\ud800", "data": [1]}]}')  # echoed by the codec
    assert r.status_code == 400 and r.json()["error"] == "input token_ids: datatype \\ud800, expected INT64"


@pytest.mark.slow
@pytest.mark.parametrize("predicate", [["x"], {"a": 1}])
def test_explain_answers_422_to_an_unhashable_predicate(client, predicate):
    r = client.post("/explain", json={"text": TEXT, "target": {"subject": "周杰伦", "predicate": predicate}})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"] == f"target.predicate: expected a string, got {type(predicate).__name__}"


@pytest.mark.slow
def test_solve_math_answers_422_to_an_absurd_number(client):
    r = client.post("/solve_math", json={"question": "小明有" + "9" * 990_000 + "元，花了3元，还剩多少元？"})
    assert r.status_code == 422
    assert r.json()["error"]["message"] == f"question: a number of 990000 digits, over the limit of {MAX_DIGITS}"


@pytest.mark.slow
def test_v2_answers_400_to_ragged_and_negative_ids(client):
    for data in ([[1, 2], [3]], [[1, -2], [3, 4]]):
        r = client.post("/v2/models/mlm/infer", json={"inputs": [
            {"name": "token_ids", "shape": [2, 2], "datatype": "INT64", "data": data}]})
        assert r.status_code == 400 and r.json()["error"].startswith("input token_ids:"), r.text


@pytest.mark.slow
@pytest.mark.parametrize("model, inputs, message", [
    ("extract.subject", [{"name": "token_ids", "shape": [1, 8000], "datatype": "INT64", "data": [5] * 8000}],
     "a row of length 8000, over the stage's max_length 512"),
    ("mlm", [{"name": "token_ids", "shape": [1, 3], "datatype": "INT64", "data": [5, 99999, 3]}],
     "id 99999 is outside [0, 8661)"),
    ("mlm", [{"name": "token_ids", "shape": [200, 128], "datatype": "INT64", "data": [5] * 25600}],
     "over the server's max_v2_output_values"),
    ("extract.gradient", [  # positions past the text: a gather there failed inside onnxruntime (500)
        {"name": "embeddings", "shape": [1, 3, 128], "datatype": "FP32", "data": [0.0] * 384},
        {"name": "mask", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]},
        {"name": "subject", "shape": [1, 2], "datatype": "INT64", "data": [0, 60]},
        {"name": "object", "shape": [1, 2], "datatype": "INT64", "data": [0, 1]},
        {"name": "label", "shape": [1], "datatype": "INT64", "data": [3]},
        {"name": "use_object", "shape": [1], "datatype": "FP32", "data": [1]}],
     "input subject: id 60 is outside [0, 3)"),
])
def test_v2_answers_400_to_rows_ids_and_outputs_past_the_models_bounds(client, model, inputs, message):
    r = client.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
    assert r.status_code == 400 and message in r.json()["error"], r.text


@pytest.mark.slow
def test_a_body_that_is_not_utf8_is_400_and_documented(client):
    r = client.post("/extract", content=b'\xff\xfe{"text": 1}', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "http_error"
    spec = client.get("/openapi.json").json()["paths"]
    assert "400" in spec["/extract"]["post"]["responses"]
    v2 = spec["/v2/models/{name}/infer"]["post"]["responses"]
    assert "400" in v2 and "422" not in v2  # the protocol answers 400, never 422


@pytest.mark.slow
def test_a_wrong_method_is_405_with_allow(client):
    r = client.get("/extract")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
