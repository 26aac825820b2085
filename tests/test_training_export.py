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
    from training.extract.export import fold_pretrained

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
