"""AdamW with weight decay on matrices only, and the warm-up then linear-decay schedule the BERT runs share."""

from __future__ import annotations


def adamw(model, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)):
    import torch

    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)


def warmup_linear(progress: float, lr: float, warmup: float) -> float:
    """Linear warm-up over the first `warmup` share of training, then linear decay to zero at progress 1."""
    if progress < warmup:
        return lr * progress / warmup
    return lr * max(0.0, 1 - progress) / (1 - warmup)


def learning_rate(cfg, epoch: int) -> float:
    """Constant, then a linear anneal to 10% over the last `decay_epochs` epochs."""
    into_decay = epoch - (cfg.epochs - cfg.decay_epochs)
    if cfg.decay_epochs <= 0 or into_decay < 0:
        return cfg.lr
    return cfg.lr * (1.0 - 0.9 * (into_decay + 1) / cfg.decay_epochs)
