"""Best checkpoint -> tuned thresholds, test-split quality, two ONNX stages, model.json.

Stage 1 (subject.onnx): token_ids (B, T) -> subject_probs (B, T, 2), hidden (B, T, H).
Stage 2 (object.onnx):  hidden (B, T, H), mask (B, T), subject (B, 2) -> object_probs (B, T, C, 2).
The same stages for the DGCNN (tokens are characters, vocab.txt) and for a pretrained encoder (`--encoder`:
tokens are word pieces, tokenizer.json); model.json's `tokenizer` tells serving which.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from app.tasks.extract.schema import Schema
from app.text.tokenization import Tokenization, load_tokenization
from training.common.encoder import TOKENIZER_FILE
from training.common.export import fold_pretrained, write_model_json
from training.common.paths import portable_recipe, short
from training.common.plots import plot_curve
from training.common.splits import extract_split
from training.extract.bert_model import BertExtractor, BertExtractorConfig
from training.extract.data import load_examples
from training.extract.evaluate import evaluate_torch, fitted_encoding, tune_thresholds
from training.extract.gradient import export_gradient_stage
from training.extract.model import DGCNNConfig, DGCNNExtractor, ObjectStage, SubjectStage

log = logging.getLogger(__name__)

MAX_LENGTH = 512  # characters per text; the position table's size
MAX_TEXTS = 64  # texts per /extract request


def load_net(checkpoint: Path) -> DGCNNExtractor | BertExtractor:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if "encoder" in ckpt["config"]:  # fine-tuned from --encoder: the config rebuilds the encoder
        net = BertExtractor(BertExtractorConfig(**ckpt["config"]))
    else:
        net = DGCNNExtractor(DGCNNConfig(**ckpt["config"]))
    state = ckpt["state_dict"] if "state_dict" in ckpt else ckpt["ema"]  # "ema": checkpoints before 0.1
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval()


def load_served_net(version: Path) -> DGCNNExtractor:
    """The PyTorch net holding the weights of a served version's two ONNX stages (for eager-PyTorch baselines
    and gradient checks; the model folder keeps no training checkpoint). Named initializers carry their
    parameter names; the linear layers' matrices are stored transposed and unnamed, one shape each per stage."""
    import onnx
    from onnx import numpy_helper

    config = json.loads((version.parent / "model.json").read_text(encoding="utf-8"))
    net = DGCNNExtractor(DGCNNConfig(**config["architecture"]))
    state = net.state_dict()
    found: dict[str, torch.Tensor] = {}
    for stage, prefix in (("subject", "subject_"), ("object", "object_")):
        graph = onnx.load(str(version / config["stages"][stage]["file"])).graph
        unnamed = {}
        for init in graph.initializer:
            value = torch.from_numpy(numpy_helper.to_array(init).copy())
            if init.name.startswith("net."):
                found[init.name[4:]] = value
            elif value.dim() == 2:
                unnamed[tuple(value.T.shape)] = value.T
        for name in (f"{prefix}attention.qkv.weight", f"{prefix}attention.out.weight", f"{prefix}head.weight"):
            found[name] = unnamed[tuple(state[name].shape)]
    net.load_state_dict(found)
    return net.eval()


def save_checkpoint(net: DGCNNExtractor, path: Path) -> None:
    """The EMA weights in fp16 (half the size) for fine-tuning, gradient export and the PyTorch baseline."""
    torch.save({"config": net.config.to_dict(), "state_dict": {k: v.half() for k, v in net.state_dict().items()}},
               path)


def stage_specs(hidden: int, num_labels: int, vocab_size: int, max_len: int) -> dict:
    """The stages' tensors for model.json; `max_length` is the longest row a stage takes (its position table)."""
    f32, i64 = "float32", "int64"
    return {
        "subject": {"file": "subject.onnx", "max_length": max_len,
                    "inputs": {"token_ids": {"dtype": i64, "shape": ["batch", "seq"], "bound": vocab_size}},
                    "outputs": {"subject_probs": {"dtype": f32, "shape": ["batch", "seq", 2]},
                                "hidden": {"dtype": f32, "shape": ["batch", "seq", hidden]}}},
        "object": {"file": "object.onnx", "max_length": max_len,
                   "inputs": {"hidden": {"dtype": f32, "shape": ["batch", "seq", hidden]},
                              "mask": {"dtype": f32, "shape": ["batch", "seq"]},
                              "subject": {"dtype": i64, "shape": ["batch", 2]}},
                   "outputs": {"object_probs": {"dtype": f32, "shape": ["batch", "seq", num_labels, 2]}}},
    }


