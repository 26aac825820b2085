"""`zhserve train qa --encoder DIR` end to end: a tiny random BERT written here (word-piece vocabulary from the
test's own texts, one character left out for [UNK]), fine-tuned for one epoch on a few CMRC 2018 questions
through the CLI, exported (ONNX checked against PyTorch), served through /qa; every span indexes the
passage as given (ASCII words, digits, full-width characters and [UNK] included), and the served reader
decodes as the PyTorch reader does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.settings import Settings
from tests.test_api import wait_ready
from tests.tiny_encoder import write_tiny_bert
from training.common.paths import DATA

pytestmark = [pytest.mark.data, pytest.mark.slow]

CMRC = DATA / "qa" / "cmrc2018" / "train.json"
LEFT_OUT = "冰"  # never in the vocabulary: [UNK]
# Passages the served model reads: ASCII words (split into ## pieces), digits, full-width forms, [UNK].
PASSAGE = "ＡＢＣ公司于１９９８年成立，iPhone 15 Pro由Apple发布，冰火未央写了《邪少兵王》，价格为2999元。"
QUESTION = "iPhone 15 Pro由哪家公司发布？"


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """The first CMRC 2018 paragraphs (about 60 questions) as their own SQuAD-format file."""
    data = json.loads(CMRC.read_text(encoding="utf-8"))
    paragraphs, n = [], 0
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            if n >= 60:
                break
            paragraphs.append(paragraph)
            n += len(paragraph["qas"])
    path = tmp_path_factory.mktemp("cmrc") / "train.json"
    path.write_text(json.dumps({"data": [{"paragraphs": paragraphs}]}, ensure_ascii=False), encoding="utf-8")
    texts = [p["context"] for p in paragraphs] + [q["question"] for p in paragraphs for q in p["qas"]]
    return path, texts


@pytest.fixture(scope="module")
def exported(subset, tmp_path_factory):
    import torch

    from app.cli import main

    torch.set_num_threads(1)
    path, texts = subset
    root = tmp_path_factory.mktemp("encoder_qa")
    encoder = write_tiny_bert(root / "bert", texts + [PASSAGE, QUESTION], LEFT_OUT)
    run, models = root / "run", root / "models"
    main(["train", "qa", "--encoder", str(encoder), "--data", str(path), "--out", str(run), "--epochs", "1",
          "--batch-size", "8", "--window", "64", "--stride", "40", "--max-answer", "24", "--question-tokens", "32",
          "--eval-questions", "8", "--threads", "1", "--device", "auto"])
    assert (run / "best.pt").exists() and (run / "tokenizer.json").exists()
    main(["export", "qa", "--run", str(run), "--models", str(models), "--data", str(path), "--limit", "8",
          "--command", "tests"])
    return run, models


def test_export_records_a_word_piece_reader_that_matches_pytorch(exported):
    _, models = exported
    config = json.loads((models / "qa" / "model.json").read_text())
    assert config["tokenizer"] == "wordpiece" and config["vocab"] == "tokenizer.json"
    assert (models / "qa" / "1" / "tokenizer.json").exists() and (models / "qa" / "1" / "reader.onnx").exists()
    assert set(config["stages"]["reader"]["inputs"]) == {"token_ids", "type_ids"}
    assert config["architecture"]["model_type"] == "bert" and config["reading"]["question_length"] == 32
    assert config["quality"]["onnx_parity_max_abs_diff"] < 1e-4
    assert config["training"]["recipe"]["encoder"]


def test_served_spans_spell_their_answers_and_match_the_pytorch_reader(exported):
    from training.qa.data import Question
    from training.qa.encoder_reader import EncoderTorchReader
    from training.qa.export import load_encoder_reader

    run, models = exported
    passages = [PASSAGE, "周杰伦出生于台湾省新北市，２０００年发行专辑《Jay》。" * 3]
    with TestClient(create_app(Settings(models=models))) as client:
        assert wait_ready(client)["models"]["qa"] == "ready"
        r = client.post("/qa", json={"question": QUESTION, "passages": passages, "allow_no_answer": False})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["answer"] is not None and body["candidates"]
        for c in body["candidates"]:
            start, end = c["span"]
            assert passages[c["passage_index"]][start:end] == c["answer"]
        assert body["answer"] == body["candidates"][0]["answer"]
        too_long = client.post("/qa", json={"question": "问" * 31, "passages": [PASSAGE]})
        assert too_long.status_code == 422 and "max_question_length" in too_long.json()["error"]["message"]

    net, tokenizer, reading = load_encoder_reader(run)
    reader = EncoderTorchReader(net, tokenizer, reading["window"], reading["stride"], reading["max_answer"])
    (torch_candidates,) = reader.candidates([Question("q", QUESTION, passages, [[], []])])
    assert [c.answer for c in torch_candidates] == [c["answer"] for c in body["candidates"]]
    assert np.allclose([c.score for c in torch_candidates], [c["score"] for c in body["candidates"]], atol=1e-4)


def test_pointers_on_any_piece_come_back_as_the_characters_it_covers(exported):
    """Every kind of token, pointed at by hand, decodes to exactly the passage's own characters."""
    from app.tasks.qa import pairs
    from app.tasks.qa.decode import Window, vote
    from app.text.subword import SubwordTokenizer

    _, models = exported
    tokens = SubwordTokenizer.load(models / "qa" / "1" / "tokenizer.json")
    question = pairs.question_ids(tokens, QUESTION, 32)
    row = pairs.pair_row(question, tokens.encode(PASSAGE), 128)
    assert row.type_ids[: len(question)].sum() == 0 and row.type_ids[len(question):].all()
    pieces = ["[Q]"] * len(question) + tokens.tokenizer.encode(PASSAGE).tokens[1:]  # the row's tokens
    # full-width letters and digits, an ASCII word in ## pieces, digits, and a character the vocabulary lacks
    for word, kind in (("ＡＢＣ", "pieces"), ("１９９８", "pieces"), ("iPhone", "pieces"), ("2999", "pieces"),
                       ("Apple", "pieces"), ("冰", "[UNK]"), ("公司", "characters")):
        start = PASSAGE.index(word)
        first, last = pairs.covering_tokens(row.offsets, start, start + len(word))
        if kind == "pieces":
            assert last > first and all(p.startswith("##") for p in pieces[first + 1 : last + 1])
        elif kind == "[UNK]":
            assert pieces[first] == "[UNK]" and first == last
        probs = np.zeros((len(row.token_ids), 2), np.float32)
        probs[first, 0] = probs[last, 1] = 0.9
        (best, *_) = vote([PASSAGE], [(Window(0, 0, len(PASSAGE)), pairs.char_probs(probs, row.offsets,
                                                                                     len(PASSAGE)))], 24)
        assert best.answer == word == PASSAGE[best.start : best.end]


