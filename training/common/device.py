"""Where a trainer runs: `--device auto` (the default) takes CUDA when this host has it, else the CPU; asking for
CUDA without it is refused by name rather than silently training on the CPU for days."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class DeviceError(ValueError):
    """A --device this host cannot give."""


def pick_device(name: str, quiet: bool = False) -> torch.device:
    """"auto" -> cuda when torch sees a GPU, else cpu; "cpu", "cuda" or "cuda:N" as asked, checked (quiet: the CLI's
    early check, not logged)."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"unsupported device {name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name} asked for CUDA, but torch {torch.__version__} sees no CUDA GPU on "
                              "this host (a CPU-only torch build or no driver): use --device auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: this host has {torch.cuda.device_count()} CUDA GPU(s)")
    if not quiet:
        log.info("training on %s", device)
    return device


def device_of(module: torch.nn.Module) -> torch.device:
    """The device a module's weights are on (where its inputs must go)."""
    return next(module.parameters()).device


def to_device(tensors, device: torch.device) -> tuple:
    """Each tensor of a batch on `device`."""
    return tuple(t.to(device) for t in tensors)
