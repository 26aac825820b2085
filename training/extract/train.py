"""Training loop for the extractor (the DGCNN, or a pretrained encoder with `--encoder DIR`): one sampled subject
per sentence per step, EMA weights, checkpoint selection and threshold tuning on the dev split. Resumable from its
last checkpoint."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from app.tasks.extract.decode import Thresholds
from app.tasks.extract.schema import Schema
from app.text.tokenization import Tokenization
from training.common.device import device_of, to_device
from training.common.encoder import save_tokenizer
from training.common.loop import char_vocab, fit, seeded
from training.common.paths import RUNS
from training.common.splits import extract_split
from training.extract.bert_model import BertExtractor
from training.extract.data import Example, entity_pools, load_examples, swap_entities
from training.extract.evaluate import evaluate_torch
from training.extract.model import DGCNNConfig, DGCNNExtractor

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: list[str]
    schema: str
    out: str
    embeddings: str | None = None  # folder with vocab.txt + char_vectors.npy (training/common/embeddings.py)
    hidden: int = 128
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    decay_epochs: int = 0  # the last N epochs anneal the learning rate linearly down to 10%
    ema_decay: float = 0.999
    max_len: int = 256
    max_minutes: float = 0.0  # stop after this long (0: no limit); the best checkpoint is kept
    eval_every: int = 1
    seed: int = 1
    threads: int = 0  # torch threads (0: torch's default)
    limit: int = 0  # use only the first N training examples (tests)
    # Files used for training only (e.g. SKE 2019 for the predicates it shares); their texts that are in the
    # main data's dev or test split are dropped.
    extra_train: list[str] = field(default_factory=list)
    augment: float = 0.0  # share of each epoch's sentences seen with their entities swapped for same-type ones
    init: str = ""  # start from this best.pt (same architecture) instead of random weights
    encoder: str = ""  # a pretrained Hugging Face encoder folder instead of the DGCNN (training/common/encoder.py)
    device: str = "auto"  # auto (CUDA when present), cpu, cuda or cuda:N (training/common/device.py)


# Presets for `zhserve train extract --recipe NAME` (explicit flags still win).
RECIPES = {
    # 2 CPU cores, about 80 minutes: the shipped model.
    "cpu": {"hidden": 128, "epochs": 40, "decay_epochs": 12, "batch_size": 64, "max_minutes": 80.0, "threads": 2,
            "embeddings": str(RUNS / "embeddings")},
    # One GPU: a wider encoder trained to convergence (the 2019 entry trained far longer than 80 minutes).
    "gpu": {"hidden": 256, "epochs": 150, "decay_epochs": 30, "batch_size": 128, "max_minutes": 0.0, "lr": 1e-3,
            "embeddings": str(RUNS / "embeddings")},
}


# Presets with --encoder (explicit flags still win): bert4keras' relation-extraction example fine-tunes with Adam at
# 1e-5, EMA 0.999, batch 64, 128 tokens, 20 epochs.
ENCODER_RECIPES = {
    # This machine and the tests: a few hundred sentences, minutes.
    "cpu": {"epochs": 2, "batch_size": 8, "lr": 2e-5, "max_len": 128, "limit": 400, "max_minutes": 15.0,
            "threads": 2, "ema_decay": 0.99},
    # One GPU: the published settings.
    "gpu": {"epochs": 20, "batch_size": 64, "lr": 1e-5, "max_len": 128, "ema_decay": 0.999, "max_minutes": 0.0},
}


def token_spans(e: Example, encoding, n: int) -> dict[tuple[int, int], list[tuple[int, tuple[int, int]]]]:
    """The example's character spans as inclusive token spans within the first `n` tokens; spans whose edges fall
    inside a token (a word piece) cannot be pointed at and are left out."""
    def to_tokens(span: tuple[int, int]) -> tuple[int, int] | None:
        tokens = encoding.token_span(span[0], span[1] + 1)
        return tokens if tokens is not None and tokens[1] < n else None

    out = {}
    for s, objects in e.spans.items():
        if (s_tokens := to_tokens(s)) is not None:
            out[s_tokens] = [(label, o) for label, span in objects if (o := to_tokens(span)) is not None]
    return out


def tensors(batch: list[Example], tokens: Tokenization, num_labels: int, max_len: int, rng: random.Random):
    """Pad a batch; sample one gold subject per sentence and build its object targets."""
    encodings = [tokens.encoding(e.text) for e in batch]
    T = min(max_len, max(len(enc) for enc in encodings))
    ids = np.zeros((len(batch), T), dtype=np.int64)
    s_target = np.zeros((len(batch), T, 2), dtype=np.float32)
    o_target = np.zeros((len(batch), T, num_labels, 2), dtype=np.float32)
    subject = np.zeros((len(batch), 2), dtype=np.int64)
    has_subject = np.zeros(len(batch), dtype=np.float32)
    for b, (e, enc) in enumerate(zip(batch, encodings, strict=True)):
        n = min(T, len(enc))
        ids[b, :n] = enc.ids[:n]
        spans = token_spans(e, enc, n)
        for s, e_ in spans:
            s_target[b, s, 0] = s_target[b, e_, 1] = 1
        if spans:
            chosen = rng.choice(list(spans))
            subject[b] = chosen
            has_subject[b] = 1
            for label, (os, oe) in spans[chosen]:
                o_target[b, os, label, 0] = o_target[b, oe, label, 1] = 1
    as_t = torch.from_numpy
    return as_t(ids), as_t(s_target), as_t(o_target), as_t(subject), as_t(has_subject)


def loss_fn(net: DGCNNExtractor | BertExtractor, batch) -> torch.Tensor:
    ids, s_target, o_target, subject, has_subject = to_device(batch, device_of(net))
    s_logits, o_logits = net(ids, subject)
    mask = (ids > 0).float()
    s_loss = F.binary_cross_entropy_with_logits(s_logits, s_target, reduction="none").sum(-1)
    s_loss = (s_loss * mask).sum() / mask.sum()
    o_loss = F.binary_cross_entropy_with_logits(o_logits, o_target, reduction="none").sum((-1, -2))
    o_mask = mask * has_subject[:, None]
    o_loss = (o_loss * o_mask).sum() / o_mask.sum().clamp(min=1)
    return s_loss + o_loss


def batches(examples: list[Example], batch_size: int, rng: random.Random) -> list[list[Example]]:
    """Length-bucketed batches in random order: little padding, still shuffled."""
    shuffled = examples[:]
    rng.shuffle(shuffled)
    chunks = [sorted(shuffled[i : i + batch_size * 20], key=lambda e: len(e.text))
              for i in range(0, len(shuffled), batch_size * 20)]
    out = [c[i : i + batch_size] for c in chunks for i in range(0, len(c), batch_size)]
    rng.shuffle(out)
    return out


def extra_examples(paths: list[Path], main: list[Example], schema: Schema) -> list[Example]:
    """Examples of training-only files, less any sentence of the main data's dev or test split."""
    held_out = {e.text for e in main if extract_split(e.text) != "train"}
    return [e for e in load_examples(paths, schema) if e.text not in held_out]