def test_a_folder_that_cannot_serve_is_refused_with_its_reason(tmp_path):
    from app.cli import main

    (tmp_path / "roberta").mkdir()
    (tmp_path / "roberta" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    for folder, reason in ((tmp_path / "missing", "not a folder"), (tmp_path / "roberta", "model_type 'gpt2'")):
        for command in (["train", "qa"], ["train", "math"]):
            with pytest.raises(SystemExit, match=reason):
                main([*command, "--encoder", str(folder), "--out", str(tmp_path / "run")])


def test_encoder_runs_get_fine_tuning_defaults_and_their_own_recipes():
    from training.cli import math_config, qa_config

    assert qa_config([]).lr == 1e-3 and qa_config(["--recipe", "gpu"]).window == 384  # the DGCNN's
    tuned = qa_config(["--encoder", "DIR"])
    assert (tuned.encoder, tuned.lr, tuned.batch_size, tuned.embeddings) == ("DIR", 5e-5, 32, None)
    gpu = qa_config(["--encoder", "DIR", "--recipe", "gpu", "--epochs", "5"])
    assert (gpu.lr, gpu.window, gpu.stride, gpu.epochs) == (3e-5, 384, 256, 5)  # explicit flags win
    assert gpu.window + gpu.question_tokens + 1 <= 512  # fits a BERT-base position table
    assert qa_config(["--encoder", "DIR", "--recipe", "cpu"]).limit == 2000
    assert math_config([]).lr == 3e-4 and math_config(["--encoder", "DIR"]).lr == 5e-5
    assert math_config(["--encoder", "DIR", "--recipe", "gpu"]).ape_copies == 1
