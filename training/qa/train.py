"""Training loop for the reader: one passage window per question per step (the answer inside it,
or, for a share of steps, a window without it so that the pointers learn to stay low: "no answer"),
EMA weights, checkpoint selection on dev EM + F1. Resumable from its last checkpoint.

The reader is the DGCNN (the project's own, character vocabulary), or with `--encoder DIR` a user's
pretrained encoder with a pointer head (training/qa/encoder_reader.py, word pieces); same loop, same
windows, same decoding."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from app.tasks.qa.decode import question_ids
from app.text import CharVocab
from training.common.device import device_of, to_device
from training.common.loop import char_vocab, fit, seeded
from training.common.paths import DATA, RUNS
from training.common.splits import qa_split
from training.qa.data import Question, answer_spans, load
from training.qa.evaluate import TorchReader, evaluate_torch
from training.qa.model import DGCNNReader, ReaderConfig

log = logging.getLogger(__name__)

CMRC_TRAIN = DATA / "qa" / "cmrc2018" / "train.json"


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    embeddings: str | None = None  # folder with vocab.txt + char_vectors.npy (training/common/embeddings.py)
    hidden: int = 128
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    decay_epochs: int = 0  # the last N epochs anneal the learning rate linearly down to 10%
    ema_decay: float = 0.999
    window: int = 256  # passage characters per row; serving reads longer passages in overlapping windows
    stride: int = 192  # window - stride >= max_answer, so every answer fits whole in some window
    max_answer: int = 64
    negatives: float = 0.25  # share of rows whose window does not hold the answer
    max_minutes: float = 0.0
    eval_questions: int = 400  # dev questions scored after each epoch
    seed: int = 1
    threads: int = 0
    limit: int = 0  # use only the first N training questions (tests)
    encoder: str = ""  # a Hugging Face BERT-family folder: fine-tune it instead of training the DGCNN
    question_tokens: int = 64  # --encoder: [CLS] question [SEP] in word pieces, at most
    device: str = "auto"  # auto (CUDA when present), cpu, cuda or cuda:N (training/common/device.py)


RECIPES = {
    # 2 CPU cores, about 75 minutes: the shipped model.
    "cpu": {"hidden": 128, "epochs": 14, "decay_epochs": 5, "max_minutes": 75.0, "threads": 2,
            "embeddings": str(RUNS / "embeddings")},
    # One GPU: wider, longer windows, trained to convergence.
    "gpu": {"hidden": 256, "epochs": 60, "decay_epochs": 15, "window": 384, "stride": 256, "batch_size": 128,
            "max_minutes": 0.0, "embeddings": str(RUNS / "embeddings")},
}


# --encoder: fine-tuning settings (a small learning rate; windows and question fit 512 positions).
ENCODER_DEFAULTS = {"lr": 5e-5, "batch_size": 32, "epochs": 3, "decay_epochs": 1, "ema_decay": 0.99,
                    "embeddings": None}
ENCODER_RECIPES = {
    # 2 CPU cores: a base-size encoder reads about 2,000 questions in an hour; the tiny test encoder, seconds.
    "cpu": {"epochs": 2, "batch_size": 16, "limit": 2000, "max_minutes": 60.0, "threads": 2, "eval_questions": 200},
    # One GPU: all of CMRC 2018 train, longer windows.
    "gpu": {"epochs": 3, "batch_size": 32, "lr": 3e-5, "window": 384, "stride": 256, "max_minutes": 0.0},
}


@dataclass
class Sample:
    question: Question
    spans: list[tuple[int, int]]  # [start, end) of the answers in passage 0


def samples(questions: list[Question]) -> list[Sample]:
    out = []
    for q in questions:
        spans = answer_spans(q.passages[0], q.answers[0], q.starts)  # loaders keep non-empty answers only
        if spans:
            out.append(Sample(q, spans))
    return out


def choose_window(sample: Sample, others: list[Sample], cfg: TrainConfig, rng: random.Random) -> tuple[str, list]:
    """A window of the passage holding an answer, or (cfg.negatives of the time) one without any: half of
    those from the same passage where it is long enough, the rest from another question's passage."""
    passage = sample.question.passages[0]
    W = cfg.window
    fitting = [s for s in sample.spans if s[1] - s[0] <= W]
    if fitting and rng.random() >= cfg.negatives:
        start, end = rng.choice(fitting)
        offset = rng.randint(max(0, end - W), min(start, max(0, len(passage) - W)))
    elif len(passage) > W and rng.random() < 0.5:
        offset = rng.randint(0, len(passage) - W)
    else:
        other = rng.choice(others).question.passages[0]
        if other == passage:
            return passage[:0], []
        offset = rng.randint(0, max(0, len(other) - W))
        return other[offset : offset + W], []
    text = passage[offset : offset + W]
    inside = [(s - offset, e - offset) for s, e in sample.spans if s >= offset and e <= offset + W]
    return text, inside


