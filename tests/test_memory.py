"""Memory stays bounded by the largest request the server accepts: one zhserve process on the shipped models
(default settings) answers the largest request of each endpoint (bench/memory.py) and gives most of it back.

The bound is loose on purpose (RSS moves by tens of MB from run to run): it catches what it is for, a
request that makes the process keep gigabytes (a /v2 row of 8,000 tokens once took RSS from 0.5 to 4.8 GB
and kept it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.memory import measure

MODELS = Path(__file__).resolve().parent.parent / "models"
PEAK_MB, KEPT_MB = 600, 350  # over the baseline, in MB


@pytest.mark.slow
def test_the_largest_requests_leave_rss_near_its_baseline():
    result = measure("shrink", MODELS)
    assert set(result["statuses"].values()) == {200}, result  # every largest request is accepted and answered
    assert result["peak_mb"] - result["baseline_mb"] < PEAK_MB, result
    assert result["kept_mb"] < KEPT_MB, result
