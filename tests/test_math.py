"""The math solver: safe evaluator, pre-processing, grammar-constrained beam search, training, ONNX export
and POST /solve_math, on a tiny model trained here on problems written for the test."""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.settings import Settings
from app.tasks.math.decode import Grammar, State, loops
from app.tasks.math.evaluator import ExpressionError, evaluate, format_answer
from app.tasks.math.text import render, slot_question
from tests.test_api import wait_ready
from training.math.answers import parse_answer, same_answer
from training.math.data import MATH23K, EquationError, expression_tokens, load

# -- the safe evaluator ---------------------------------------------------------------------------


@pytest.mark.parametrize(("expression", "value"), [
    ("1+2*3", 7), ("(1+2)*3", 9), ("2^3^2", 512), ("2**10", 1024), ("-3+4", 1), ("1/3+1/6", Fraction(1, 2)),
    ("10-4-3", 3), ("8/4/2", 1), ("0.1+0.2", Fraction(3, 10)), ("sqrt(16/9)", Fraction(4, 3)),
    ("max(1,5,3)", 5), ("2^-2", Fraction(1, 4)), ("4^(1/2)", 2), ("round(2.5)", 3)])
def test_evaluator_is_exact(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize(("expression", "why"), [
    ("9^9^9", "exponent"), ("10^100000", "exponent"), ("(10^60)^60", "too large"),
    ("*".join(["10^60"] * 12), "too large"),
    ("1/0", "division by zero"), ("1/(3-3)", "division by zero"), ("0^-1", "division by zero"),
    ("(" * 200 + "1" + ")" * 200, "nested"), ("-" * 200 + "1", "nested"), ("2^" * 100 + "2", "nested"),
    ("__import__('os').system('ls')", "unexpected"), ("x+1", "unknown name"), ("open(1)", "unknown name"),
    ("(1).__class__", "unexpected"), ("1e999", "unexpected"), ("9" * 40, "digits"), ("1+", "end"),
    ("", "empty"), ("1 2", "after a complete"), ("sqrt(2)", "not rational"), ("2^(1/3)", "non-integer"),
    ("1+" * 300 + "1", "limit"), ("abs(1,2)", "argument")])
def test_evaluator_rejects_hostile_input_quickly(expression, why):
    with pytest.raises(ExpressionError, match=why):
        evaluate(expression)


def test_answers_are_formatted_as_asked():
    assert format_answer(Fraction(1, 3), "还剩几分之几？")["answer"] == "1/3"
    assert format_answer(Fraction(1, 4), "女生占全班的百分之几？")["answer"] == "25%"
    assert format_answer(Fraction(36, 5), "至少需要几辆车？")["answer"] == "8"
    assert format_answer(Fraction(36, 5), "最多能装满多少箱？")["answer"] == "7"
    assert format_answer(Fraction(36, 5), "每箱重多少千克？") == {
        "answer": "7.2", "answer_value": 7.2, "fraction": "36/5", "decimal": "7.2"}
    assert parse_answer("7((2)/(3))") == Fraction(23, 3) and parse_answer("3(1/2)") == Fraction(7, 2)
    assert parse_answer("25%") == Fraction(1, 4) and parse_answer("160/(1-20%)") == 200
    assert same_answer(Fraction(4997, 1000), Fraction(5)) is False  # 769.3/(3.14*7^2) is not "5"
    assert same_answer(Fraction(1, 3), Fraction(3333333, 10_000_000))


def test_a_candidate_that_cannot_be_evaluated_falls_back_to_the_next():
    from app.tasks.math.task import answer_from

    result = answer_from([("6/(2-2)", -0.5), ("6/2", -0.9)], "每组几人？", "none")
    assert result["expression"] == "6/2" and result["answer"] == "3" and result["reason"] is None
    assert result["candidates"][0]["error"] == "division by zero" and result["candidates"][1]["answer"] == "3"
    result = answer_from([("6/(2-2)", -0.5), ("2^100", -0.9)], "每组几人？", "none")
    assert result["answer"] is None and result["fraction"] is None and "division by zero" in result["reason"]
    assert "exponent" in result["reason"]
    assert answer_from([], "每组几人？", "no complete expression")["reason"] == "no complete expression"
    assert answer_from([("2-6", -0.1), ("6-2", -0.7)], "相差几人？", "none")["answer"] == "4"  # positive first
    assert answer_from([("2-6", -0.1), ("1/0", -0.7)], "相差几人？", "none")["answer"] == "-4"  # else the best


def test_rerank_features_line_up_with_their_names():
    from app.tasks.math.rerank import FEATURES, Candidate, candidate_features

    question = "一共有12个苹果，平均分给5个小朋友，每人分几个？"  # asks for a count
    candidates = [Candidate("12/5", -0.2, ("[N0]", "/", "[N1]"), 2), Candidate("1/0", -0.5, ("1", "/", "0"), 2),
                  Candidate("12-5-5", -0.9, ("[N0]", "-", "[N1]", "-", "[N1]"), 2),
                  Candidate("(12-2)/5", -1.0, ("(", "[N0]", "-", "2", ")", "/", "[N1]"), 2)]
    values = [Fraction(12, 5), None, Fraction(2), Fraction(2)]
    x = candidate_features(question, candidates, values)
    f = {name: x[:, i] for i, name in enumerate(FEATURES)}
    assert not x[1].any()  # did not evaluate
    assert list(f["agreeing_share"]) == pytest.approx([1 / 3, 0, 2 / 3, 2 / 3])
    assert list(f["count_question*whole"]) == [0, 0, 1, 1] and list(f["count_question*not_whole"]) == [1, 0, 0, 0]
    assert f["score_below_best"][3] == pytest.approx(-0.8) and f["rank_3"][3] == 1 and f["rank_0"][0] == 1
    assert f["constants"][3] == 1 and f["constants"][0] == 0 and f["operators"][3] == 2
    assert f["numbers_used"][0] == 1.0 and f["log10_size_vs_numbers"][2] == pytest.approx(np.log10(2 / 12))


def test_the_reranker_is_fitted_to_pick_what_is_right_and_served_by_answer_from():
    from app.tasks.math.rerank import FEATURES, Candidate, Reranker
    from app.tasks.math.task import answer_from
    from training.math.rerank import accuracy, fit

    rng = random.Random(0)
    problems = []
    for _ in range(60):  # the right answer is the whole one, wherever the beam put it
        n = rng.randint(2, 30)
        candidates = [Candidate(f"{n}/7", -0.1, ("[N0]", "/", "7"), 1),
                      Candidate(f"{n}*7", -0.3, ("[N0]", "*", "7"), 1)]
        rng.shuffle(candidates)
        values = [evaluate(c.expression) for c in candidates]
        right = np.array([v.denominator == 1 for v in values])
        problems.append(("每盒装7个，有几个？", candidates, values, right))
    reranker = Reranker(fit(problems[:40]))
    assert accuracy(problems[40:], reranker) == 1.0 and accuracy(problems[40:], None) < 0.8
    weights = [0.0] * len(FEATURES)
    weights[FEATURES.index("count_question*whole")] = 1.0
    result = answer_from([("10/4", -0.1), ("10*4", -0.2)], "一共有几个？", "none", Reranker(weights))
    assert result["expression"] == "10*4" and [c["answer"] for c in result["candidates"]] == ["2.5", "40"]
    with pytest.raises(ValueError):
        Reranker([1.0])


# -- pre-processing -------------------------------------------------------------------------------

def test_numbers_become_slots_and_equations_read_back():
    q = slot_question("买一辆汽车要多加价7%，现金只需按原价的95%付款，多付7200元，另有3(1/2)和（1/5）")
    assert q.numbers == ["7", "95", "7200", "3(1/2)", "(1/5)"] and "[N2]" in q.pieces and "7" not in q.pieces
    tokens = expression_tokens("x=7200/(1+7%-95%)+3(1/2)*[(1/5)-0.1]", q.numbers)
    assert tokens[:3] == ["[N2]", "/", "("] and "[N0]" in tokens and "[N4]" in tokens
    assert render(tokens, q.numbers) == "7200/(1+(7/100)-(95/100))+(3+1/2)*((1/5)-0.1)"
    assert evaluate(render(tokens, q.numbers)) == Fraction(7200) / Fraction(12, 100) + Fraction(7, 2) / 10
    assert render(expression_tokens("x=2**3:4", []), []) == "2^3/4"
    for bad in ("x=3*x+1", "y=1+2", "x=(1+2", "x=1+2)", "x=%", "x=1$2"):
        with pytest.raises(EquationError):
            expression_tokens(bad, [])


@pytest.mark.data
def test_math23k_equations_round_trip_to_their_answers():
    problems = load(MATH23K, limit=1000)
    kept = [p for p in problems if p.target is not None]
    assert len(kept) >= 0.99 * len(problems)
    for p in kept[:200]:
        assert same_answer(evaluate(render(p.target, p.numbers)), parse_answer(p.answer))
        assert all(t in p.pieces for t in p.target if t.startswith("[N"))  # slots name the question's numbers


# -- a tiny model trained on templated problems --------------------------------------------------

TEMPLATES = [("小明有{a}个苹果，又买了{b}个，现在一共有多少个？", "x={a}+{b}"),
             ("学校把{a}本书平均分给{b}个班，每班分到多少本？", "x={a}/{b}"),
             ("一辆汽车每小时行驶{a}千米，{b}小时行驶多少千米？", "x={a}*{b}"),
             ("一根绳子长{a}米，用去了{b}米，还剩下多少米？", "x={a}-{b}")]


def templated(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text, equation = TEMPLATES[i % len(TEMPLATES)]
        b = rng.randint(2, 9)
        a = b * rng.randint(11, 99)
        values = {"a": a, "b": b}
        out.append({"id": f"t{seed}-{i}", "original_text": text.format(**values), "equation": equation.format(**values),
                    "ans": str(evaluate(equation.format(**values)[2:]))})
    return out


@pytest.fixture(scope="module")
def tiny_math(tiny_mlm_run, tmp_path_factory):
    """Fine-tune the session's tiny BERT on 64 templated problems, export it, and write unseen ones."""
    from training.math.export import load_run, write_model
    from training.math.train import MathConfig, train

    folder = tmp_path_factory.mktemp("math_data")
    run = tmp_path_factory.mktemp("math_run")
    data, unseen = run / "train.jsonl", folder / "unseen.jsonl"
    for path, rows in ((data, templated(64, 1)), (unseen, templated(24, 2))):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    train(MathConfig(out=str(run), init=str(tiny_mlm_run), data=str(data), dev_data=str(unseen), max_positions=64,
                     max_source=48, max_target=16, batch_size=16, epochs=80, lr=3e-3, warmup=0.05, eval_every=160,
                     eval_problems=24, threads=2, device="cpu"))
    model, vocab, state = load_run(run)
    models = tmp_path_factory.mktemp("math_models")
    write_model(model, vocab, models, "math", {}, {"command": "tests"}, 48, 16)
    return run, models, unseen


def test_training_learns_templates_and_resumes(tiny_math, tiny_mlm_run):
    from training.math.train import MathConfig, train

    run, _, unseen = tiny_math
    state = torch.load(run / "last.pt", weights_only=False)
    assert state["step"] == 320 and [h["step"] for h in state["history"]] == [160, 320]
    assert state["history"][-1]["train_loss"] < 0.5 * state["history"][0]["train_loss"]
    assert state["history"][-1]["dev_accuracy"] >= 0.75  # unseen numbers: the slots generalise
    train(MathConfig(out=str(run), init=str(tiny_mlm_run), data=str(run / "train.jsonl"), dev_data=str(unseen),
                     max_positions=64, max_source=48, max_target=16, batch_size=16, epochs=85, lr=3e-3, warmup=0.05,
                     eval_every=160, eval_problems=24, threads=2, device="auto"))
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 340  # went on from 320


def test_unilm_mask_keeps_the_question_blind_to_the_expression(tiny_math):
    from training.math.export import load_run
    from training.math.model import hidden_states

    model, vocab, _ = load_run(tiny_math[0])
    ids = torch.randint(5, len(vocab), (2, 12))
    types = torch.tensor([[0] * 7 + [1] * 5] * 2)
    changed = ids.clone()
    changed[:, 10:] = vocab.index["+"]
    with torch.no_grad():
        a, b = (hidden_states(model, x, types, vocab.pad_id) for x in (ids, changed))
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)  # the question and earlier expression tokens
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_cached_decoding_graphs_match_the_full_model(tiny_math, tmp_path):
    from training.math.export import export_graphs, load_run

    model, vocab, _ = load_run(tiny_math[0])
    assert export_graphs(model, vocab, tmp_path) < 1e-4


def test_grammar_allows_only_expressions():
    from app.text import CharVocab
    from training.math.model import math_vocab

    vocab = math_vocab(CharVocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"0123456789.+-*/^()%=", "米"]))
    grammar = Grammar(vocab)
    rng = np.random.default_rng(0)
    for _ in range(300):  # random walks through the grammar always end in an expression the evaluator reads
        state, tokens = State(), []
        while True:
            allowed = grammar.allowed(state, n_slots=3)
            assert vocab.index["[N3]"] not in allowed and vocab.index["米"] not in allowed
            token = int(rng.choice(allowed)) if len(tokens) < 30 or grammar.end not in allowed else grammar.end
            if token == grammar.end:
                break
            tokens.append(token)
            state = grammar.advance(state, token)
        text = render([vocab.tokens[t] for t in tokens], ["2", "(1/2)", "3.5"])
        try:
            evaluate(text)
        except ExpressionError as exc:  # a value it cannot take (1/0, sqrt(2)...), never a syntax error
            assert not any(w in str(exc) for w in ("unexpected", "expected", "end of", "unknown", "empty")), text
    assert loops([5, 6, 5, 6, 5, 6, 5, 6]) and not loops([5, 6, 5, 6, 5, 6, 7, 5])


