"""Where the shared data lives (../shared/data beside the checkout, or $ZHSERVE_DATA)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ZHSERVE_DATA", ROOT.parent / "shared" / "data"))
RUNS = ROOT / "runs"  # scratch space for training (git-ignored)
