"""`zhserve train extract --encoder DIR` end to end, on a tiny random BERT the test writes itself (nothing
downloaded): train a few steps through the CLI on DuIE sentences, export through the CLI, ONNX against
PyTorch, serve through the API with character offsets checked on texts with ASCII words (word pieces),
digits, full-width characters, spaces and [UNK], and /explain on the BERT extractor's gradient graph
(autograd and completeness)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.settings import Settings
from app.text.subword import SubwordTokenizer
from tests.conftest import DUIE
from tests.test_api import wait_ready
from tests.tiny_encoder import write_tiny_bert
from training.common.paths import ROOT
from training.common.splits import extract_split

pytestmark = [pytest.mark.data, pytest.mark.slow]

PREDICATES = ("作者", "主演", "饰演")  # 饰演 has a compound object (@value + inWork)
TEXTS = ["《邪少兵王》是冰火未央写的网络小说",  # 冰 is left out of the vocabulary: [UNK]
         "iPhone 15 Pro于2023年9月发布",  # ASCII words as word pieces, digits, spaces
         "ＡＢＣ公司 成立于１９９８年",  # full-width letters and digits
         "电影  《青石巷》由陈默执导，王小川主演"]  # two spaces in a row
LEFT_OUT = "冰"


def duie_subset(path, per_split: dict[str, int]) -> list[dict]:
    """The first DuIE sentences whose triples all use PREDICATES, so many per split."""
    wanted, out = dict(per_split), []
    for line in (DUIE / "train_part1.json").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        split = extract_split(record["text"])
        if (wanted.get(split, 0) > 0 and record["spo_list"]
                and all(spo["predicate"] in PREDICATES for spo in record["spo_list"])):
            out.append(record)
            wanted[split] -= 1
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in out) + "\n", encoding="utf-8")
    return out


def zhserve(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoder_extract")
    records = duie_subset(root / "duie.json", {"train": 40, "dev": 8, "test": 8})
    schema = root / "schema.json"
    schema.write_text("".join(line + "\n" for line in (DUIE / "schema.json").read_text(encoding="utf-8").splitlines()
                              if json.loads(line)["predicate"] in PREDICATES), encoding="utf-8")
    encoder = write_tiny_bert(root / "tiny_bert", [r["text"] for r in records] + TEXTS, LEFT_OUT)
    out = root / "run"
    zhserve("train", "extract", "--encoder", str(encoder), "--recipe", "cpu", "--data", str(root / "duie.json"),
            "--schema", str(schema), "--out", str(out), "--epochs", "1", "--limit", "40", "--threads", "1",
            "--max-len", "64", "--device", "cpu")
    zhserve("export", "extract", "--run", str(out), "--models", str(root / "models"), "--data",
            str(root / "duie.json"), "--command", "tests")
    return {"root": root, "run": out, "models": root / "models", "encoder": encoder}


def test_trained_and_exported_with_the_encoders_tokenizer(run):
    from transformers import AutoTokenizer

    config = json.loads((run["models"] / "extract" / "model.json").read_text(encoding="utf-8"))
    assert config["tokenizer"] == "wordpiece" and config["vocab"] == "tokenizer.json"
    assert config["architecture"]["encoder"]["model_type"] == "bert"
    assert set(config["stages"]) == {"subject", "object", "gradient"}
    assert config["quality"]["onnx_parity_max_abs_diff"] < 1e-4
    history = json.loads((run["run"] / "history.json").read_text())
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    served = SubwordTokenizer.load(run["models"] / "extract" / "1" / "tokenizer.json")
    reference = AutoTokenizer.from_pretrained(str(run["encoder"]), local_files_only=True)
    for text in TEXTS:
        assert list(served.encode(text).ids) == reference(text)["input_ids"]


def test_onnx_matches_pytorch_on_word_pieces(run):
    import onnxruntime as ort
    import torch

    from training.extract.export import load_net

    net = load_net(run["run"] / "best.pt")
    version = run["models"] / "extract" / "1"
    tokens = SubwordTokenizer.load(version / "tokenizer.json")
    encodings = [tokens.encode(t) for t in TEXTS]
    ids = np.zeros((len(TEXTS), max(len(e) for e in encodings)), np.int64)
    for i, e in enumerate(encodings):
        ids[i, : len(e)] = e.ids
    assert (ids == tokens.unk_id).any()
    subject = np.array([[1, 2], [1, 4], [2, 2], [3, 5]], np.int64)
    with torch.no_grad():
        hidden, mask = net.encode(torch.from_numpy(ids))
        ref_s = torch.sigmoid(net.subject_logits(hidden, mask)).numpy()
        ref_o = torch.sigmoid(net.object_logits(hidden, mask, torch.from_numpy(subject))).numpy()
    s1 = ort.InferenceSession(str(version / "subject.onnx"), providers=["CPUExecutionProvider"])
    s2 = ort.InferenceSession(str(version / "object.onnx"), providers=["CPUExecutionProvider"])
    probs, h = s1.run(None, {"token_ids": ids})
    (o,) = s2.run(None, {"hidden": h, "mask": (ids > 0).astype(np.float32), "subject": subject})
    real = ids > 0
    assert np.abs(probs - ref_s)[real].max() < 1e-4
    assert np.abs(h - hidden.numpy())[real].max() < 1e-4
    assert np.abs(o - ref_o)[real].max() < 1e-4


@pytest.fixture(scope="module")
def repo(run):
    """The exported model with thresholds that let an untrained model's pointers through: every token starts a
    span and about half of them end one, so spans of one and of several word pieces come back."""
    import torch

    from training.extract.export import load_net

    root = run["root"] / "served"
    shutil.copytree(run["models"] / "extract", root / "extract")
    net = load_net(run["run"] / "best.pt")
    tokens = SubwordTokenizer.load(root / "extract" / "1" / "tokenizer.json")
    subject_ends, object_ends = [], []
    with torch.no_grad():
        for text in TEXTS:
            enc = tokens.encode(text)
            hidden, mask = net.encode(torch.from_numpy(enc.ids)[None])
            subject_ends.append(torch.sigmoid(net.subject_logits(hidden, mask))[0, enc.is_text, 1].numpy())
            for first in np.flatnonzero(enc.is_text)[:4]:
                probs = torch.sigmoid(net.object_logits(hidden, mask, torch.tensor([[first, first]])))
                object_ends.append(probs[0, enc.is_text, :, 1].numpy().ravel())
    path = root / "extract" / "model.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["thresholds"] = {"subject_start": 0.0, "subject_end": float(np.median(np.concatenate(subject_ends))),
                            "object_start": 0.0, "object_end": float(np.quantile(np.concatenate(object_ends), 0.9))}
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def client(repo):
    with TestClient(create_app(Settings(models=repo))) as c:
        assert wait_ready(c)["models"]["extract"] == "ready"
        yield c


def boundaries(hf, text: str) -> tuple[set[int], set[int]]:
    """Where tokens start and end in `text`, by transformers' own tokenizer (independent of app/text)."""
    offsets = [o for o in hf(text, return_offsets_mapping=True)["offset_mapping"] if o[1] > o[0]]
    return {s for s, _ in offsets}, {e for _, e in offsets}


