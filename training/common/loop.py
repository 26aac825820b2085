"""What the DGCNN training loops share: an epoch of steps with EMA weights, and a last.pt to resume from."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tqdm import tqdm


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
    ckpt = torch.load(path, weights_only=False)
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
