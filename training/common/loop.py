"""One training loop for the DGCNN trainers (extract, qa): epochs of steps with EMA weights, dev
evaluation, best.pt, and a last.pt to resume from."""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from app.text import CharVocab
from training.common.device import pick_device
from training.common.schedule import learning_rate

log = logging.getLogger(__name__)


def update_ema(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for p_ema, p in zip(ema.parameters(), net.parameters(), strict=True):
            p_ema.lerp_(p, 1.0 - decay)


def save_last(path: Path, net, ema, optimizer, state: dict, rng: random.Random, config: dict) -> None:
    torch.save({"net": net.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                "state": state, "rng": rng.getstate(), "config": config}, path)


def resume(path: Path, net, ema, optimizer, rng: random.Random) -> dict | None:
    """Load a save_last checkpoint into the given objects and return its loop state (None: nothing to resume)."""
    if not path.exists():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # load_state_dict puts it on the net's device
    net.load_state_dict(ckpt["net"])
    ema.load_state_dict(ckpt["ema"])
    optimizer.load_state_dict(ckpt["optimizer"])
    rng.setstate(ckpt["rng"])
    return ckpt["state"]


def train_epoch(net, ema, optimizer, chunks: list, loss_of, ema_decay: float, desc: str) -> float:
    """One optimizer step per chunk (`loss_of(chunk)` builds its loss), the EMA after each; a progress
    bar; returns the mean loss."""
    total, steps = 0.0, 0
    bar = tqdm(chunks, desc=desc, leave=False, mininterval=5)
    for chunk in bar:
        loss = loss_of(chunk)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        update_ema(ema, net, ema_decay)
        total, steps = total + loss.item(), steps + 1
        bar.set_postfix(loss=f"{total / steps:.4f}", refresh=False)
    return total / max(1, steps)


def seeded(seed: int, threads: int) -> random.Random:
    """Seed torch, set its CPU threads (0: torch's default) and return the loop's own Random."""
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    return random.Random(seed)


def char_vocab(embeddings: str, texts: Iterable[str]) -> tuple[CharVocab, np.ndarray | None]:
    """The vocabulary and vectors of a `zhserve train embeddings` run, or a vocabulary of the training texts."""
    if embeddings:
        return CharVocab.load(Path(embeddings) / "vocab.txt"), np.load(Path(embeddings) / "char_vectors.npy")
    return CharVocab.build(texts, min_count=1), None


def fit(net, cfg, out: Path, rng: random.Random, epoch_chunks: Callable[[], list],
        loss_of: Callable[[torch.nn.Module, object], torch.Tensor], evaluate: Callable[[torch.nn.Module], dict],
        score_of: Callable[[dict], float], eval_every: int = 1, keep: dict | None = None) -> Path:
    """The training loop of the DGCNN trainers: epochs of `epoch_chunks()` (one optimizer step each, EMA
    weights beside), the learning-rate schedule of `cfg` (lr, epochs, decay_epochs), a dev evaluation of
    both the EMA and the raw weights (`score_of` ranks them), best.pt with the better one (plus `keep`),
    last.pt to resume from, history.json, and cfg.max_minutes counting the epochs before a resume too. The net
    (and its EMA copy) train on `pick_device(cfg.device)`; `loss_of` and `evaluate` move their tensors there."""
    net.to(pick_device(cfg.device))
    ema = copy.deepcopy(net).eval()
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.lr)
    last = out / "last.pt"
    state = resume(last, net, ema, optimizer, rng) or {"epoch": 0, "best": -1.0, "history": []}
    if state["epoch"]:
        log.info("resumed at epoch %d (best dev score %.4f)", state["epoch"], state["best"])
    started = time.monotonic() - 60 * (state["history"][-1]["minutes"] if state["history"] else 0.0)
    while state["epoch"] < cfg.epochs:
        net.train()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, state["epoch"])
        loss = train_epoch(net, ema, optimizer, epoch_chunks(), lambda chunk: loss_of(net, chunk), cfg.ema_decay,
                           f"epoch {state['epoch'] + 1}/{cfg.epochs}")
        state["epoch"] += 1
        record = {"epoch": state["epoch"], "loss": loss, "lr": optimizer.param_groups[0]["lr"],
                  "minutes": round((time.monotonic() - started) / 60, 1)}
        if state["epoch"] % eval_every == 0 or state["epoch"] == cfg.epochs:
            # Early on the EMA still carries much of the initial weights: score both, keep the better.
            scores = {name: evaluate(model) for name, model in (("ema", ema), ("raw", net))}
            kind = max(scores, key=lambda k: score_of(scores[k]))
            record.update(scores[kind], weights=kind)
            if score_of(record) > state["best"]:
                state["best"] = score_of(record)
                torch.save({"config": net.config.to_dict(), "state_dict": (ema if kind == "ema" else net).state_dict(),
                            "weights": kind, **(keep or {})}, out / "best.pt")
        state["history"].append(record)
        log.info("%s", json.dumps(record))
        save_last(last, net, ema, optimizer, state, rng, net.config.to_dict())
        (out / "history.json").write_text(json.dumps(state["history"], indent=1))
        if cfg.max_minutes and time.monotonic() - started > cfg.max_minutes * 60:
            log.info("time limit reached after epoch %d", state["epoch"])
            break
    return out / "best.pt"