def test_spans_index_the_input_text(run, client):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(run["encoder"]), local_files_only=True)
    r = client.post("/extract", json={"texts": TEXTS})
    assert r.status_code == 200, r.text
    results = [result["triples"] for result in r.json()["results"]]
    assert len(results) == len(TEXTS)
    covered = [set() for _ in TEXTS]
    multi_piece = 0
    for text, triples, seen in zip(TEXTS, results, covered, strict=True):
        starts, ends = boundaries(hf, text)
        assert triples, text
        for t in triples:
            for key, span in (("subject", t["subject_span"]), ("object", t["object_span"])):
                start, end = span
                value = t[key] if key == "subject" else t[key]["@value"]
                assert text[start:end] == value  # the span's text is the input sliced at its offsets
                assert start in starts and end in ends  # whole word pieces, never whitespace at either edge
                seen.update(range(start, end))
                multi_piece += len(hf(value, add_special_tokens=False)["input_ids"]) > 1
            if t["predicate"] == "饰演":
                assert set(t["object"]) <= {"@value", "inWork"}
    assert multi_piece > 0
    assert TEXTS[0].index(LEFT_OUT) in covered[0]  # the [UNK] word comes back as its own characters
    assert set(range(6)) <= covered[1]  # "iPhone": several word pieces
    assert {0, 1, 2} <= covered[2] and {9, 10, 11, 12} <= covered[2]  # full-width letters and digits