def run_tokenization(run: Path) -> tuple[str, Path, Tokenization]:
    """(model.json `tokenizer`, the file, its tokenisation) of a training run: word pieces when the run was
    fine-tuned from --encoder (it saved the encoder's tokenizer.json), else characters."""
    if (run / TOKENIZER_FILE).exists():
        return "wordpiece", run / TOKENIZER_FILE, load_tokenization("wordpiece", run / TOKENIZER_FILE)
    return "chars", run / "vocab.txt", load_tokenization("chars", run / "vocab.txt")


def export_onnx(net: DGCNNExtractor | BertExtractor, out_dir: Path) -> None:
    """Both stages with dynamic batch and sequence axes, as single files."""
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=2, max=net.config.max_len)
    ids = torch.randint(5, net.config.vocab_size, (3, 17))
    torch.onnx.export(SubjectStage(net).eval(), (ids,), out_dir / "subject.onnx", dynamo=True, external_data=False,
                      input_names=["token_ids"], output_names=["subject_probs", "hidden"],
                      dynamic_shapes={"token_ids": {0: batch, 1: seq}}, verbose=False)
    with torch.no_grad():
        hidden, mask = net.encode(ids)
    subject = torch.tensor([[1, 3], [0, 0], [5, 9]])
    torch.onnx.export(ObjectStage(net).eval(), (hidden, mask, subject), out_dir / "object.onnx", dynamo=True,
                      external_data=False, input_names=["hidden", "mask", "subject"], output_names=["object_probs"],
                      dynamic_shapes={"hidden": {0: batch, 1: seq}, "mask": {0: batch, 1: seq}, "subject": {0: batch}},
                      verbose=False)


def parity(net: DGCNNExtractor | BertExtractor, out_dir: Path, tokens: Tokenization, texts: list[str]) -> float:
    """Largest absolute difference between onnxruntime and PyTorch on padded real texts (over real tokens: what
    padding positions hold is never read)."""
    import onnxruntime as ort

    encodings = [fitted_encoding(tokens, t, getattr(net, "max_tokens", None)) for t in texts]
    ids = np.zeros((len(texts), max(len(e) for e in encodings)), np.int64)
    for i, e in enumerate(encodings):
        ids[i, : len(e)] = e.ids
    subject = np.array([[0, 1]] * len(texts), np.int64)
    with torch.no_grad():
        hidden, mask = net.encode(torch.from_numpy(ids))
        ref_s = torch.sigmoid(net.subject_logits(hidden, mask)).numpy()
        ref_o = torch.sigmoid(net.object_logits(hidden, mask, torch.from_numpy(subject))).numpy()
    s1 = ort.InferenceSession(str(out_dir / "subject.onnx"), providers=["CPUExecutionProvider"])
    s2 = ort.InferenceSession(str(out_dir / "object.onnx"), providers=["CPUExecutionProvider"])
    probs, h = s1.run(None, {"token_ids": ids})
    (o,) = s2.run(None, {"hidden": h, "mask": (ids > 0).astype(np.float32), "subject": subject})
    real = ids > 0
    return float(max(np.abs(probs - ref_s)[real].max(), np.abs(h - hidden.numpy())[real].max(),
                     np.abs(o - ref_o)[real].max()))


def plot_history(history: list[dict], path: Path) -> None:
    """Training loss and dev F1 per epoch, for people who would rather look than read."""
    plot_curve(path, [h["epoch"] for h in history], [h["loss"] for h in history],
               [h.get("f1", float("nan")) for h in history], "epoch", "training loss",
               "dev F1 (better of EMA and raw weights)", "DGCNN extractor: training loss and dev F1", (0, 1))


