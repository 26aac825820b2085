"""The CLI contract: `zhserve eval extract` prints progress to stderr and JSON as the last stdout line."""

import json
import subprocess
import sys

from tests.conftest import DATA


def test_eval_extract_prints_metrics_json_last(tiny_models):
    data = DATA / "ie" / "ske2019" / "dev_subset.json"  # the SKE 2019 format loads too
    proc = subprocess.run([sys.executable, "-m", "app", "eval", "extract", "--data", str(data), "--limit", "20",
                           "--models", str(tiny_models)], capture_output=True, text=True, timeout=300, check=True)
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["task"] == "extract" and metrics["n"] == 20
    assert {"precision", "recall", "f1"} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("precision", "recall", "f1"))
