"""POST /explain: the exported gradient graph against autograd, completeness, the quadrature, the
HTML and PNG renderings, and the errors; one round trip /extract -> /explain on the shipped model."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.settings import Settings
from app.tasks.explain import METHODS, quadrature
from tests.test_api import wait_ready
from tests.test_shipped_model import MODELS as SHIPPED

TEXT = "《邪少兵王》是冰火未央写的网络小说"
TRIPLE = {"subject": "邪少兵王", "predicate": "作者", "object": {"@value": "冰火未央"},
          "subject_span": [1, 5], "object_span": [7, 11]}


@pytest.fixture(scope="module")
def repo(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("explain_repo")
    shutil.copytree(tiny_models / "extract", root / "extract")
    return root


@pytest.fixture(scope="module")
def client(repo):
    with TestClient(create_app(Settings(models=repo))) as c:
        assert wait_ready(c)["models"]["extract"] == "ready"
        yield c


def explain(client, **body):
    return client.post("/explain", json={"text": TEXT, "target": TRIPLE} | body)


# -- (a) the exported gradient graph is torch autograd --------------------------------------------

def test_gradient_graph_matches_autograd(tiny_run, repo):
    import onnxruntime as ort
    import torch

    from training.extract.export import load_net
    from training.extract.gradient import TripleScore

    version = repo / "extract" / "1"
    net = load_net(tiny_run / "checkpoint.pt")  # the export leaves it in the run folder, not in models/
    score = TripleScore(net)
    g = torch.Generator().manual_seed(7)
    lengths, width = [23, 9, 16], 23
    embeddings = torch.randn(3, width, net.config.hidden, generator=g) * 0.5
    mask = torch.zeros(3, width)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    embeddings = embeddings * mask[..., None]  # padding is zero, as the batcher pads
    subject = torch.tensor([[2, 4], [0, 0], [10, 15]])
    obj = torch.tensor([[8, 12], [3, 8], [0, 0]])
    label = torch.tensor([0, 5, 3])
    use_object = torch.tensor([1.0, 1.0, 0.0])

    x = embeddings.clone().requires_grad_(True)
    expected = score(x, mask, subject, obj, label, use_object)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    # use_object really switches the object term off (row 2) and on (rows 0 and 1)
    s_only = score(x, mask, subject, obj, label, torch.zeros(3)).detach()
    assert torch.equal(expected[2].detach(), s_only[2]) and not torch.allclose(expected[:2].detach(), s_only[:2])

    session = ort.InferenceSession(str(version / "gradient.onnx"), providers=["CPUExecutionProvider"])
    got_score, got_grad = session.run(["score", "gradient"], {
        "embeddings": embeddings.numpy(), "mask": mask.numpy(), "subject": subject.numpy(), "object": obj.numpy(),
        "label": label.numpy(), "use_object": use_object.numpy()})
    assert got_score.shape == (3,) and got_grad.shape == (3, width, net.config.hidden)
    np.testing.assert_allclose(got_score, expected.detach().numpy(), rtol=1e-5, atol=1e-5)
    ref = expected_grad.numpy()
    for i in range(3):  # per row, relative to that row's gradient scale
        scale = np.abs(ref[i]).max()
        assert scale > 0
        np.testing.assert_allclose(got_grad[i], ref[i], rtol=1e-4, atol=1e-5 * scale)


# -- (b) completeness through the HTTP API --------------------------------------------------------

# The tiny model (2 epochs on 96 sentences) barely reacts to its input: F(x) - F(x') is ~1e-4..1e-3, while
# float32 rounding of a score near -16 is ~1e-6. These targets move it most (found by a scan of spans).
SENSITIVE = [(TEXT, TRIPLE), ("电影《青石巷》由陈默执导，王小川、李青主演", {"subject_span": [4, 5]})]


@pytest.mark.parametrize("text, target", SENSITIVE, ids=["triple", "subject"])
def test_attributions_sum_to_the_score_difference(client, text, target):
    r = client.post("/explain", json={"text": text, "target": target})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["steps"] == 50 and body["method"] == "trapezoid" and body["baseline"] == "zero"
    assert body["characters"] == list(text) and len(body["attributions"]) == len(text)
    difference = body["score"] - body["baseline_score"]
    assert abs(difference) > 2e-4  # well above rounding, so a wrong gradient would show in delta
    assert body["delta"] == pytest.approx(sum(body["attributions"]) - difference, abs=len(text) * 1e-6)
    assert abs(body["delta"]) < 0.01 * abs(difference)
    assert max(abs(v) for v in body["normalized"]) == pytest.approx(1.0)


def test_both_rules_give_the_same_attributions(client):
    bodies = {m: explain(client, method=m, steps=20).json() for m in METHODS}
    trapezoid, gauss = (np.array(bodies[m]["attributions"]) for m in METHODS)
    np.testing.assert_allclose(trapezoid, gauss, atol=0.05 * np.abs(gauss).max())
    assert bodies["trapezoid"]["score"] == pytest.approx(bodies["gauss-legendre"]["score"], abs=1e-6)
    assert bodies["trapezoid"]["baseline_score"] == pytest.approx(bodies["gauss-legendre"]["baseline_score"], abs=1e-6)
    mask = explain(client, baseline="mask", steps=20).json()
    assert mask["baseline"] == "mask" and mask["score"] == pytest.approx(bodies["trapezoid"]["score"], abs=1e-6)


# -- (c) the quadrature ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("steps", [1, 2, 7, 50])
def test_quadrature_weights_sum_to_one_with_both_ends_as_nodes(method, steps):
    alphas, weights = quadrature(steps, method)
    assert alphas.shape == weights.shape
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert alphas[0] == 0.0 and alphas[-1] == 1.0
    assert np.all((alphas >= 0) & (alphas <= 1)) and np.all(weights >= 0)
    if method == "gauss-legendre":  # exact for polynomials of degree 2 steps - 1
        degree = 2 * steps - 1
        assert float(weights @ alphas**degree) == pytest.approx(1 / (degree + 1), rel=1e-9)
    else:  # composite trapezoid on a^2: the error is exactly h^2 / 6
        assert float(weights @ alphas**2) - 1 / 3 == pytest.approx(1 / (6 * steps**2), rel=1e-9)


def test_quadrature_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="simpson"):
        quadrature(10, "simpson")


# -- (d) HTML and PNG ----------------------------------------------------------------------------

def test_html_shows_every_character(client):
    r = explain(client, format="html")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert page.startswith("<!doctype html>")
    for ch in TEXT:
        assert f">{ch}</span>" in page
    assert page.count('class="c"') == len(TEXT)


@pytest.mark.parametrize("text", [TEXT, "周杰伦出生于台湾省新北市，" * 3], ids=["one-line", "two-lines"])
def test_png_decodes_at_the_layout_size(client, text):
    from PIL import Image

    from app.api.render import PER_LINE

    r = client.post("/explain", json={"text": text, "target": {"subject_span": [0, 3]}, "format": "png", "steps": 8})
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    image.load()
    n = len(text)
    lines = -(-n // PER_LINE)
    assert image.format == "PNG"
    assert image.size == (max(2 * 16 + min(n, 24) * 40, 640), 76 + lines * (40 + 6) + 54 + 16)


# -- (e) errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("body, words", [
    ({"target": {"subject_span": [5, 40]}}, ["subject_span", "[5, 40]"]),
    ({"target": {"subject_span": [3, 3]}}, ["subject_span"]),
    ({"target": {"subject": "周杰伦"}}, ["subject", "周杰伦", "does not occur"]),
    ({"target": TRIPLE | {"predicate": "发明者"}}, ["predicate", "发明者"]),
    ({"target": {"subject_span": [1, 5], "predicate": "作者"}}, ["object_span"]),
    ({"target": TRIPLE | {"object_span": [7, 12]}}, ["object"]),
    ({"steps": 201}, ["steps", "201"]),
    ({"steps": 0}, ["steps"]),
    ({"method": "simpson"}, ["method"]),
    ({"baseline": "noise"}, ["baseline"]),
    ({"format": "svg"}, ["format"]),
    ({"text": ""}, ["text"]),
    ({"text": "长" * 300, "target": {"subject_span": [0, 2]}}, ["max_length"]),
])
def test_bad_requests_are_422_with_a_json_error(client, body, words):
    r = explain(client, **body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert set(error) == {"type", "message"}
    for word in words:
        assert word in error["message"]


def test_an_extract_triple_goes_back_as_is_on_the_shipped_model():
    text = "《星河彼岸》是作家林远舟创作的一部长篇小说"
    with TestClient(create_app(Settings(models=SHIPPED))) as c:
        assert wait_ready(c)["models"]["extract"] == "ready"
        triples = c.post("/extract", json={"text": text}).json()["results"][0]["triples"]
        assert triples
        top = triples[0]
        r = c.post("/explain", json={"text": text, "target": top})
        assert r.status_code == 200, r.text
        body = r.json()
    assert (body["target"]["subject"], body["target"]["predicate"]) == (top["subject"], top["predicate"])
    assert body["target"]["object"] == {"@value": top["object"]["@value"]}
    assert body["target"]["subject_span"] == top["subject_span"]
    assert abs(body["delta"]) < 0.01 * abs(body["score"] - body["baseline_score"])
    # a sure triple: F(x) is the log-probability of its four pointers, near 0 and above the baseline's
    assert -4 * np.log(2) < body["score"] <= 0 and body["score"] > body["baseline_score"]


# -- zhserve eval explain ---------------------------------------------------------------------------

def test_faithfulness_rows_pad_the_top_and_random_characters():
    from types import SimpleNamespace

    from app.tasks.extract.explain import Target
    from app.text import CharVocab
    from training.extract.explain_eval import KS, perturbation_rows

    vocab = CharVocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefg"])
    table = np.arange(len(vocab) * 2, dtype=np.float32).reshape(-1, 2) + 1  # no row is zero: [PAD] is [1, 2]
    explainer = SimpleNamespace(table=table, tokens=vocab)
    text = "abcdefg"
    attributions = np.array([0.1, -2.0, 0.5, 0.0, 0.3, -0.1, 0.2])  # positive, best first: 2, 4, 6, 0
    rows, labels = perturbation_rows(explainer, text, Target((0, 2), "p", (4, 6), 3), attributions,
                                     np.random.default_rng(0), draws=2)
    assert len(rows) == 1 + len(KS) * 3 and labels[0] == ("input", 0, 0)
    padded = [set(np.flatnonzero((r["embeddings"] == table[vocab.pad_id]).all(axis=1))) for r in rows]
    assert padded[0] == set()
    tops = {k: padded[i] for i, (kind, k, _) in enumerate(labels) if kind == "top"}
    assert tops == {1: {2}, 3: {2, 4, 6}, 5: {2, 4, 6, 0}}  # only 4 characters raised the score
    for i, (kind, k, count) in enumerate(labels):
        if kind == "random":
            assert count == len(tops[k]) and len(padded[i]) == count
    row = rows[1]
    assert row["subject"].tolist() == [0, 1] and row["object"].tolist() == [4, 5]  # inclusive ends
    assert int(row["label"]) == 3 and float(row["use_object"]) == 1.0 and row["mask"].tolist() == [1.0] * 7


@pytest.mark.data
@pytest.mark.slow
def test_eval_explain_prints_metrics_json_last():
    import json
    import subprocess
    import sys

    from tests.conftest import DUIE

    proc = subprocess.run([sys.executable, "-m", "app", "eval", "explain", "--data", str(DUIE / "train_part1.json"),
                           "--limit", "6", "--models", str(SHIPPED)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["task"] == "explain" and metrics["sentences"] == 6 and metrics["split"] == "dev"
    assert 0 < metrics["n"] == 6 - sum(metrics["skipped"].values())
    assert metrics["completeness_median"] < 0.01 and metrics["completeness_p90"] >= metrics["completeness_median"]
    faithfulness = metrics["faithfulness"]
    assert set(faithfulness) == {f"{kind}{k}" for k in (1, 3, 5) for kind in ("top", "random")}
    assert faithfulness["top1"] > faithfulness["random1"] and faithfulness["top5"] > faithfulness["random5"]
    assert metrics["score_recheck_max_abs_diff"] < 1e-4
    assert "explain" in proc.stderr  # progress goes to stderr
