"""A trained math run -> models/<name>/1/decoder.onnx + vocab.txt + model.json, then the served model is
measured on our Ape210K dev and test shares and the figures recorded in model.json.

decoder.onnx: token_ids, type_ids (B, T) int64 -> log_probs (B, V): the next-token distribution after
each row's last real token. No key/value cache: every beam step recomputes its row (bench/math.py
measures what that costs against the step's share of a whole request).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.text import CharVocab
from training.math.model import hidden_states
from training.paths import shown

log = logging.getLogger(__name__)


class NextToken(nn.Module):
    def __init__(self, model, pad_id: int):
        super().__init__()
        self.model, self.pad_id = model.eval(), pad_id

    def forward(self, token_ids: torch.Tensor, type_ids: torch.Tensor) -> torch.Tensor:
        hidden = hidden_states(self.model, token_ids, type_ids, self.pad_id)
        last = (token_ids != self.pad_id).sum(1) - 1
        picked = hidden[torch.arange(token_ids.shape[0]), last]
        return torch.log_softmax(self.model.cls(picked), dim=-1)


def load_run(run: Path, checkpoint: str = "best.pt"):
    """(BertForMaskedLM, CharVocab, training state) of a `zhserve train math` run."""
    from transformers import BertConfig, BertForMaskedLM

    state = torch.load(run / checkpoint, map_location="cpu", weights_only=False)
    model = BertForMaskedLM(BertConfig.from_dict(state["bert_config"]))
    model.load_state_dict(state["model"])
    return model.eval(), CharVocab.load(run / "vocab.txt"), state


def export_decoder(model, vocab: CharVocab, path: Path) -> float:
    """Write the ONNX graph; returns the largest |onnxruntime - PyTorch| log-probability on a padded batch."""
    import onnxruntime as ort

    if vocab.pad_id != 0:
        raise ValueError("the batcher pads with 0, so [PAD] must be token 0")
    net = NextToken(model, vocab.pad_id).eval()
    limit = model.config.max_position_embeddings
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=2, max=limit)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, len(vocab), (3, 19), generator=gen)
    types = torch.zeros_like(ids)
    types[:, 12:] = 1
    ids[1, 15:] = vocab.pad_id
    types[1, 15:] = 0
    torch.onnx.export(net, (ids, types), path, dynamo=True, external_data=False,
                      input_names=["token_ids", "type_ids"], output_names=["log_probs"],
                      dynamic_shapes={"token_ids": {0: batch, 1: seq}, "type_ids": {0: batch, 1: seq}}, verbose=False)
    with torch.no_grad():
        expected = net(ids, types).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"token_ids": ids.numpy(), "type_ids": types.numpy()})
    return float(np.abs(got - expected).max())


def write_model(model, vocab: CharVocab, models: Path, name: str, quality: dict, training: dict,
                max_source: int, max_target: int) -> Path:
    model_dir = models / name
    out = model_dir / "1"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    parity = export_decoder(model, vocab, out / "decoder.onnx")
    vocab.save(out / "vocab.txt")
    c = model.config
    config = {
        "name": name,
        "task": "math",
        "description": "UniLM seq2seq on the project's BERT: a math word problem -> an expression, beam search",
        "vocab": "vocab.txt",
        "max_question_tokens": max_source - 2,
        "max_expression_tokens": max_target - 1,
        "beam_size": 4,
        "max_beam_size": 10,
        "architecture": {"layers": c.num_hidden_layers, "hidden": c.hidden_size, "heads": c.num_attention_heads,
                         "vocab_size": len(vocab), "max_position_embeddings": c.max_position_embeddings},
        # rows are a question plus an expression prefix (~40-150 tokens): 16 clients x 4 beams fit one batch
        "batching": {"max_batch_size": 256, "max_batch_tokens": 12288, "max_queue_delay_ms": 2.0},
        "stages": {"decoder": {
            "file": "decoder.onnx",
            "inputs": {"token_ids": {"dtype": "int64", "shape": ["batch", "seq"]},
                       "type_ids": {"dtype": "int64", "shape": ["batch", "seq"]}},
            "outputs": {"log_probs": {"dtype": "float32", "shape": ["batch", len(vocab)]}}}},
        "quality": {**quality, "onnx_parity_max_abs_diff": parity},
        "training": training,
    }
    (model_dir / "model.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s (parity %.1e)", model_dir, parity)
    return model_dir


def plot_history(history: list[dict], path: Path) -> None:
    """Training loss and greedy dev accuracy against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, loss_ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    loss_ax.plot(steps, [h["train_loss"] for h in history], color="tab:blue")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("training loss (expression tokens)", color="tab:blue")
    acc_ax = loss_ax.twinx()
    acc_ax.plot(steps, [h["dev_accuracy"] for h in history], color="tab:red")
    acc_ax.set_ylabel("greedy accuracy, Ape210K dev sample", color="tab:red")
    fig.suptitle("math solver: UniLM fine-tuning of the project's BERT")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def export(run: Path, models: Path, name: str, eval_data: Path, eval_limit: int, command: str) -> Path:
    """Export the run's best checkpoint, then measure the served model on both Ape210K shares."""
    from training.math.evaluate import evaluate_served

    model, vocab, state = load_run(run)
    cfg = state["config"]
    best = max(state["history"], key=lambda h: h["dev_accuracy"]) if state["history"] else {}
    training = {"command": command, "init": "the project's BERT (models/mlm's run)" if cfg["init"] else "from scratch",
                "data": f"{shown(cfg['data'])} (all problems whose equation evaluates to the given answer)",
                "recipe": {k: v for k, v in cfg.items() if k not in ("out", "data")},
                "steps": state["step"], "minutes": round(state["elapsed"] / 60, 1), "checkpoint": best}
    model_dir = write_model(model, vocab, models, name, {}, training, cfg["max_source"], cfg["max_target"])
    if state["history"]:
        plot_history(state["history"], model_dir / "training_curve.png")
    config = json.loads((model_dir / "model.json").read_text())
    for split in ("dev", "test"):
        figures = evaluate_served([eval_data], models, eval_limit, split)
        config["quality"][f"ape210k_{split}"] = {
            **figures, "data": f"{shown(eval_data)}, our {split} share (training/math/data.py ape_split)",
            "command": f"zhserve eval math --data {shown(eval_data)} --split {split}"
                       + (f" --limit {eval_limit}" if eval_limit else "")}
    (model_dir / "model.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return model_dir
