"""Masked-LM pretraining of the project's small BERT (transformers BertForMaskedLM), resumable.

Random windows of the id stream, 15% of positions masked (80% [MASK], 10% random, 10% kept); only the
masked positions go through the output layer. The learning rate warms up, then decays linearly to zero
by whichever comes first of `steps` and `max_minutes`, so a time-boxed CPU run still ends annealed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from app.text import CharVocab
from training.common.bert import bert_config
from training.common.device import device_of, pick_device, to_device
from training.common.paths import RUNS
from training.common.schedule import adamw, warmup_linear

log = logging.getLogger(__name__)


@dataclass
class MLMConfig:
    out: str = str(RUNS / "mlm")
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 1024
    seq_len: int = 128  # maximum sequence length (position embeddings), [CLS] and [SEP] included
    short_seq_len: int = 64  # windows this long for the first `short_fraction` of training (cheaper steps)
    short_fraction: float = 0.8
    batch_size: int = 128
    steps: int = 100_000
    max_minutes: float = 0.0  # 0: no time limit
    lr: float = 1e-3
    warmup: float = 0.03
    weight_decay: float = 0.01
    mask_prob: float = 0.15
    max_chars: int = 60_000_000  # corpus characters to use
    vocab_size: int = 9000
    eval_every: int = 200
    seed: int = 1
    threads: int = 0
    device: str = "auto"  # auto (CUDA when present), cpu, cuda or cuda:N (training/common/device.py)


RECIPES = {
    # 2 CPU cores, about 85 minutes: the shipped model.
    "cpu": {"max_minutes": 85.0, "threads": 2},
    # One GPU: BERT-small width and depth, longer windows, more steps.
    "gpu": {"hidden": 512, "layers": 8, "heads": 8, "intermediate": 2048, "batch_size": 256, "steps": 60_000,
            "lr": 5e-4, "short_fraction": 0.7},
}


def windows(stream: np.ndarray, starts: np.ndarray, length: int, vocab: CharVocab) -> torch.Tensor:
    """[CLS] + stream[s : s + length - 2] + [SEP] for every start s."""
    body = stream[starts[:, None] + np.arange(length - 2)[None, :]].astype(np.int64)
    cls = np.full((len(starts), 1), vocab.cls_id)
    sep = np.full((len(starts), 1), vocab.sep_id)
    return torch.from_numpy(np.concatenate([cls, body, sep], axis=1))


def mask_tokens(ids: torch.Tensor, vocab: CharVocab, prob: float, gen: torch.Generator):
    """(inputs, positions, labels): BERT's 80/10/10 corruption of a `prob` share of the real characters."""
    special = torch.zeros_like(ids, dtype=torch.bool)
    for t in (vocab.pad_id, vocab.cls_id, vocab.sep_id):
        special |= ids == t
    chosen = (torch.rand(ids.shape, generator=gen) < prob) & ~special
    labels = ids[chosen]
    inputs = ids.clone()
    roll = torch.rand(ids.shape, generator=gen)
    inputs[chosen & (roll < 0.8)] = vocab.mask_id
    random_ids = torch.randint(5, len(vocab), ids.shape, generator=gen)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = random_ids[swap]
    return inputs, chosen, labels


def masked_loss(model, inputs, chosen, labels):
    hidden = model.bert(inputs).last_hidden_state
    logits = model.cls(hidden[chosen])  # the output layer only where it is needed
    return F.cross_entropy(logits, labels), logits


@torch.no_grad()
def heldout_accuracy(model, stream: np.ndarray, vocab: CharVocab, cfg: MLMConfig, n: int = 1024) -> dict:
    """Masked-token accuracy and loss on fixed windows of held-out lines (same seed every time)."""
    model.eval()
    gen = torch.Generator().manual_seed(1234)
    rng = np.random.default_rng(1234)
    starts = rng.integers(0, len(stream) - cfg.seq_len, n)
    correct = total = 0
    loss_sum = 0.0
    for b in range(0, n, 128):
        ids = windows(stream, starts[b:b + 128], cfg.seq_len, vocab)
        inputs, chosen, labels = mask_tokens(ids, vocab, cfg.mask_prob, gen)
        loss, logits = masked_loss(model, *to_device((inputs, chosen, labels), device_of(model)))
        correct += int((logits.argmax(-1).cpu() == labels).sum())
        total += len(labels)
        loss_sum += float(loss) * len(labels)
    model.train()
    return {"masked_accuracy": correct / total, "masked_loss": loss_sum / total, "masked_tokens": total}


def train(cfg: MLMConfig) -> Path:
    from transformers import BertForMaskedLM

    from training.mlm.data import build

    device = pick_device(cfg.device)
    out = Path(cfg.out)
    if not (out / "train.npy").exists():
        build(out, cfg.max_chars, cfg.vocab_size)
    vocab = CharVocab.load(out / "vocab.txt")
    train_stream, heldout_stream = np.load(out / "train.npy"), np.load(out / "heldout.npy")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = BertForMaskedLM(bert_config(vocab, **asdict(cfg))).to(device)  # before the optimizer
    opt = adamw(model, cfg.lr, cfg.weight_decay, betas=(0.9, 0.98))
    step, elapsed, history = 0, 0.0, []
    if (out / "last.pt").exists():
        state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
        log.info("resumed at step %d (%.1f min)", step, elapsed / 60)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    gen = torch.Generator().manual_seed(cfg.seed + step)
    rng = np.random.default_rng(cfg.seed + step)
    budget = cfg.max_minutes * 60 or float("inf")
    started = time.time() - elapsed
    bar = tqdm(total=cfg.steps, initial=step, desc="mlm", unit="step", mininterval=10)
    model.train()
    recent: list[float] = []

    def progress() -> float:
        return max(step / cfg.steps, (time.time() - started) / budget)

    def save():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "elapsed": time.time() - started, "history": history, "config": asdict(cfg)}, out / "last.pt.tmp")
        (out / "last.pt.tmp").replace(out / "last.pt")
        (out / "history.json").write_text(json.dumps(history, indent=1))

    while progress() < 1:
        length = cfg.short_seq_len if progress() < cfg.short_fraction else cfg.seq_len
        for group in opt.param_groups:
            group["lr"] = warmup_linear(progress(), cfg.lr, cfg.warmup)
        ids = windows(train_stream, rng.integers(0, len(train_stream) - length, cfg.batch_size), length, vocab)
        loss, _ = masked_loss(model, *to_device(mask_tokens(ids, vocab, cfg.mask_prob, gen), device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        recent.append(loss.item())
        bar.update(1)
        if step % cfg.eval_every == 0 or progress() >= 1:
            metrics = heldout_accuracy(model, heldout_stream, vocab, cfg, n=256)
            history.append({"step": step, "minutes": (time.time() - started) / 60, "train_loss": float(np.mean(recent)),
                            "seq_len": length, **metrics})
            recent = []
            bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", acc=f"{metrics['masked_accuracy']:.3f}")
            log.info(json.dumps(history[-1]))
            save()
    bar.close()
    save()
    final = heldout_accuracy(model, heldout_stream, vocab, cfg)
    (out / "final.json").write_text(json.dumps({"step": step, **final}, indent=2))
    log.info("final held-out %s", final)
    return out