@pytest.fixture(scope="module")
def client(tiny_math):
    with TestClient(create_app(Settings(models=tiny_math[1]))) as c:
        assert wait_ready(c)["models"]["math"] == "ready"
        yield c


def test_solve_math_endpoint_solves_unseen_problems(client, tiny_math):
    rows = [json.loads(line) for line in tiny_math[2].read_text(encoding="utf-8").splitlines()]
    right = 0
    for row in rows[:8]:
        r = client.post("/solve_math", json={"question": row["original_text"], "beam_size": 3})
        body = r.json()
        assert r.status_code == 200 and len(body["candidates"]) <= 3
        assert all(c["score"] <= 0 for c in body["candidates"])
        if body["answer"] is not None:
            assert evaluate(body["expression"]) == Fraction(body["fraction"])
        right += body["answer"] is not None and Fraction(body["fraction"]) == Fraction(row["ans"])
    assert right >= 6


def test_solve_math_rejects_bad_input(client):
    for body in ({"question": " "}, {"question": "长" * 100}, {"question": "1+1", "beam_size": 0},
                 {"question": "1+1", "beam_size": 11}, {"question": 3}, {"text": "1+1"}):
        r = client.post("/solve_math", json=body)
        assert r.status_code == 422 and "error" in r.json(), (body, r.text)


