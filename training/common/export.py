"""Export helpers every task shares."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def fold_pretrained(net):
    """The frozen pretrained table and its projection are one more lookup by the same id: fold them
    into the trainable embedding (exact), so the exported model carries one table, not two. Works for
    any net built like the DGCNNs here (`embed`, `pretrained`, `pretrained_proj`, a dataclass `config`)."""
    if not getattr(net.config, "pretrained_dim", 0):  # none (a pretrained encoder has no such table)
        return net
    folded = type(net)(type(net.config)(**{**net.config.to_dict(), "pretrained_dim": 0}))
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("pretrained")}
    with torch.no_grad():
        state["embed.weight"] = net.embed.weight + net.pretrained_proj(net.pretrained.weight)
    folded.load_state_dict(state)
    return folded.eval()


def latest_version(model_dir: Path) -> Path:
    return max((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def onnx_metadata(config: dict) -> dict[str, str]:
    """What each ONNX file says about itself: the model it belongs to, its architecture and provenance."""
    training = config.get("training", {})
    return {"zhserve.model": str(config.get("name", "")), "zhserve.task": config["task"],
            "zhserve.description": config.get("description", ""),
            "zhserve.architecture": json.dumps(config.get("architecture", {}), ensure_ascii=False),
            "zhserve.training": json.dumps({k: training[k] for k in ("data", "command", "init") if k in training},
                                           ensure_ascii=False)}


def stamp_onnx(path: Path, metadata: dict[str, str]) -> bool:
    """Write `metadata` into the file's metadata_props (only when it differs); True when the file changed."""
    import onnx

    model = onnx.load(str(path))
    current = {p.key: p.value for p in model.metadata_props}
    if all(current.get(k) == v for k, v in metadata.items()):
        return False
    onnx.helper.set_model_props(model, {**current, **metadata})
    onnx.save(model, str(path))
    return True


def write_model_json(model_dir: Path, config: dict) -> None:
    """models/<name>/model.json, and the same architecture and provenance in every stage's ONNX metadata."""
    (model_dir / "model.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    version = latest_version(model_dir)
    for stage in config["stages"].values():
        stamp_onnx(version / stage["file"], onnx_metadata(config))
    log.info("wrote %s (onnx parity %s)", model_dir / "model.json", config["quality"].get("onnx_parity_max_abs_diff"))