def tensors(batch: list[Sample], others: list[Sample], vocab: CharVocab, cfg: TrainConfig, question_length: int,
            rng: random.Random):
    chosen = [choose_window(s, others, cfg, rng) for s in batch]
    T = max(1, max(len(t) for t, _ in chosen))
    q_ids = np.stack([question_ids(vocab, s.question.question, question_length) for s in batch])
    p_ids = np.zeros((len(batch), T), np.int64)
    target = np.zeros((len(batch), T, 2), np.float32)
    for b, (text, spans) in enumerate(chosen):
        p_ids[b, : len(text)] = vocab.encode(text)
        for s, e in spans:
            target[b, s, 0] = target[b, e - 1, 1] = 1
    return torch.from_numpy(q_ids), torch.from_numpy(p_ids), torch.from_numpy(target)


def loss_fn(net: DGCNNReader, q_ids, p_ids, target) -> torch.Tensor:
    q_ids, p_ids, target = to_device((q_ids, p_ids, target), device_of(net))
    mask = (p_ids > 0).float()
    loss = F.binary_cross_entropy_with_logits(net(q_ids, p_ids), target, reduction="none").sum(-1)
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def encoder_loss(net, ids, types, target) -> torch.Tensor:
    ids, types, target = to_device((ids, types, target), device_of(net))
    mask = (ids > 0).float()
    loss = F.binary_cross_entropy_with_logits(net(ids, types), target, reduction="none").sum(-1)
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def train_encoder(cfg: TrainConfig, out: Path, rng: random.Random, train_set: list[Sample],
                  dev_set: list[Question]) -> Path:
    """Fine-tune the encoder in cfg.encoder with a pointer head (same loop, windows and decoding)."""
    from training.common.encoder import save_tokenizer
    from training.qa.encoder_reader import EncoderTorchReader, build, training_batch

    net, tokenizer = build(cfg.encoder, cfg.question_tokens)
    if cfg.window + cfg.question_tokens + 1 > net.config.max_tokens:
        raise SystemExit(f"--window {cfg.window} + --question-tokens {cfg.question_tokens} + 1 is over the encoder's "
                         f"{net.config.max_tokens} positions")
    save_tokenizer(tokenizer, out)
    log.info("encoder %s: train %d, dev %d questions; %d parameters", cfg.encoder, len(train_set), len(dev_set),
             sum(p.numel() for p in net.parameters()))

    def loss_of(model, chunk: list[Sample]) -> torch.Tensor:
        chosen = [(s.question.question, *choose_window(s, train_set, cfg, rng)) for s in chunk]
        return encoder_loss(model, *training_batch(chosen, tokenizer, model.config))

    def epoch_chunks() -> list[list[Sample]]:
        order = sorted(train_set, key=lambda s: rng.random())
        return [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]

    return fit(net, cfg, out, rng, epoch_chunks, loss_of,
               lambda model: evaluate_torch(EncoderTorchReader(model, tokenizer, cfg.window, cfg.stride,
                                                               cfg.max_answer), dev_set),
               lambda scores: scores["em"] + scores["f1"],
               keep={"window": cfg.window, "stride": cfg.stride, "max_answer": cfg.max_answer})


def train(cfg: TrainConfig) -> Path:
    rng = seeded(cfg.seed, cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    questions = [q for path in cfg.data for q in load(path)]
    train_set = samples([q for q in questions if qa_split(q.id) == "train"])
    dev_set = [q for q in questions if qa_split(q.id) == "dev" and q.gold]
    if cfg.limit:
        train_set, dev_set = train_set[: cfg.limit], dev_set[: max(8, cfg.limit // 8)]
    dev_set = dev_set[: cfg.eval_questions]
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    if cfg.encoder:
        return train_encoder(cfg, out, rng, train_set, dev_set)

    vocab, vectors = char_vocab(cfg.embeddings, (t for s in train_set
                                                 for t in (s.question.question, s.question.passages[0])))
    vocab.save(out / "vocab.txt")

    config = ReaderConfig(vocab_size=len(vocab), hidden=cfg.hidden, max_len=max(512, cfg.window),
                          pretrained_dim=0 if vectors is None else vectors.shape[1])
    net = DGCNNReader(config)
    if vectors is not None:
        net.pretrained.weight.data.copy_(torch.from_numpy(vectors / vectors[5:].std()))
    log.info("train %d, dev %d questions; %d parameters", len(train_set), len(dev_set),
             sum(p.numel() for p in net.parameters()))

    def epoch_chunks() -> list[list[Sample]]:
        order = sorted(train_set, key=lambda s: rng.random())
        return [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]

    return fit(net, cfg, out, rng, epoch_chunks,
               lambda model, chunk: loss_fn(model, *tensors(chunk, train_set, vocab, cfg, config.question_length, rng)),
               lambda model: evaluate_torch(TorchReader(model, vocab, cfg.window, cfg.stride, cfg.max_answer), dev_set),
               lambda scores: scores["em"] + scores["f1"],
               keep={"window": cfg.window, "stride": cfg.stride, "max_answer": cfg.max_answer})