def test_eval_math_reports_accuracy(tiny_math):
    from training.math.evaluate import evaluate_served

    _, models, unseen = tiny_math
    result = evaluate_served([unseen], models)
    assert result["task"] == "math" and result["n"] == 24 and result["gold_equation_ceiling"] == 1.0
    assert 0.75 <= result["accuracy"] <= result["valid_expressions"] <= 1.0


@pytest.mark.data
def test_our_ape210k_shares_are_disjoint_and_only_the_train_share_is_ever_trained_on(monkeypatch):
    from training.math import data

    shares = {split: {p.id for p in load(data.APE_VALID, split)} for split in ("dev", "train", "test")}
    total = sum(map(len, shares.values()))
    assert len(set().union(*shares.values())) == total == len(data.read_jsonl(data.APE_VALID))
    assert 0.17 < len(shares["dev"]) / total < 0.23 and 0.37 < len(shares["test"]) / total < 0.43

    def fake_load(path, split=None, limit=0):  # one problem per (file, share) asked for
        return [data.Problem(id=f"{Path(path).name}:{split}", question="", answer="1", target=["1"])]

    monkeypatch.setattr(data, "load", fake_load)
    asked = [p.id for p in data.training_set([data.MATH23K], ape_copies=2)]
    assert asked == ["math23k_full.jsonl:None", "valid.ape.json:train", "valid.ape.json:train"]
    assert [p.id for p in data.training_set([data.MATH23K])] == ["math23k_full.jsonl:None"]
