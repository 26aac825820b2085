"""The project's BERT and Perturbed Masking: pretraining and export on tiny data, the impact matrix served
through the batcher against a direct PyTorch computation, Eisner trees, segmentation metrics, the
/segment and /parse endpoints, and `zhserve export mlm --hf-model` on a checkpoint written here."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.settings import Settings
from app.tasks.mlm.parse import ARC_FEATURES, ROOT_FEATURES
from app.tasks.mlm.perturbed import all_pairs
from app.tasks.mlm.segment import clauses, words_from_scores
from app.tasks.mlm.trees import eisner, mart
from tests.test_api import wait_ready
from training.common.serving import served_task
from training.mlm.metrics import chain_heads, fitting_half, score_segmentation, uas


@pytest.fixture(scope="module")
def tiny_mlm(tiny_mlm_run, tmp_path_factory):
    """The session's tiny BERT with n-gram statistics of its own pretraining stream, exported for /segment and
    /parse."""
    from training.common.bert import load_mlm
    from training.mlm import ngrams
    from training.mlm.export import ProbeRules, write_model

    run = tiny_mlm_run
    models = tmp_path_factory.mktemp("mlm_models")
    stats = ngrams.main(run / "train.npy", run / "vocab.txt", models.parent / "ngrams.npz", min_count=1)
    model, vocab = load_mlm(run)
    rules = ProbeRules(layer=2, threshold=0.5, ngrams=stats, arc_weights=RIGHT_CHAIN_RULE)
    write_model(model, vocab, models, "mlm", rules, quality={}, training={"command": "tests"})
    return run, models


# An arc rule that reads only structure: every word is headed by the next one, the last word is the root.
RIGHT_CHAIN_RULE = [5.0 * (name in ("d+1", "last_word")) for name in (*ARC_FEATURES, *ROOT_FEATURES)]


def test_pretraining_records_progress_and_resumes(tiny_mlm):
    from training.mlm.train import MLMConfig, train

    run, _ = tiny_mlm
    state = torch.load(run / "last.pt", weights_only=False)
    assert state["step"] == 6 and [h["step"] for h in state["history"]] == [3, 6]
    assert 0 <= state["history"][-1]["masked_accuracy"] <= 1
    final = json.loads((run / "final.json").read_text())
    assert final["masked_tokens"] > 0
    vocab = (run / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and all(c in vocab for c in "0123456789+-*/%")
    train(MLMConfig(out=str(run), hidden=32, layers=2, heads=2, intermediate=64, seq_len=32, short_seq_len=16,
                    batch_size=8, steps=8, max_chars=30_000, vocab_size=3000, eval_every=3, threads=2, device="auto"))
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 8  # went on from 6


def test_served_impact_matrix_matches_pytorch(tiny_mlm):
    from training.common.bert import load_mlm

    run, models = tiny_mlm
    model, vocab = load_mlm(run)
    text = "我们的祖国是花园"
    ids = vocab.encode(text)

    async def served():
        async with served_task(models, "mlm") as task:
            return await task.impacts(ids, all_pairs(len(text)), time.monotonic() + 60)

    got = asyncio.run(served())
    base = torch.tensor([[vocab.cls_id, *ids.tolist(), vocab.sep_id]])
    expected = np.zeros_like(got)
    with torch.no_grad():
        def hidden(masked):
            x = base.clone()
            x[0, [m + 1 for m in masked]] = vocab.mask_id
            return model.bert(x, output_hidden_states=True).hidden_states[2][0]

        for i, j in itertools.permutations(range(len(text)), 2):
            expected[i, j] = torch.linalg.norm(hidden([i])[i + 1] - hidden([i, j])[i + 1]).item()
    assert np.abs(got - expected).max() < 1e-4 and expected.max() > 0


def _is_tree(heads):
    if sum(h == 0 for h in heads) != 1:
        return False
    for i in range(1, len(heads) + 1):
        seen, j = set(), i
        while j != 0:
            if j in seen:
                return False
            seen.add(j)
            j = heads[j - 1]
    return True


def test_eisner_gives_a_well_formed_projective_tree_and_finds_the_best():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 9):
        heads = eisner(rng.normal(size=(n, n)), rng.normal(size=n))
        assert len(heads) == n and _is_tree(heads)
        arcs = [(min(i + 1, h), max(i + 1, h)) for i, h in enumerate(heads)]
        assert not any(a < c < b < d for (a, b), (c, d) in itertools.permutations(arcs, 2))
    scores = np.full((3, 3), -5.0)
    scores[1, 0] = scores[1, 2] = 5.0  # word 2 heads words 1 and 3
    assert eisner(scores, np.array([0.0, 1.0, 0.0])) == [2, 0, 2]


def test_tree_baselines_and_uas():
    assert chain_heads(3, "right") == [2, 3, 0] and chain_heads(3, "left") == [0, 1, 2]
    assert uas([[2, 0, 2]], [[2, 0, 1]]) == pytest.approx(2 / 3)
    matrix = np.array([[0, 9, 0, 0], [9, 0, 0, 0], [0, 0, 0, 9], [0, 0, 9, 0]], float)
    assert mart(matrix, ["我", "爱", "北京", "天安门"]) == "((我 爱) (北京 天安门))"


def test_segmentation_metrics_on_hand_made_cases():
    gold = [["我", "爱", "北京"]]
    assert score_segmentation(gold, [["我", "爱", "北京"]])["f1"] == 1.0
    r = score_segmentation(gold, [["我爱", "北", "京"]], known_words={"我", "爱"})
    assert r["precision"] == 0 and r["recall"] == 0 and r["oov_recall"] == 0
    r = score_segmentation(gold, [["我", "爱", "北", "京"]])
    assert r["precision"] == pytest.approx(2 / 4) and r["recall"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        score_segmentation(gold, [["你"]])


def test_words_from_scores_cuts_at_punctuation_and_keeps_ascii_runs():
    text = "我爱abc，北京2024年"
    runs = clauses(text, 64)
    assert runs == [(0, 5), (6, 13)]
    scores = [np.array([0.0, 0.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])]
    assert words_from_scores(text, runs, scores, 0.5) == ["我", "爱", "abc", "，", "北京", "2024", "年"]


@pytest.fixture(scope="module")
def client(tiny_mlm):
    with TestClient(create_app(Settings(models=tiny_mlm[1]))) as c:
        assert wait_ready(c)["models"]["mlm"] == "ready"
        yield c


def test_segment_and_parse_endpoints(client):
    r = client.post("/segment", json={"text": "共同创造美好的新世纪。"})
    assert r.status_code == 200 and "".join(r.json()["words"]) == "共同创造美好的新世纪。"
    words = ["我", "爱", "北京", "天安门"]
    r = client.post("/parse", json={"text": "我爱北京天安门", "words": words})
    body = r.json()
    assert r.status_code == 200 and body["words"] == words and body["heads"] == [2, 3, 4, 0]  # RIGHT_CHAIN_RULE
    assert body["tree"].count("(") == len(words) - 1 and all(w in body["tree"] for w in words)
    r = client.post("/parse", json={"text": "我爱北京"})
    assert r.status_code == 200 and "".join(r.json()["words"]) == "我爱北京"


def test_segment_and_parse_reject_bad_input(client):
    for path, body in (("/segment", {"text": "  "}), ("/segment", {"text": "长" * 2001}),
                       ("/parse", {"text": "长" * 200}), ("/parse", {"text": "我爱北京", "words": ["我", "北京"]}),
                       ("/segment", {"text": 3})):
        r = client.post(path, json=body)
        assert r.status_code == 422 and "error" in r.json(), (path, body, r.text)


def test_parse_reads_the_word_tagger(tiny_mlm_run, tmp_path):
    from app.tasks.mlm.parse import WordTagger, tag_feature_names
    from training.common.bert import load_mlm
    from training.mlm.export import ProbeRules, write_model

    model, vocab = load_mlm(tiny_mlm_run)
    tags = ["NOUN", "VERB"]
    tagger = WordTagger(tags, np.zeros((2 * model.config.hidden_size, 2)), np.array([-10.0, 10.0]))  # all VERB
    names = [*ARC_FEATURES, *tag_feature_names(tags), *ROOT_FEATURES]
    # a verb is headed by the word on its left (a right neighbour is penalised), the first word is the root
    rule = {"dependent_VERB*adjacent": 10.0, "dependent_VERB*adjacent*head_right": -20.0, "bias": 5.0,
            "position": -20.0}
    for name, weights in (("tagged", [rule.get(n, 0.0) for n in names]), ("short", RIGHT_CHAIN_RULE)):
        rules = ProbeRules(layer=2, threshold=0.5, arc_weights=weights, tagger=tagger)
        write_model(model, vocab, tmp_path / name, "mlm", rules, quality={}, training={"command": "tests"})
    assert json.loads((tmp_path / "tagged" / "mlm" / "model.json").read_text())["parse"]["tags"] == tags
    with TestClient(create_app(Settings(models=tmp_path / "tagged"))) as c:
        assert wait_ready(c)["models"]["mlm"] == "ready"
        r = c.post("/parse", json={"text": "我爱北京天安门", "words": ["我", "爱", "北京", "天安门"]})
        assert r.status_code == 200 and r.json()["heads"] == [0, 1, 2, 3]  # the left chain: the tags were read
    with TestClient(create_app(Settings(models=tmp_path / "short"))) as c:  # no weights for the tag features
        assert wait_ready(c)["models"]["mlm"] == "failed"


def test_export_a_hugging_face_checkpoint(tmp_path, tiny_mlm_run):
    from transformers import BertConfig, BertForMaskedLM

    from app.cli import main
    from training.mlm import ngrams

    hf = tmp_path / "hf"
    specials = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 5)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + list("我爱北京天安门的") + ["##门"]
    BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64)).save_pretrained(hf)
    (hf / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    models = tmp_path / "models"
    other_vocab = tmp_path / "ngrams.npz"  # statistics counted with the project's vocabulary, not this one
    ngrams.main(tiny_mlm_run / "train.npy", tiny_mlm_run / "vocab.txt", other_vocab, min_count=1)
    main(["export", "mlm", "--hf-model", str(hf), "--models", str(models), "--layer", "1", "--threshold", "0.1",
          "--orientation", "head_moves_dependent", "--segment-eval", "--parse-eval", "--ngrams", str(other_vocab)])
    config = json.loads((models / "mlm" / "model.json").read_text())
    assert config["task"] == "mlm" and config["architecture"]["probe_layer"] == 1
    assert "ngrams" not in config["segment"] and not (models / "mlm" / "1" / "ngrams.npz").exists()
    assert config["quality"]["onnx_parity_max_abs_diff"] < 1e-4
    with TestClient(create_app(Settings(models=models))) as c:
        assert wait_ready(c)["models"]["mlm"] == "ready"
        r = c.post("/segment", json={"text": "我爱北京天安门"})
        assert r.status_code == 200 and "".join(r.json()["words"]) == "我爱北京天安门"
        r = c.post("/parse", json={"text": "我爱北京天安门", "words": ["我", "爱", "北京", "天安门"]})
        assert r.status_code == 200 and _is_tree(r.json()["heads"])  # the paper's rule: no arc weights exported


def test_boundary_features_compare_two_reads_of_the_same_masked_character():
    from app.tasks.mlm.segment import boundary_features

    # 3 characters; masking character 1 moves character 0 much more than character 2: 1 binds to 0.
    f = np.array([[0, 4.0, 0], [1.0, 0, 1.0], [0, 0.5, 0]])
    x = boundary_features(f)
    assert x.shape == (2, 6)
    assert x[0, 2] == pytest.approx(np.log(4.0) - np.log(0.5))  # right_binds_left for the pair (0, 1)
    assert x[0, 4] == 0 and x[0, 5] == 1  # no left neighbour, has a right one
    assert x[1, 3] == pytest.approx(np.log(0.5) - np.log(4.0))  # masking 1 moves 2 less than it moves 0
    assert x[1, 1] == pytest.approx((np.log(1.0) + np.log(0.5)) / 2)


def test_gap_features_read_the_neighbouring_gaps():
    from app.tasks.mlm.segment import FEATURES, feature_names, gap_features

    f = np.array([[0, 4.0, 0, 1], [1.0, 0, 1.0, 2], [0, 0.5, 0, 3], [1, 1, 1, 0]])
    extra = np.arange(3 * 13, dtype=float).reshape(3, 13)
    x = gap_features(f, extra)
    own = len(FEATURES) + 13
    assert x.shape == (3, len(feature_names(True))) == (3, own + 2 * (own - 1))
    assert np.array_equal(x[1, own:2 * own - 1], x[0, 1:own])  # gap 1's "previous" block is gap 0's own
    assert np.array_equal(x[1, 2 * own - 1:], x[2, 1:own])  # and its "next" block is gap 2's own
    assert not x[0, own:2 * own - 1].any() and not x[2, 2 * own - 1:].any()  # zero past the clause's edges
    assert gap_features(np.zeros((1, 1))).shape == (0, len(feature_names(False)))  # one character, no gap


def test_ngram_statistics_on_a_hand_made_stream(tmp_path):
    from app.tasks.mlm.ngrams import FEATURES, NgramStats
    from app.text import CharVocab
    from app.text.vocab import SPECIAL_TOKENS
    from training.mlm import ngrams

    vocab = CharVocab(list(SPECIAL_TOKENS) + list("abcd"))
    a, b, c, d = (vocab.index[ch] for ch in "abcd")
    stream = np.array([a, b, a, c, a, b, a, d], dtype=np.uint16)
    arrays = ngrams.build(stream, vocab, min_count=1)
    stats = NgramStats(arrays)
    x = stats.features(np.array([a, b, a, c]))
    assert x.shape == (3, len(FEATURES))
    # after "a" come b, c, b, d: entropy of (1/2, 1/4, 1/4); before "a" come b, c, b: (2/3, 1/3)
    right_a = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))
    left_a = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))
    assert x[0, FEATURES.index("right_entropy_1")] == pytest.approx(right_a)  # the 1-gram "a" before gap 0
    assert x[1, FEATURES.index("left_entropy_1")] == pytest.approx(left_a)  # the 1-gram "a" after gap 1
    # "ab" seen twice in 8 ids, a 4 times, b twice: PMI = log((2 + 0.5) * 8 / ((4 + 1) * (2 + 1)))
    assert x[0, FEATURES.index("pmi")] == pytest.approx(np.log(2.5 * 8 / 15))
    # the 2-gram ending at gap 0 would start before the clause: unknown, read as the mean
    assert x[0, FEATURES.index("right_known_2")] == 0 and x[1, FEATURES.index("right_known_2")] == 1
    assert x[0, FEATURES.index("right_entropy_2")] == pytest.approx(float(arrays["right_mean_2"]))
    rare = NgramStats(ngrams.build(stream, vocab, min_count=3)).features(np.array([a, b, a, c]))
    assert rare[1, FEATURES.index("right_known_1")] == 0  # "b" is followed only twice: left out


def test_eval_parse_scores_the_served_trees_and_the_held_out_half(tiny_mlm, tmp_path):
    from training.mlm.evaluate import evaluate_parse

    sentences = [["我", "爱", "北京"], ["天安门", "很", "大", "。"], ["他", "来", "了"], ["长" * 50], ["好"]]
    gold = [[0, 1, 2], [3, 3, 0, 3], [2, 0, 2], [0], [0]]
    data = tmp_path / "gold.conllu"
    data.write_text("\n".join("".join(f"{i + 1}\t{w}\t_\t_\t_\t_\t{h}\t_\t_\t_\n" for i, (w, h) in
                                        enumerate(zip(words, heads, strict=True)))
                              for words, heads in zip(sentences, gold, strict=True)), encoding="utf-8")
    result = evaluate_parse([data], tiny_mlm[1])
    accepted = [s for s in sentences if len("".join(s)) <= 40]  # the 50-character sentence is over the limit
    assert result["n"] == len(accepted) == 4
    assert result["uas"] == result["baselines"]["right_chain"] == pytest.approx(3 / 11)  # RIGHT_CHAIN_RULE
    assert result["held_out"]["n"] == sum(not fitting_half("".join(s)) for s in accepted)
