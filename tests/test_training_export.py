"""A tiny training run, ONNX export, and parity of onnxruntime with PyTorch."""

import json

import numpy as np
import torch

from app.text import CharVocab
from training.extract.export import load_net
from training.extract.model import DGCNNConfig, DGCNNExtractor


def test_tiny_training_run_writes_a_checkpoint_and_learns(tiny_run):
    history = json.loads((tiny_run / "history.json").read_text())
    assert len(history) == 2 and history[1]["loss"] < history[0]["loss"]
    assert (tiny_run / "best.pt").exists() and (tiny_run / "vocab.txt").exists()


def test_export_writes_a_loadable_repository_with_parity(tiny_models):
    config = json.loads((tiny_models / "extract" / "model.json").read_text())
    assert config["task"] == "extract"
    assert config["quality"]["onnx_parity_max_abs_diff"] < 1e-4
    for name in ("subject.onnx", "object.onnx", "vocab.txt", "schema.jsonl"):
        assert (tiny_models / "extract" / "1" / name).exists()


def test_onnx_matches_pytorch_on_other_shapes(tiny_run, tiny_models):
    import onnxruntime as ort

    net = load_net(tiny_run / "best.pt")
    vocab = CharVocab.load(tiny_run / "vocab.txt")
    texts = ["《邪少兵王》是冰火未央写的网络小说", "周杰伦", "古往今来，能饰演古龙小说人物楚留香的"]
    ids = np.zeros((3, max(map(len, texts))), np.int64)
    for i, t in enumerate(texts):
        ids[i, : len(t)] = vocab.encode(t)
    version = tiny_models / "extract" / "1"
    probs, hidden = ort.InferenceSession(str(version / "subject.onnx")).run(None, {"token_ids": ids})
    subject = np.array([[0, 4], [1, 2], [9, 11]], np.int64)
    (objects,) = ort.InferenceSession(str(version / "object.onnx")).run(
        None, {"hidden": hidden, "mask": (ids > 0).astype(np.float32), "subject": subject})
    with torch.no_grad():
        h, mask = net.encode(torch.from_numpy(ids))
        ref_probs = torch.sigmoid(net.subject_logits(h, mask)).numpy()
        ref_objects = torch.sigmoid(net.object_logits(h, mask, torch.from_numpy(subject))).numpy()
    assert np.abs(probs - ref_probs).max() < 1e-4
    assert np.abs(objects - ref_objects).max() < 1e-4


def test_model_shapes():
    net = DGCNNExtractor(DGCNNConfig(vocab_size=50, num_labels=7, hidden=16, heads=4)).eval()
    ids = torch.randint(1, 50, (2, 11))
    s, o = net(ids, torch.tensor([[0, 1], [3, 5]]))
    assert s.shape == (2, 11, 2) and o.shape == (2, 11, 7, 2)


def test_folding_the_pretrained_table_keeps_the_outputs():
    from training.common.export import fold_pretrained

    net = DGCNNExtractor(DGCNNConfig(vocab_size=30, num_labels=5, hidden=16, heads=4, pretrained_dim=8)).eval()
    torch.nn.init.normal_(net.pretrained.weight)
    torch.nn.init.normal_(net.pretrained_proj.weight)
    folded = fold_pretrained(net)
    assert folded.config.pretrained_dim == 0 and not hasattr(folded, "pretrained")
    ids, subject = torch.randint(1, 30, (2, 7)), torch.tensor([[0, 1], [2, 3]])
    with torch.no_grad():
        for a, b in zip(net(ids, subject), folded(ids, subject), strict=True):
            assert (a - b).abs().max() < 1e-5


