"""`zhserve train math --encoder DIR` end to end: a tiny random BERT written here (word-piece vocabulary from the
test's own problems, one character left out for [UNK], no lone digits or operators: the math vocabulary adds
them), fine-tuned a few steps as a UniLM solver on Ape210K problems through the CLI, exported (the cached ONNX
decoder checked against the full PyTorch model), measured and served through /solve_math."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.settings import Settings
from tests.test_api import wait_ready
from tests.tiny_encoder import write_tiny_bert
from training.common.paths import DATA

pytestmark = [pytest.mark.data, pytest.mark.slow]

APE = DATA / "math" / "ape210k" / "valid.ape.json"
LEFT_OUT = "冰"  # never in the vocabulary: [UNK]
QUESTION = "ＡＢＣ公司买了１２台iPhone，每台2999元，又买了3台冰箱，一共买了多少台？"
HALF_WIDTH = "ABC公司买了12台iPhone，每台2999元，又买了3台冰箱，一共买了多少台？"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import torch

    from app.cli import main

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("encoder_math")
    lines = APE.read_text(encoding="utf-8").splitlines()[:160]
    data = root / "ape.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    texts = [json.loads(line)["original_text"] for line in lines]
    encoder = write_tiny_bert(root / "bert", texts + [QUESTION], LEFT_OUT)
    run, models = root / "run", root / "models"
    main(["train", "math", "--encoder", str(encoder), "--data", str(data), "--dev-data", str(data), "--out", str(run),
          "--epochs", "2", "--batch-size", "16", "--lr", "1e-3", "--eval-every", "1000", "--eval-problems", "4",
          "--max-source", "120", "--max-target", "30", "--threads", "1", "--device", "cpu"])
    main(["export", "math", "--run", str(run), "--models", str(models), "--eval-data", str(data), "--eval-limit", "3",
          "--command", "tests"])
    return encoder, models


def test_the_math_vocabulary_keeps_the_encoders_ids_and_adds_slots_and_expression_tokens(exported):
    from app.tasks.math.text import SLOT_TOKENS, source_ids
    from app.text import CharVocab
    from app.text.subword import SubwordTokenizer
    from training.math.model import GRAMMAR_TOKENS

    encoder, models = exported
    config = json.loads((models / "math" / "model.json").read_text())
    assert config["pieces"] == "tokenizer.json" and "pretrained encoder" in config["training"]["init"]
    assert config["quality"]["onnx_parity_max_abs_diff"] < 1e-4
    assert config["quality"]["ape210k_dev"]["n"] == 3 and config["quality"]["ape210k_test"]["n"] == 3
    own = (encoder / "vocab.txt").read_text(encoding="utf-8").split()
    vocab = CharVocab.load(models / "math" / "1" / "vocab.txt")
    assert vocab.tokens[: len(own)] == own and set(SLOT_TOKENS) <= set(vocab.tokens[len(own):])
    lacked = [t for t in GRAMMAR_TOKENS if t not in own]  # expression tokens the encoder lacked: added
    assert lacked and set(lacked) <= set(vocab.tokens[len(own):])
    pieces = SubwordTokenizer.load(models / "math" / "1" / "tokenizer.json")
    ids, numbers = source_ids(QUESTION, vocab, pieces)
    assert numbers == ["12", "2999", "3"]  # full-width digits read as numbers
    tokens = [vocab.tokens[i] for i in ids]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens.count("[UNK]") == 1  # 冰
    assert [t for t in tokens if t.startswith("[N")] == ["[N0]", "[N1]", "[N2]"]
    assert any(t.startswith("##") for t in tokens)  # iPhone in word pieces
    assert any(t.startswith("ａ") for t in tokens)  # the text as written (full-width), as the encoder read it
    assert source_ids(HALF_WIDTH, vocab, pieces)[1] == numbers


def test_solve_math_serves_the_encoder_model(exported):
    from app.tasks.math.evaluator import evaluate

    encoder, models = exported
    questions = [QUESTION] + [json.loads(line)["original_text"] for line in
                              (encoder.parent / "ape.jsonl").read_text(encoding="utf-8").splitlines()[:6]]
    with TestClient(create_app(Settings(models=models))) as client:
        assert wait_ready(client)["models"]["math"] == "ready"
        solved = 0
        for question in questions:
            r = client.post("/solve_math", json={"question": question, "beam_size": 4})
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["candidates"]) <= 4
            for c in body["candidates"]:
                assert "[N" not in c["expression"]  # slots rendered as the question's numbers
                if c["error"] is None:
                    evaluate(c["expression"])  # the exact evaluator took it: so does it here
            if body["answer"] is None:
                assert body["reason"]
            else:
                solved += 1
                assert body["expression"] in [c["expression"] for c in body["candidates"]]
        assert solved  # the tiny model ends some expressions that evaluate
        too_long = client.post("/solve_math", json={"question": "问" * 119})
        assert too_long.status_code == 422 and "max_question_tokens" in too_long.json()["error"]["message"]