def export(run: Path, models: Path, name: str, data: list[Path], command: str = "") -> Path:
    kind, vocab_file, tokens = run_tokenization(run)
    schema = Schema.load(run / "schema.jsonl")
    net = fold_pretrained(load_net(run / "best.pt"))
    examples = load_examples(data, schema)
    dev = [e for e in examples if extract_split(e.text) == "dev"]
    test = [e for e in examples if extract_split(e.text) == "test"]

    thresholds, dev_scores = tune_thresholds(net, tokens, schema, dev)
    log.info("thresholds %s: dev %s", thresholds, dev_scores)
    test_scores = evaluate_torch(net, tokens, schema, test, thresholds)
    log.info("test %s", test_scores)

    model_dir = models / name
    out_dir = model_dir / "1"  # one version in the repo: a retrain replaces it rather than piling up copies
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(net, out_dir)
    save_checkpoint(net, run / "checkpoint.pt")  # a training file: it stays in the run folder
    c = net.config
    stages = stage_specs(c.hidden, c.num_labels, c.vocab_size, c.max_len)
    # The gradient graph comes from the saved fp16 weights, which is what a later re-export would see.
    stages["gradient"] = export_gradient_stage(load_net(run / "checkpoint.pt"), out_dir)
    shutil.copy(vocab_file, out_dir / vocab_file.name)
    shutil.copy(run / "schema.jsonl", out_dir / "schema.jsonl")
    max_diff = parity(net, out_dir, tokens, [e.text for e in test[:16]])
    log.info("onnx parity: max abs diff %.2e", max_diff)

    history = json.loads((run / "history.json").read_text()) if (run / "history.json").exists() else []
    recipe = json.loads((run / "train_config.json").read_text()) if (run / "train_config.json").exists() else {}
    recipe = portable_recipe(recipe, ("data", "schema", "out", "embeddings"))
    if history:
        plot_history(history, model_dir / "training_curve.png")
    recipe = portable_recipe(recipe, ("encoder",)) if recipe.get("encoder") else recipe
    data_names = [short(p) for p in data]
    bert = isinstance(net, BertExtractor)
    config = {
        "name": name,
        "task": "extract",
        "description": (f"pretrained {c.encoder['model_type']} encoder ({short(c.source)}) + probabilistic-graph "
                        "relation extraction, subject-conditioned layer norm (DuIE 2.0 schema, compound objects)"
                        if bert else
                        "DGCNN + probabilistic-graph relation extraction (DuIE 2.0 schema, compound objects)"),
        "tokenizer": kind,
        "vocab": vocab_file.name,
        "schema": "schema.jsonl",
        # Characters: a word-piece text never has more tokens than characters + [CLS] + [SEP].
        "limits": {"max_length": c.max_len - 2 if bert else MAX_LENGTH, "max_texts": MAX_TEXTS},
        "architecture": {**c.to_dict(), "source": short(c.source)} if bert else c.to_dict(),
        "thresholds": asdict(thresholds),
        # A small token budget splits the queue into batches of similar length: on CPU, padding costs
        # more than small batches do (bench/extract.py: 0.53 of the ceiling at 16384 tokens, 0.81 at 512).
        # An encoder's rows are up to its position table long: the budget lets a few of them batch.
        "batching": {"max_batch_size": 64, "max_batch_tokens": 4 * c.max_len if bert else 512,
                     "max_queue_delay_ms": 2.0},
        "stages": stages,
        "explain": {"embeddings": "embeddings.npy", "steps": 50, "max_steps": 200},
        "quality": {
            "split": "test: 12% of the DuIE 2.0 train subsets by md5(text) (training/common/splits.py extract_split)",
            "n": len(test), **test_scores,
            "dev": {"n": len(dev), **dev_scores},
            "metric": "micro P/R/F1 over exact (subject, predicate, full object) triples",
            "command": f"zhserve eval extract --data {' '.join(data_names)} --split test",
            "onnx_parity_max_abs_diff": max_diff,
        },
        "training": {
            "data": data_names,
            "split": "train: 80% by md5(text); dev: 8% (checkpoints, thresholds); test: 12% (reported)",
            "command": command,
            "recipe": recipe,
            "epochs_run": len(history),
            "best_dev_f1_during_training": max((h.get("f1", 0) for h in history), default=None),
            **({"encoder": f"{short(c.source)}, fine-tuned whole (zhserve train extract --encoder)"} if bert else
               {"embeddings": "word2vec skip-gram character vectors trained on ../shared/data/corpus "
                              "(zhserve train embeddings)"}),
        },
    }
    write_model_json(model_dir, config)
    return model_dir
