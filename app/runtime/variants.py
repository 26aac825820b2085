"""Which file of a stage to serve: fp32, or a kept int8 (CPU) or fp16 (CUDA) variant.

model.json "variants" lists, per variant, the file of each stage it replaces ("files") with the quality and
speed measured for it; a variant without "files" was measured and left out. The choice follows the provider
the session really got (`session.get_providers()`): a CUDA session that fell back to CPU is reopened with the
CPU choice. The server setting ZHSERVE_VARIANT (auto|fp32|int8|fp16) overrides the choice; a variant the
model does not ship falls back to fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

VARIANTS = ("fp32", "int8", "fp16")
SETTINGS = ("auto", *VARIANTS)
PREFERRED = {"cpu": "int8", "cuda": "fp16"}  # dynamic int8 is a CPU speed-up; fp16 pays off on tensor cores
CUDA = "CUDAExecutionProvider"


class Session(Protocol):
    providers: list[str]


def stage_files(config: dict, stage: str) -> dict[str, str]:
    """variant -> file name for one stage: fp32 always, the others where model.json ships them."""
    files = {"fp32": config["stages"][stage]["file"]}
    for name, entry in config.get("variants", {}).items():
        if name in VARIANTS and isinstance(entry, dict) and stage in entry.get("files", {}):
            files[name] = entry["files"][stage]
    return files


def choose(files: dict[str, str], setting: str, provider: str) -> str:
    """The variant to serve on `provider` ("cpu" or "cuda") under `setting`, among those shipped."""
    if setting not in SETTINGS:
        raise ValueError(f"variant setting {setting!r} is not one of {', '.join(SETTINGS)}")
    wanted = PREFERRED[provider] if setting == "auto" else setting
    return wanted if wanted in files else "fp32"


def provider_of(providers: list[str]) -> str:
    """The session's provider class: the first provider decides where the graph runs."""
    return "cuda" if providers and providers[0] == CUDA else "cpu"


def expected_provider(device: str) -> str:
    """A first guess, before any session exists (onnxruntime may still fall back to CPU)."""
    import onnxruntime as ort

    return "cuda" if device in ("auto", "cuda") and CUDA in ort.get_available_providers() else "cpu"


def open_stage(directory: Path, config: dict, stage: str, setting: str, device: str,
               open_file: Callable[[Path], Session], guess: str | None = None) -> tuple[Session, str]:
    """Open the stage's session with the variant for the provider it really gets; (session, variant)."""
    files = stage_files(config, stage)
    variant = choose(files, setting, guess or expected_provider(device))
    if setting not in ("auto", variant):
        log.warning("stage %s: no %s variant shipped, serving fp32", stage, setting)
    session = open_file(directory / files[variant])
    better = choose(files, setting, provider_of(session.providers))
    if better != variant:  # e.g. CUDA asked for, the session fell back to CPU: the CPU choice instead
        log.info("stage %s: session runs on %s; reopening with the %s variant", stage, session.providers, better)
        session, variant = open_file(directory / files[better]), better
    return session, variant