def train(cfg: TrainConfig) -> Path:
    rng = seeded(cfg.seed, cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    schema = Schema.load(cfg.schema)
    examples = load_examples([Path(p) for p in cfg.data], schema)
    train_set = [e for e in examples if extract_split(e.text) == "train"]
    dev_set = [e for e in examples if extract_split(e.text) == "dev"]
    if cfg.extra_train:
        extra = extra_examples([Path(p) for p in cfg.extra_train], examples, schema)
        log.info("extra training sentences: %d", len(extra))
        train_set += extra
    if cfg.limit:
        train_set, dev_set = train_set[: cfg.limit], dev_set[: max(8, cfg.limit // 8)]

    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    (out / "schema.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in schema.to_records()) + "\n", encoding="utf-8")
    net, tokens = build_net(cfg, len(schema.labels), train_set, out)
    config = net.config
    if cfg.init:
        net.load_state_dict(torch.load(cfg.init, map_location="cpu", weights_only=False)["state_dict"])
    pools = entity_pools(train_set, schema)
    log.info("train %d, dev %d sentences; %d labels; %d parameters", len(train_set), len(dev_set),
             len(schema.labels), sum(p.numel() for p in net.parameters()))
    if cfg.encoder:
        total = sum(len(e.spans) + sum(map(len, e.spans.values())) for e in train_set[:2000])
        kept = sum(len(s) + sum(map(len, s.values()))
                   for e in train_set[:2000] for s in [token_spans(e, tokens.encoding(e.text), cfg.max_len)])
        log.info("spans on token boundaries (first 2000 sentences, within max_len): %d of %d", kept, total)

    max_len = min(cfg.max_len, getattr(net, "max_tokens", cfg.max_len))  # an encoder's rows fit its positions

    def epoch_chunks() -> list[list[Example]]:
        epoch_set = [swap_entities(e, pools, schema, rng) if rng.random() < cfg.augment else e for e in train_set]
        return batches(epoch_set, cfg.batch_size, rng)

    return fit(net, cfg, out, rng, epoch_chunks,
               lambda model, chunk: loss_fn(model, tensors(chunk, tokens, config.num_labels, max_len, rng)),
               lambda model: evaluate_torch(model, tokens, schema, dev_set, Thresholds()),
               lambda scores: scores["f1"], cfg.eval_every)


def build_net(cfg: TrainConfig, num_labels: int, train_set: list[Example], out: Path):
    """(net, its tokenisation), the tokenisation saved into the run folder: a pretrained encoder with fresh heads
    and its own tokenizer.json (--encoder), or the DGCNN with a character vocab.txt."""
    if cfg.encoder:
        net, tokens = BertExtractor.from_pretrained(cfg.encoder, num_labels)
        save_tokenizer(tokens, out)
        return net, tokens
    vocab, vectors = char_vocab(cfg.embeddings, (e.text for e in train_set))
    vocab.save(out / "vocab.txt")
    net = DGCNNExtractor(DGCNNConfig(vocab_size=len(vocab), num_labels=num_labels, hidden=cfg.hidden,
                                     pretrained_dim=0 if vectors is None else vectors.shape[1]))
    if vectors is not None:
        net.pretrained.weight.data.copy_(torch.from_numpy(vectors / vectors[5:].std()))
    return net, vocab
