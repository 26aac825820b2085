"""/qa: data formats, the CMRC metric, windows and voting, a tiny training run, export parity and the API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.tasks.qa.decode import Window, best_span, vote, windows
from tests.test_api import wait_ready
from training.common.paths import DATA
from training.common.splits import qa_split
from training.qa.data import answer_spans, load
from training.qa.evaluate import exact, f1, score, tokens
from training.qa.model import DGCNNReader, ReaderConfig

CMRC = DATA / "qa" / "cmrc2018"


# -- data ------------------------------------------------------------------------------------

def test_the_three_formats_load_into_questions_with_passages_and_answers(tmp_path):
    squad = {"data": [{"paragraphs": [{"context": "北京是中国的首都。", "qas": [
        {"id": "q1", "question": "中国的首都是哪里？", "answers": [{"text": "北京", "answer_start": 0}]}]}]}]}
    webqa = {"Q1": {"question": "黑色吸收什么", "evidences": {
        "Q1#0": {"answer": ["光"], "evidence": "黑色吸收所有的光"},
        "Q1#1": {"answer": ["no_answer"], "evidence": "白色反射光"}}}}
    samples = [{"question": "谁写了红楼梦", "passages": [{"passage": "红楼梦的作者是曹雪芹", "answer": "曹雪芹"},
                                                      {"passage": "西游记是吴承恩写的", "answer": ""}]},
               {"passages": [{"passage": "一条没有问题的记录", "answer": ""}]}]  # skipped, not a crash
    for name, data in (("squad.json", squad), ("webqa.json", webqa), ("samples.json", samples)):
        (tmp_path / name).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    (q,) = load(tmp_path / "squad.json")
    assert (q.id, q.passages, q.answers, q.starts) == ("q1", ["北京是中国的首都。"], [["北京"]], [0])
    (q,) = load(tmp_path / "webqa.json")
    assert q.passages == ["黑色吸收所有的光", "白色反射光"] and q.answers == [["光"], []] and q.gold == ["光"]
    (q,) = load(tmp_path / "samples.json")
    assert q.answers == [["曹雪芹"], []] and q.gold == ["曹雪芹"]


@pytest.mark.data
def test_the_shared_cmrc_files_load():
    train, trial = load(CMRC / "train.json"), load(CMRC / "trial.json")
    assert len(train) == 10142 and len(trial) == 1002
    assert all(q.gold for q in trial)
    assert {qa_split(q.id) for q in train} == {"train", "dev"}


def test_answer_spans_finds_every_occurrence_and_checks_the_given_offset():
    assert answer_spans("甲乙甲乙", ["甲乙"], [2]) == [(0, 2), (2, 4)]
    assert answer_spans("甲乙丙", ["丙"], [0]) == [(2, 3)]  # a wrong offset is not trusted
    assert answer_spans("甲乙丙", ["丁"]) == []


# -- metric ----------------------------------------------------------------------------------

def test_cmrc_metric_on_hand_made_cases():
    assert tokens("Hello world，北京！") == ["hello", "world", "北", "京"]
    assert exact("北京。", "北京") == 1.0 and exact("北京市", "北京") == 0.0
    assert f1("北京市", "北京") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert f1("上海", "北京") == 0.0
    # the best over the gold answers; a null answer scores 0, unless no passage answers the question
    assert score(["北京市", None, None, "北京"], [["北京", "北京市"], ["北京"], [], []]) == {"em": 0.5, "f1": 0.5}


# -- decoding --------------------------------------------------------------------------------

def test_windows_cover_each_passage_with_overlap():
    spans = windows([10, 3, 0], size=4, stride=3)
    assert [(w.passage, w.offset, w.length) for w in spans] == [
        (0, 0, 4), (0, 3, 4), (0, 6, 4), (1, 0, 3), (2, 0, 0)]
    for n in (1, 255, 256, 257, 1000):  # every span of up to size - stride characters lies in one window
        ws = windows([n], 256, 192)
        assert all(any(w.offset <= s and s + 64 <= w.offset + w.length for w in ws) for s in range(n - 64 + 1))


def test_best_span_keeps_start_before_end_within_the_answer_limit():
    probs = np.zeros((8, 2), np.float32)
    probs[6, 0], probs[5, 1] = 0.9, 0.9  # end before start: not a span
    probs[1, 0], probs[3, 1] = 0.5, 0.6
    assert best_span(probs, 4) == (1, 3, pytest.approx(0.3))  # 1..5 would be 5 characters: over the limit
    assert best_span(probs, 5) == (1, 5, pytest.approx(0.45))


def test_vote_sums_an_answer_over_passages_and_keeps_one_score_per_passage():
    passages = ["曹雪芹写了红楼梦", "作者曹雪芹", "高鹗续写"]

    def probs(n, start, end, p):
        a = np.zeros((n, 2), np.float32)
        a[start, 0], a[end, 1] = p, p
        return a

    found = [(Window(0, 0, 8), probs(8, 0, 2, 0.6)), (Window(0, 2, 6), probs(6, 0, 0, 0.1)),
             (Window(1, 0, 5), probs(5, 2, 4, 0.6)), (Window(2, 0, 4), probs(4, 0, 1, 0.8))]
    best, *rest = vote(passages, found, max_answer=8)
    assert best.answer == "曹雪芹" and best.score == pytest.approx(0.72) and (best.passage, best.start) == (0, 0)
    assert rest[0].answer == "高鹗" and rest[0].score == pytest.approx(0.64)
    (spaced,) = vote([" 高鹗 续写"], [(Window(0, 0, 6), probs(6, 0, 3, 0.5))], max_answer=8)
    assert (spaced.answer, spaced.start, spaced.end) == ("高鹗", 1, 3)  # the span spells the answer exactly


# -- the model -------------------------------------------------------------------------------

def test_padding_does_not_change_a_windows_pointers():
    torch.manual_seed(0)
    net = DGCNNReader(ReaderConfig(vocab_size=60, hidden=16, question_length=8)).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    q = torch.tensor([[7, 8, 9, 0, 0, 0, 0, 0]])
    p = torch.randint(5, 60, (1, 9))
    padded = torch.cat([p, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert (net(q, p) - net(q, padded)[:, :9]).abs().max() < 1e-5


def test_folding_the_pretrained_table_keeps_the_readers_outputs():
    from training.common.export import fold_pretrained

    net = DGCNNReader(ReaderConfig(vocab_size=40, hidden=16, question_length=6, pretrained_dim=8)).eval()
    torch.nn.init.normal_(net.pretrained.weight)
    torch.nn.init.normal_(net.pretrained_proj.weight)
    folded = fold_pretrained(net)
    assert folded.config.pretrained_dim == 0 and not hasattr(folded, "pretrained")
    q, p = torch.randint(1, 40, (2, 6)), torch.randint(1, 40, (2, 11))
    with torch.no_grad():
        assert (net(q, p) - folded(q, p)).abs().max() < 1e-5


@pytest.fixture(scope="module")
def tiny_qa(tmp_path_factory):
    """A tiny reader trained for 2 epochs on 96 CMRC questions and exported (checks the pipeline, not quality)."""
    from training.qa.export import export
    from training.qa.train import TrainConfig, train

    run = tmp_path_factory.mktemp("qa_run")
    train(TrainConfig(data=[str(CMRC / "train.json")], out=str(run), hidden=16, epochs=2, batch_size=16,
                      window=64, stride=40, max_answer=24, limit=96, eval_questions=8, threads=2, lr=1e-2,
                      device="cpu"))
    models = tmp_path_factory.mktemp("qa_models")
    export(run, models, "qa", [CMRC / "train.json"], command="tests", limit=12)
    return run, models


def test_tiny_training_run_learns_and_exports_with_parity(tiny_qa):
    run, models = tiny_qa
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 2 and history[1]["loss"] < history[0]["loss"]
    config = json.loads((models / "qa" / "model.json").read_text())
    assert config["task"] == "qa" and config["quality"]["onnx_parity_max_abs_diff"] < 1e-4
    assert config["reading"]["window"] - config["reading"]["stride"] >= config["reading"]["max_answer"]
    assert (models / "qa" / "1" / "reader.onnx").exists()
    # the /explain gradient graph is exported with the reader and checked against torch autograd
    assert (models / "qa" / "1" / "gradient.onnx").exists() and "gradient" in config["stages"]
    assert config["quality"]["gradient_parity_max_abs_diff"] < 1e-4 and config["explain"]["max_length"] == 64


@pytest.mark.data
@pytest.mark.slow
def test_training_resumes_from_its_last_checkpoint(tmp_path):
    from training.qa.train import TrainConfig, train

    cfg = dict(data=[str(CMRC / "train.json")], out=str(tmp_path), hidden=16, batch_size=16, window=64, stride=40,
               max_answer=24, limit=32, eval_questions=4, threads=2, device="auto")
    train(TrainConfig(**cfg, epochs=1))
    first = torch.load(tmp_path / "last.pt", weights_only=False)
    train(TrainConfig(**cfg, epochs=2, seed=2))  # a fresh start with another seed would change epoch 1's loss
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0] == first["state"]["history"][0]  # the first epoch was kept, not run again


@pytest.fixture(scope="module")
def qa_client(tiny_qa):
    from app.api.app import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(models=tiny_qa[1]))) as client:
        wait_ready(client)
        yield client


def test_qa_answers_with_spans_into_the_passages(qa_client):
    passages = ["范廷颂是越南罗马天主教枢机。1963年被任为主教；1990年被擢升为天主教河内总教区宗座署理。" * 3, "短文"]
    r = qa_client.post("/qa", json={"question": "范廷颂是什么时候被任为主教的？", "passages": passages, "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 1 <= len(body["candidates"]) <= 3
    for c in body["candidates"]:
        start, end = c["span"]
        assert passages[c["passage_index"]][start:end] == c["answer"]
    assert body["answer"] in (None, body["candidates"][0]["answer"])


@pytest.mark.parametrize("payload, field", [
    ({"question": "", "passage": "文章"}, "question"),
    ({"question": "问" * 65, "passage": "文章"}, "question"),
    ({"question": "问题", "passage": "文章", "passages": ["文章"]}, "passage"),
    ({"question": "问题"}, "passage"),
    ({"question": "问题", "passages": ["文章"] * 33}, "passages"),
    ({"question": "问题", "passages": ["文章", " "]}, "passages[1]"),
    ({"question": "问题", "passage": 3}, "passage"),
])
def test_bad_qa_requests_get_422_naming_the_field(qa_client, payload, field):
    r = qa_client.post("/qa", json=payload)
    assert r.status_code == 422
    assert field in r.json()["error"]["message"]


def test_eval_qa_prints_em_and_f1(tiny_qa, tmp_path):
    from training.cli import eval_main

    samples = DATA / "qa" / "webqa_sogou_samples" / "WebQA_sample.json"
    metrics = eval_main("qa", [samples], tiny_qa[1], limit=5)
    assert metrics["task"] == "qa" and metrics["n"] == 5 and 0 <= metrics["em"] <= metrics["f1"] <= 1


def test_export_variants_measures_keeps_by_rule_and_serves_them(tiny_qa, tmp_path):
    """`zhserve export variants` on the tiny reader: both variants measured on 8 dev questions, each kept
    (files listed, present) or left out (files gone, a reason) by the rule, and a kept one really served."""
    import shutil

    from training.common.variants import MAX_DROP, export_variants, worst_drop

    _, models = tiny_qa
    shutil.copytree(models / "qa", tmp_path / "qa")
    section = export_variants(tmp_path, "qa", limit=8)
    assert section == json.loads((tmp_path / "qa" / "model.json").read_text())["variants"]
    assert section["fp32"]["dev"]["qa"]["n"] == 8
    for kind in ("int8", "fp16"):
        entry = section[kind]
        names = {f"reader.{kind}.onnx"}
        present = {p.name for p in (tmp_path / "qa" / "1").glob(f"*.{kind}.onnx")}
        passes = worst_drop(section["fp32"]["dev"], entry["dev"]) <= MAX_DROP and (
            kind == "fp16" or entry["cpu_speedup"]["reader"] > 1.0)
        assert ("files" in entry) == passes and present == (names if passes else set()), entry
    r = qa_answer_with(tmp_path, "fp16")
    assert r.status_code == 200
    assert r.headers.get("content-type", "").startswith("application/json")


def qa_answer_with(models, variant):
    from app.api.app import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(models=models, variant=variant, intra_op_threads=1))) as c:
        wait_ready(c)
        (info,) = c.get("/v1/models").json()["models"]
        served = info["variants"]["reader"]
        assert served == (variant if "files" in json.loads((models / "qa" / "model.json").read_text())["variants"][
            variant] else "fp32")
        return c.post("/qa", json={"question": "谁?", "passage": "周杰伦出生于台湾。"})
