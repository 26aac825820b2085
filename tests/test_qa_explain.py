"""POST /explain for the shipped /qa reader: its gradient graph against torch autograd, completeness of the
attributions over question and passage characters, the HTML and PNG renderings, and the errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.settings import Settings
from tests.test_api import wait_ready
from tests.test_shipped_model import MODELS as SHIPPED

QUESTION = "周杰伦出生在哪里？"
PASSAGE = "周杰伦出生于台湾省新北市，毕业于淡江中学。"
TARGET = {"question": QUESTION, "answer": "台湾省新北市"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa_only")
    (root / "qa").symlink_to(SHIPPED / "qa")  # the reader alone loads in a second
    with TestClient(create_app(Settings(models=root, intra_op_threads=1))) as c:
        assert wait_ready(c)["models"]["qa"] == "ready"
        yield c


def explain(client, **body):
    return client.post("/explain", json={"task": "qa", "text": PASSAGE, "target": TARGET} | body)


def test_gradient_graph_matches_autograd():
    """The exported graph (make_fx + dynamo: private torch APIs) against plain torch.autograd on the eager net
    rebuilt from reader.onnx."""
    import onnxruntime as ort
    import torch

    from training.qa.export import load_served_reader
    from training.qa.gradient import INPUTS, AnswerScore, example_inputs

    torch.set_num_threads(1)
    version = SHIPPED / "qa" / "1"
    net = load_served_reader(version)
    q, p, span, alpha, base_id, scale = inputs = example_inputs(net, 3, 40)
    table = net.embed.weight.detach()
    xq, xp = table[q], table[p]
    base = (table[base_id] * scale[:, None])[:, None]
    q_point = (base + alpha[:, None, None] * (xq - base)).requires_grad_(True)
    p_point = (base + alpha[:, None, None] * (xp - base)).requires_grad_(True)
    score = AnswerScore(net)(q_point, p_point, *net.id_features(q, p), span)
    gq, gp = torch.autograd.grad(score.sum(), (q_point, p_point))
    expected = [score.detach(), (gq * (xq - base)).sum(-1), (gp * (xp - base)).sum(-1)]
    session = ort.InferenceSession(str(version / "gradient.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: x.numpy() for n, x in zip(INPUTS, inputs, strict=True)})
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e.numpy(), atol=1e-5)
    assert np.abs(got[2]).max() > 1e-4  # the passage terms are not all zero


def test_the_explained_score_is_the_readers_own(client):
    """F(x) is log P(start) + log P(end) of the span as the served reader scores it."""
    import onnxruntime as ort

    from app.tasks.qa.decode import question_ids
    from app.text import CharVocab

    version = SHIPPED / "qa" / "1"
    vocab = CharVocab.load(version / "vocab.txt")
    (probs,) = ort.InferenceSession(str(version / "reader.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"question_ids": question_ids(vocab, QUESTION, 64)[None], "passage_ids": vocab.encode(PASSAGE)[None]})
    expected = np.log(probs[0, 6, 0]) + np.log(probs[0, 11, 1])
    assert abs(explain(client, steps=2).json()["score"] - expected) < 1e-4


@pytest.mark.parametrize("body", [{}, {"baseline": "mask"}, {"method": "gauss-legendre", "steps": 16}])
def test_attributions_sum_to_the_score_difference(client, body):
    r = explain(client, **body)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["characters"] == list(QUESTION) + list(PASSAGE) and len(j["attributions"]) == len(j["characters"])
    assert j["target"]["span"] == [6, 12] and j["target"]["question_characters"] == 9
    gap = j["score"] - j["baseline_score"]
    assert abs(gap) > 1.0  # the baseline really changes the score
    assert abs(j["delta"]) < 0.01 * abs(gap), (j["delta"], gap)
    assert abs(sum(j["attributions"]) - gap) < 0.01 * abs(gap) + 1e-3
    question_part = np.abs(j["attributions"][: len(QUESTION)]).sum()
    assert question_part > 0  # the question's characters are explained too


def test_the_span_from_qa_goes_back_as_is(client):
    answer = client.post("/qa", json={"question": QUESTION, "passage": PASSAGE}).json()
    r = explain(client, target={"question": QUESTION, "answer": answer["answer"], "span": answer["span"]})
    assert r.status_code == 200 and r.json()["target"]["answer"] == answer["answer"]


def test_html_and_png_render(client):
    from PIL import Image

    html = explain(client, format="html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "周杰伦出生在哪里？ → 台湾省新北市" in html.text and html.text.count('class="c"') == len(QUESTION + PASSAGE)
    png = explain(client, format="png", steps=8)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size[0] >= 640


@pytest.mark.parametrize("target, words", [
    ({"question": QUESTION}, "answer"),
    ({"answer": "台湾"}, "target.question"),
    ({"question": ["x"], "answer": "台湾"}, "target.question"),
    ({"question": QUESTION, "answer": "上海"}, "does not occur"),
    ({"question": QUESTION, "span": [8, 3]}, "target.span"),
    ({"question": QUESTION, "span": [0, 999]}, "target.span"),
    ({"question": QUESTION, "span": "0-3"}, "target.span"),
    ({"question": QUESTION, "answer": {"x": 1}}, "target.answer"),
    ({"question": QUESTION, "answer": "台湾", "span": [0, 2]}, "not the text"),
    ({"question": "问" * 65, "answer": "台湾"}, "max_question_length"),
])
def test_bad_targets_are_422_with_a_json_error(client, target, words):
    r = explain(client, target=target)
    assert r.status_code == 422 and words in r.json()["error"]["message"], r.text


def test_a_passage_over_one_window_is_422(client):
    r = client.post("/explain", json={"task": "qa", "text": "台" * 300, "target": {"question": QUESTION,
                                                                                   "answer": "台"}})
    assert r.status_code == 422 and "explain.max_length" in r.json()["error"]["message"]


def test_a_one_character_passage_works(client):
    r = client.post("/explain", json={"task": "qa", "text": "台", "steps": 4,
                                      "target": {"question": QUESTION, "answer": "台"}})
    assert r.status_code == 200 and len(r.json()["attributions"]) == len(QUESTION) + 1


def test_models_list_shows_the_variant_each_stage_serves(client):
    """On this CPU-only machine, auto serves fp32 for the reader (its int8 was not faster) and the gradient."""
    (info,) = client.get("/v1/models").json()["models"]
    assert info["variants"] == {"reader": "fp32", "gradient": "fp32"} and info["providers"][0] == "CPUExecutionProvider"