def test_too_many_tokens_is_a_clear_422(client):
    r = client.post("/extract", json={"texts": ["长" * 200]})
    assert r.status_code == 422 and "max_length" in r.json()["error"]["message"]


def test_gradient_graph_matches_autograd(run, repo):
    import onnxruntime as ort
    import torch

    from training.extract.export import load_net
    from training.extract.gradient import TripleScore

    net = load_net(run["run"] / "checkpoint.pt")
    score = TripleScore(net)
    g = torch.Generator().manual_seed(7)
    lengths, width, size = [12, 7, 10], 12, net.encoder.info.embedding_size
    embeddings = torch.randn(3, width, size, generator=g) * 0.5
    mask = torch.zeros(3, width)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    embeddings = embeddings * mask[..., None]
    subject, obj = torch.tensor([[2, 4], [1, 1], [5, 8]]), torch.tensor([[6, 9], [3, 5], [0, 0]])
    label, use_object = torch.tensor([0, 2, 1]), torch.tensor([1.0, 1.0, 0.0])
    x = embeddings.clone().requires_grad_(True)
    expected = score(x, mask, subject, obj, label, use_object)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    session = ort.InferenceSession(str(repo / "extract" / "1" / "gradient.onnx"), providers=["CPUExecutionProvider"])
    got_score, got_grad = session.run(["score", "gradient"], {
        "embeddings": embeddings.numpy(), "mask": mask.numpy(), "subject": subject.numpy(), "object": obj.numpy(),
        "label": label.numpy(), "use_object": use_object.numpy()})
    np.testing.assert_allclose(got_score, expected.detach().numpy(), rtol=1e-5, atol=1e-5)
    ref = expected_grad.numpy()
    for i in range(3):
        scale = np.abs(ref[i]).max()
        assert scale > 0
        np.testing.assert_allclose(got_grad[i], ref[i], rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("text", [TEXTS[1], TEXTS[3]], ids=["ascii", "spaces"])
def test_explain_is_complete_over_characters(client, text):
    triple = client.post("/extract", json={"texts": [text]}).json()["results"][0]["triples"][0]
    r = client.post("/explain", json={"text": text, "target": triple, "steps": 64})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["characters"] == list(text) and len(body["attributions"]) == len(text)
    assert all(a == 0 for a, c in zip(body["attributions"], text, strict=True) if c.isspace())
    difference = body["score"] - body["baseline_score"]
    assert abs(difference) > 1e-3  # well above float32 rounding, so a wrong gradient would show in delta
    assert body["delta"] == pytest.approx(sum(body["attributions"]) - difference, abs=len(text) * 1e-6)
    assert abs(body["delta"]) < 0.01 * abs(difference)


def test_explain_refuses_a_span_inside_a_word_piece(client):
    r = client.post("/explain", json={"text": TEXTS[1], "target": {"subject_span": [1, 3]}})
    assert r.status_code == 422 and "boundaries" in r.json()["error"]["message"]