def test_padding_does_not_change_a_texts_scores():
    """Rows are batched with longer ones: a text's scores must not depend on the padding it gets."""
    torch.manual_seed(0)
    net = DGCNNExtractor(DGCNNConfig(vocab_size=50, num_labels=7, hidden=16, heads=4)).eval()
    for p in net.parameters():  # make every part of the net matter, attention output included
        torch.nn.init.normal_(p, std=0.1)
    ids = torch.randint(5, 50, (1, 9))
    padded = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    subject = torch.tensor([[2, 8]])
    with torch.no_grad():
        s1, o1 = net(ids, subject)
        s2, o2 = net(padded, subject)
    assert (s1 - s2[:, :9]).abs().max() < 1e-5
    assert (o1 - o2[:, :9]).abs().max() < 1e-5


def test_entity_swaps_keep_every_triple_placed_and_leave_tied_pairs_alone():
    import random

    from app.tasks.extract.schema import Schema
    from training.extract.data import Example, attach_spans, entity_pools, swap_entities

    schema = Schema.from_records([
        {"predicate": "作者", "subject_type": "图书作品", "object_type": {"@value": "人物"}},
        {"predicate": "简称", "subject_type": "机构", "object_type": {"@value": "Text"}},
    ])
    pool_source = [Example("《长河》的作者是李四", [("长河", "作者", {"@value": "李四"})]),
                   Example("《远山》是王五写的", [("远山", "作者", {"@value": "王五"})])]
    pools = entity_pools(pool_source, schema)
    assert pools == {"作者/subject": ["远山", "长河"], "作者/@value": ["李四", "王五"]}  # no 简称 pool
    original = Example("《星河》由张三创作，张三还写过别的书；北京大学简称北大",
                       [("星河", "作者", {"@value": "张三"}), ("北京大学", "简称", {"@value": "北大"})])
    attach_spans(original, schema)
    rng, changed = random.Random(0), 0
    for _ in range(30):
        swapped = swap_entities(original, pools, schema, rng)
        if swapped is original:
            continue
        changed += 1
        assert swapped.text.count("张三") in (0, 2)  # a name is replaced everywhere or nowhere
        assert "北京大学简称北大" in swapped.text and swapped.triples[1] == original.triples[1]
        subject, _, obj = swapped.triples[0]
        assert subject in ("星河", "长河", "远山") and obj["@value"] in ("张三", "李四", "王五")
        assert len(swapped.spans) == 2  # every triple found again in the new text
        for (start, end), objects in swapped.spans.items():
            assert swapped.text[start:end + 1] in (subject, "北京大学")
            assert all(swapped.text[s:e + 1] in (obj["@value"], "北大") for _, (s, e) in objects)
    assert changed > 10


def test_extra_training_files_never_add_a_held_out_sentence(tmp_path):
    from app.tasks.extract.schema import Schema
    from training.common.splits import extract_split
    from training.extract.data import load_examples
    from training.extract.train import TrainConfig, extra_examples, train

    rows = [{"text": f"《书{i}》的作者是人{i}号", "spo_list": [
        {"predicate": "作者", "subject": f"书{i}", "object": f"人{i}号",
         "subject_type": "图书作品", "object_type": "人物"}]} for i in range(60)]
    held_out = [r for r in rows if extract_split(r["text"]) != "train"]
    main, extra = tmp_path / "main.json", tmp_path / "extra.json"
    main.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    extra.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in held_out[:3] + rows[:1]), encoding="utf-8")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"predicate": "作者", "subject_type": "图书作品", "object_type": "人物"},
                                 ensure_ascii=False), encoding="utf-8")
    main_examples = load_examples([main], Schema.load(schema))
    kept = extra_examples([extra], main_examples, Schema.load(schema))
    assert held_out and [e.text for e in kept] == [r["text"] for r in rows[:1] if extract_split(r["text"]) == "train"]
    out = tmp_path / "run"
    train(TrainConfig(data=[str(main)], schema=str(schema), out=str(out), extra_train=[str(extra)], hidden=16,
                      epochs=1, batch_size=8, augment=0.5, threads=1))
    history = json.loads((out / "history.json").read_text())
    assert history[0]["epoch"] == 1
    assert json.loads((out / "train_config.json").read_text())["extra_train"] == [str(extra)]
