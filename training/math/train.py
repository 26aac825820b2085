"""Fine-tune the project's BERT (or a user's, `--encoder DIR`) as a UniLM seq2seq math solver (or train the
same network from scratch). With an encoder the question's text is read in its word pieces, numbers still
one slot token each.

Teacher forcing over [CLS] question [SEP] expression [SEP]; the loss is on the expression tokens only.
The learning rate warms up, then decays linearly to zero by whichever comes first of `epochs` and
`max_minutes`. Every `eval_every` steps: greedy accuracy on the first `eval_problems` problems of our
Ape210K dev share; best.pt keeps the best of them; last.pt lets a run resume.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from app.tasks.math.text import source_ids
from app.text import CharVocab
from app.text.subword import SubwordTokenizer
from training.common.device import device_of, pick_device, to_device
from training.common.paths import RUNS
from training.common.schedule import adamw, warmup_linear
from training.math.data import APE_VALID, MATH23K, Problem, load, training_set
from training.math.model import from_encoder, from_pretrained, from_scratch, hidden_states, math_vocab

log = logging.getLogger(__name__)


@dataclass
class MathConfig:
    out: str = str(RUNS / "math")
    init: str = str(RUNS / "mlm")  # a `zhserve train mlm` run; "" trains from scratch
    warm_start: str = ""  # a math checkpoint (best.pt) to go on from, with a fresh schedule
    encoder: str = ""  # a Hugging Face BERT folder (fast tokenizer): fine-tuned instead of `init`
    data: str = str(MATH23K)
    ape_copies: int = 0  # copies of our Ape210K "train" share added to the training data (0: Math23K only)
    dev_data: str = str(APE_VALID)  # its "dev" share (ape_split) picks the checkpoint
    hidden: int = 256  # from-scratch sizes (an init run brings its own)
    layers: int = 4
    heads: int = 4
    max_positions: int = 256
    max_source: int = 190  # question tokens, [CLS] and [SEP] included
    max_target: int = 60  # expression tokens, the closing [SEP] included
    batch_size: int = 64
    epochs: float = 40.0
    max_minutes: float = 0.0  # 0: no time limit
    lr: float = 3e-4
    warmup: float = 0.03
    weight_decay: float = 0.01
    eval_every: int = 300
    eval_problems: int = 200
    seed: int = 1
    threads: int = 0
    device: str = "auto"  # auto (CUDA when present), cpu, cuda or cuda:N (training/common/device.py)


RECIPES = {
    # 2 CPU cores, about 80 minutes: the shipped model.
    "cpu": {"max_minutes": 80.0, "threads": 2},
    # One GPU, from the gpu-recipe BERT: more epochs, bigger batches.
    "gpu": {"epochs": 100.0, "batch_size": 128, "lr": 2e-4, "eval_problems": 1000},
}


# --encoder: fine-tuning settings for a pretrained (usually larger) BERT.
ENCODER_DEFAULTS = {"lr": 5e-5, "batch_size": 32, "epochs": 20.0, "warmup": 0.1, "max_source": 256}
ENCODER_RECIPES = {
    # 2 CPU cores: a time box; a base-size encoder gets through a few thousand problems in it.
    "cpu": {"max_minutes": 80.0, "threads": 2, "batch_size": 16, "eval_problems": 100},
    # One GPU: Math23K plus our Ape210K train share, to convergence.
    "gpu": {"epochs": 50.0, "batch_size": 64, "lr": 5e-5, "ape_copies": 1, "eval_problems": 1000},
}


def encode(problem: Problem, vocab: CharVocab, cfg: MathConfig,
           pieces: SubwordTokenizer | None = None) -> tuple[list[int], list[int]] | None:
    """(source ids with [CLS] [SEP], target ids with the closing [SEP]); None when too long."""
    source = source_ids(problem.question, vocab, pieces)[0]
    target = [vocab.index[t] for t in problem.target] + [vocab.sep_id]
    if len(source) > cfg.max_source or len(target) > cfg.max_target:
        return None
    return source, target


def collate(pairs: list[tuple[list[int], list[int]]], pad_id: int):
    """Padded ids and types, the positions whose hidden state predicts a target token, and those tokens."""
    width = max(len(s) + len(t) for s, t in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    types = torch.zeros_like(ids)
    rows, cols, labels = [], [], []
    for b, (s, t) in enumerate(pairs):
        ids[b, :len(s) + len(t)] = torch.tensor(s + t)
        types[b, len(s):len(s) + len(t)] = 1
        rows += [b] * len(t)
        cols += range(len(s) - 1, len(s) + len(t) - 1)  # the question's [SEP] predicts the first target token
        labels += t
    return ids, types, (torch.tensor(rows), torch.tensor(cols)), torch.tensor(labels)


def batches(pairs: list, size: int, rng: random.Random):
    """Shuffled batches of similar lengths (sorted within pools of 50 batches) to keep padding low."""
    order = pairs[:]
    rng.shuffle(order)
    pool = size * 50
    out = []
    for i in range(0, len(order), pool):
        chunk = sorted(order[i:i + pool], key=lambda p: len(p[0]) + len(p[1]))
        out += [chunk[j:j + size] for j in range(0, len(chunk), size)]
    rng.shuffle(out)
    return out


@torch.no_grad()
def greedy(model, vocab: CharVocab, problems: list[Problem], max_target: int, batch: int = 64,
           pieces: SubwordTokenizer | None = None) -> list[list[str]]:
    """Greedy expressions (token lists), recomputing the whole sequence each step: a quick check while
    training; serving uses beam search with the expression grammar (app/tasks/math/decode.py)."""
    model.eval()
    device = device_of(model)
    results = []
    for start in range(0, len(problems), batch):
        chunk = problems[start:start + batch]
        seqs = [source_ids(q.question, vocab, pieces)[0] for q in chunk]
        sources = [len(s) for s in seqs]
        done = [False] * len(seqs)
        for _ in range(max_target):
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), vocab.pad_id, dtype=torch.long)
            types = torch.zeros_like(ids)
            for b, s in enumerate(seqs):
                ids[b, :len(s)] = torch.tensor(s)
                types[b, sources[b]:len(s)] = 1
            hidden = hidden_states(model, *to_device((ids, types), device), vocab.pad_id)
            ends = torch.tensor([len(s) - 1 for s in seqs], device=device)
            last = hidden[torch.arange(len(seqs), device=device), ends]
            nxt = model.cls(last).argmax(-1).tolist()
            for b, token in enumerate(nxt):
                if not done[b]:
                    seqs[b].append(token)
                    done[b] = token == vocab.sep_id
            if all(done):
                break
        results += [[vocab.tokens[t] for t in s[n:] if t != vocab.sep_id] for s, n in zip(seqs, sources, strict=True)]
    model.train()
    return results


def accuracy(problems: list[Problem], outputs: list[list[str]]) -> dict:
    from app.tasks.math.evaluator import ExpressionError, evaluate
    from app.tasks.math.text import render
    from training.math.answers import parse_answer, same_answer

    correct = valid = 0
    for p, tokens in zip(problems, outputs, strict=True):
        try:
            value = evaluate(render(tokens, p.numbers))
        except ExpressionError:
            continue
        valid += 1
        try:
            correct += same_answer(value, parse_answer(p.answer))
        except ExpressionError:
            pass
    return {"accuracy": correct / len(problems), "valid": valid / len(problems), "n": len(problems)}


def build(cfg: MathConfig):
    """(model, math vocabulary, the encoder's tokenizer or None)."""
    if cfg.encoder:
        return from_encoder(Path(cfg.encoder), cfg.max_positions)
    if cfg.init:
        return (*from_pretrained(Path(cfg.init), cfg.max_positions), None)
    base = CharVocab.load(RUNS / "mlm" / "vocab.txt")  # the vocabulary of `zhserve train mlm`'s default run
    vocab = math_vocab(base)
    return from_scratch(vocab, cfg.hidden, cfg.layers, cfg.heads, cfg.max_positions), vocab, None


def train(cfg: MathConfig) -> Path:
    device = pick_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, vocab, pieces = build(cfg)
    if cfg.warm_start:
        model.load_state_dict(torch.load(cfg.warm_start, map_location="cpu", weights_only=False)["model"])
    model.to(device)  # before the optimizer: its state follows the weights
    vocab.save(out / "vocab.txt")
    if pieces is not None:
        from training.common.encoder import save_tokenizer

        save_tokenizer(pieces, out)
    pairs = [e for p in training_set([Path(cfg.data)], cfg.ape_copies) if (e := encode(p, vocab, cfg, pieces))]
    dev = [p for p in load(cfg.dev_data, split="dev") if p.target is not None][:cfg.eval_problems]
    log.info("%d training pairs, %d dev problems", len(pairs), len(dev))
    opt = adamw(model, cfg.lr, cfg.weight_decay)
    steps_per_epoch = -(-len(pairs) // cfg.batch_size)
    total = int(cfg.epochs * steps_per_epoch)
    step, elapsed, history, best = 0, 0.0, [], -1.0
    if (out / "last.pt").exists():
        state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed, history, best = state["step"], state["elapsed"], state["history"], state["best"]
        log.info("resumed at step %d (%.1f min)", step, elapsed / 60)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    budget = cfg.max_minutes * 60 or float("inf")
    started = time.time() - elapsed
    rng = random.Random(cfg.seed + step)

    def progress() -> float:
        return max(step / total, (time.time() - started) / budget)

    def save(name: str):
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                    "elapsed": time.time() - started, "history": history, "config": asdict(cfg),
                    "bert_config": model.config.to_dict()}, out / f"{name}.tmp")
        (out / f"{name}.tmp").replace(out / name)
        (out / "history.json").write_text(json.dumps(history, indent=1))

    bar = tqdm(total=total, initial=step, desc="math", unit="step", mininterval=10)
    model.train()
    recent: list[float] = []
    while progress() < 1:
        for batch in batches(pairs, cfg.batch_size, rng):
            if progress() >= 1:
                break
            for group in opt.param_groups:
                group["lr"] = warmup_linear(progress(), cfg.lr, cfg.warmup)
            ids, types, (rows, cols), labels = collate(batch, vocab.pad_id)
            ids, types, rows, cols, labels = to_device((ids, types, rows, cols, labels), device)
            logits = model.cls(hidden_states(model, ids, types, vocab.pad_id)[rows, cols])
            loss = F.cross_entropy(logits, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            recent.append(loss.item())
            bar.update(1)
            if step % cfg.eval_every == 0 or progress() >= 1:
                metrics = accuracy(dev, greedy(model, vocab, dev, cfg.max_target, pieces=pieces))
                history.append({"step": step, "epoch": step / steps_per_epoch, "minutes": (time.time() - started) / 60,
                                "train_loss": float(np.mean(recent)), "dev_accuracy": metrics["accuracy"],
                                "dev_valid": metrics["valid"]})
                recent = []
                bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", dev=f"{metrics['accuracy']:.3f}")
                log.info(json.dumps(history[-1]))
                if metrics["accuracy"] > best:
                    best = metrics["accuracy"]
                    save("best.pt")
                save("last.pt")
    bar.close()
    save("last.pt")
    return out
