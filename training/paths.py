"""Where the shared data lives (../shared/data beside the checkout, or $ZHSERVE_DATA)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ZHSERVE_DATA", ROOT.parent / "shared" / "data"))
RUNS = ROOT / "runs"  # scratch space for training (git-ignored)


def shown(path) -> str:
    """A path as the README names it (../shared/data/..., or relative to the checkout), not as this machine
    spells it."""
    path = Path(path).resolve()
    if path.is_relative_to(DATA.resolve()):
        return f"../shared/data/{path.relative_to(DATA.resolve())}"
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
