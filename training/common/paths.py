"""Where the shared data lives (../shared/data beside the checkout, or $ZHSERVE_DATA)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("ZHSERVE_DATA", ROOT.parent / "shared" / "data"))
RUNS = ROOT / "runs"  # scratch space for training (git-ignored)


def shown(path) -> str:
    """A path as the README names it (../shared/data/..., or relative to the checkout), not as this machine
    spells it."""
    path = Path(path).resolve()
    if path.is_relative_to(DATA.resolve()):
        return f"../shared/data/{path.relative_to(DATA.resolve())}"
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def short(path) -> str:
    """The last three parts of a path (ie/duie2/train_part1.json, main/runs/extract): what model.json records
    of training paths, which differ from machine to machine."""
    return str(Path(*Path(path).parts[-3:]))


def portable_recipe(recipe: dict, keys: tuple[str, ...]) -> dict:
    """A training config with its path fields (one path or a list) shortened by `short`."""
    out = dict(recipe)
    for key in keys:
        if isinstance(out.get(key), str):
            out[key] = short(out[key])
        elif isinstance(out.get(key), list):
            out[key] = [short(p) for p in out[key]]
    return out
