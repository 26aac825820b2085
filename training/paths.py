"""Where the shared data lives (../shared/data beside the checkout, or $ZHSERVE_DATA)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ZHSERVE_DATA", ROOT.parent / "shared" / "data"))
RUNS = ROOT / "runs"  # scratch space for training (git-ignored)


def shown(path) -> str:
    """A data path as the README names it (../shared/data/...), not as this machine spells it."""
    path = Path(path).resolve()
    try:
        return f"../shared/data/{path.relative_to(DATA.resolve())}"
    except ValueError:
        return str(path)
