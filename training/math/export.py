"""A trained math run -> models/<name>/1/{encoder,step}.onnx + vocab.txt + model.json, then the served model is
measured on our Ape210K dev and test shares and the figures recorded in model.json.

encoder.onnx and step.onnx decode with a key/value cache (training/math/cache.py): the question is
encoded once, then each beam step runs one token against the cached keys and values.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from app.text import CharVocab
from training.common.export import write_model_json
from training.common.paths import shown
from training.common.plots import plot_curve
from training.math.cache import CachedEncoder, CachedStep
from training.math.model import hidden_states

log = logging.getLogger(__name__)


def load_run(run: Path, checkpoint: str = "best.pt"):
    """(BertForMaskedLM, CharVocab, training state) of a `zhserve train math` run."""
    from transformers import BertConfig, BertForMaskedLM

    state = torch.load(run / checkpoint, map_location="cpu", weights_only=False)
    model = BertForMaskedLM(BertConfig.from_dict(state["bert_config"]))
    model.load_state_dict(state["model"])
    return model.eval(), CharVocab.load(run / "vocab.txt"), state


def export_graphs(model, vocab: CharVocab, out: Path) -> float:
    """Write encoder.onnx and step.onnx; returns the largest |cached onnxruntime - full PyTorch| difference
    of the log-probabilities along a whole expression (teacher-forced), two rows of different lengths."""
    if vocab.pad_id != 0:
        raise ValueError("the batcher pads with 0, so [PAD] must be token 0")
    c = model.config
    layers, heads, d = c.num_hidden_layers, c.num_attention_heads, c.hidden_size // c.num_attention_heads
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=2, max=c.max_position_embeddings)
    gen = torch.Generator().manual_seed(0)
    question = torch.randint(5, len(vocab), (2, 12), generator=gen)
    question[1, 9:] = vocab.pad_id
    torch.onnx.export(CachedEncoder(model, vocab.pad_id), (question,), out / "encoder.onnx", dynamo=True,
                      external_data=False, input_names=["token_ids"], output_names=["log_probs", "keys", "values"],
                      dynamic_shapes={"token_ids": {0: batch, 1: seq}}, verbose=False)
    past = torch.randn(2, layers, heads, 12, d, generator=gen)
    step_args = (torch.tensor([7, 8]), torch.tensor([12, 9]), past, past.clone(), torch.ones(2, 12, dtype=torch.bool))
    past_shape = {0: batch, 3: seq}
    torch.onnx.export(CachedStep(model), step_args, out / "step.onnx", dynamo=True, external_data=False,
                      input_names=["token", "position", "past_keys", "past_values", "past_mask"],
                      output_names=["log_probs", "key", "value"],
                      dynamic_shapes={"token": {0: batch}, "position": {0: batch}, "past_keys": past_shape,
                                      "past_values": past_shape, "past_mask": {0: batch, 1: seq}}, verbose=False)
    return cached_parity(model, vocab, out, question, torch.randint(5, len(vocab), (2, 6), generator=gen))


def cached_parity(model, vocab: CharVocab, out: Path, question: torch.Tensor, target: torch.Tensor) -> float:
    """Decode `target` token by token through the ONNX graphs (cache kept as the server keeps it, padded
    as the batcher pads it) and compare every step with the full model run over the whole sequence."""
    import onnxruntime as ort

    enc = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    step = ort.InferenceSession(str(out / "step.onnx"), providers=["CPUExecutionProvider"])
    lengths = (question != vocab.pad_id).sum(1).tolist()
    log_probs, keys, values = enc.run(None, {"token_ids": question.numpy()})
    got = [log_probs]
    mask = (question != vocab.pad_id).numpy()
    for t in range(target.shape[1] - 1):
        log_probs, key, value = step.run(None, {
            "token": target[:, t].numpy(), "position": np.array([n + t for n in lengths], dtype=np.int64),
            "past_keys": keys, "past_values": values, "past_mask": mask})
        got.append(log_probs)
        keys = np.concatenate([keys, key[:, :, :, None]], axis=3)  # padding stays inside: masked out
        values = np.concatenate([values, value[:, :, :, None]], axis=3)
        mask = np.concatenate([mask, np.ones((len(lengths), 1), dtype=bool)], axis=1)
    worst = 0.0
    for b, n in enumerate(lengths):
        ids = torch.cat([question[b, :n], target[b]])[None]
        types = torch.tensor([[0] * n + [1] * target.shape[1]])
        with torch.no_grad():
            full = torch.log_softmax(model.cls(hidden_states(model, ids, types, vocab.pad_id)), -1)[0]
        for t, step_log_probs in enumerate(got):
            worst = max(worst, float(np.abs(step_log_probs[b] - full[n - 1 + t].numpy()).max()))
    return worst


def write_model(model, vocab: CharVocab, models: Path, name: str, quality: dict, training: dict,
                max_source: int, max_target: int, pieces: Path | None = None) -> Path:
    """`pieces`: a pretrained encoder's tokenizer.json, shipped beside the math vocabulary (the question's text
    is then read in word pieces)."""
    model_dir = models / name
    out = model_dir / "1"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    parity = export_graphs(model, vocab, out)
    vocab.save(out / "vocab.txt")
    if pieces is not None:
        shutil.copyfile(pieces, out / "tokenizer.json")
    c = model.config
    layers, heads, d = c.num_hidden_layers, c.num_attention_heads, c.hidden_size // c.num_attention_heads
    cache = ["batch", layers, heads, "seq", d]
    log_probs = {"dtype": "float32", "shape": ["batch", len(vocab)]}
    config = {
        "name": name,
        "task": "math",
        "description": "UniLM seq2seq on the project's BERT: a math word problem -> an expression, beam search "
                       "with a key/value cache",
        "vocab": "vocab.txt",
        **({"pieces": "tokenizer.json"} if pieces is not None else {}),
        "limits": {"max_question_tokens": max_source - 2, "max_beam_size": 10},
        "decoding": {"beam_size": 4, "max_expression_tokens": max_target - 1},
        "architecture": {"layers": layers, "hidden": c.hidden_size, "heads": heads, "vocab_size": len(vocab),
                         "max_position_embeddings": c.max_position_embeddings},
        "stages": {
            "encoder": {
                "file": "encoder.onnx", "max_length": c.max_position_embeddings,
                "inputs": {"token_ids": {"dtype": "int64", "shape": ["batch", "seq"], "bound": len(vocab)}},
                "outputs": {"log_probs": log_probs, "keys": {"dtype": "float32", "shape": cache},
                            "values": {"dtype": "float32", "shape": cache}},
                "batching": {"max_batch_size": 64, "max_batch_tokens": 4096, "max_queue_delay_ms": 2.0}},
            "step": {
                "file": "step.onnx", "max_length": c.max_position_embeddings - 1,  # the cache before the new token
                "inputs": {"token": {"dtype": "int64", "shape": ["batch"], "bound": len(vocab)},
                           "position": {"dtype": "int64", "shape": ["batch"], "bound": c.max_position_embeddings},
                           "past_keys": {"dtype": "float32", "shape": cache},
                           "past_values": {"dtype": "float32", "shape": cache},
                           "past_mask": {"dtype": "bool", "shape": ["batch", "seq"]}},
                "outputs": {"log_probs": log_probs, "key": {"dtype": "float32", "shape": ["batch", layers, heads, d]},
                            "value": {"dtype": "float32", "shape": ["batch", layers, heads, d]}},
                # a step row is one token: every live beam of every request fits one batch
                "batching": {"max_batch_size": 512, "max_batch_tokens": 65536, "max_queue_delay_ms": 1.0}}},
        "quality": {**quality, "onnx_parity_max_abs_diff": parity},
        "training": training,
    }
    write_model_json(model_dir, config)
    return model_dir


def plot_history(history: list[dict], path: Path) -> None:
    """Training loss and greedy dev accuracy against steps."""
    plot_curve(path, [h["step"] for h in history], [h["train_loss"] for h in history],
               [h["dev_accuracy"] for h in history], "step", "training loss (expression tokens)",
               "greedy accuracy, Ape210K dev sample", "math solver: UniLM fine-tuning of the project's BERT")


def export(run: Path, models: Path, name: str, eval_data: Path, eval_limit: int, command: str) -> Path:
    """Export the run's best checkpoint, then measure the served model on both Ape210K shares."""
    model, vocab, state = load_run(run)
    cfg = state["config"]
    best = max(state["history"], key=lambda h: h["dev_accuracy"]) if state["history"] else {}
    init = "the project's BERT (models/mlm's run)" if cfg["init"] else "from scratch"
    if cfg.get("encoder"):
        init = f"the pretrained encoder {shown(cfg['encoder'])} (word pieces)"
    if cfg.get("warm_start"):
        init = f"the math checkpoint {shown(cfg['warm_start'])}, which started from {init}"
    data = f"{shown(cfg['data'])}"
    if cfg.get("ape_copies"):
        data += f" + {cfg['ape_copies']} copies of our Ape210K train share (training/common/splits.py ape_split)"
    training = {"command": command, "init": init,
                "data": f"{data} (all problems whose equation evaluates to the given answer)",
                "recipe": {k: shown(v) if k == "encoder" and v else v
                           for k, v in cfg.items() if k not in ("out", "data")},
                "steps": state["step"], "minutes": round(state["elapsed"] / 60, 1), "checkpoint": best}
    pieces = run / "tokenizer.json" if cfg.get("encoder") else None
    model_dir = write_model(model, vocab, models, name, {}, training, cfg["max_source"], cfg["max_target"], pieces)
    history_file = run / "history.json"  # the whole run; the checkpoint's own history stops at its step
    history = json.loads(history_file.read_text()) if history_file.exists() else state["history"]
    if history:
        plot_history(history, model_dir / "training_curve.png")
    measure_shares(models, name, eval_data, eval_limit)
    return model_dir


def measure_shares(models: Path, name: str, eval_data: Path, eval_limit: int = 0) -> None:
    """The served model's accuracy on our Ape210K dev and test shares, recorded in its model.json."""
    from training.math.evaluate import evaluate_served

    path = models / name / "model.json"
    config = json.loads(path.read_text())
    for split in ("dev", "test"):
        figures = evaluate_served([eval_data], models, eval_limit, split)
        config["quality"][f"ape210k_{split}"] = {
            **figures, "data": f"{shown(eval_data)}, our {split} share (training/common/splits.py ape_split)",
            "command": f"zhserve eval math --data {shown(eval_data)} --split {split}"
                       + (f" --limit {eval_limit}" if eval_limit else "")}
    write_model_json(path.parent, config)
