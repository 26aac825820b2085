"""`zhserve bench reload` on the shipped extractor: a live reload under load drops no request and the versions
the responses carry never go back (bench/reload.py; it times nothing here)."""

from __future__ import annotations

import pytest

from bench.reload import measure, parse


@pytest.mark.slow
def test_a_reload_under_load_fails_no_request_and_versions_only_move_forward():
    result = measure(parse(["--clients", "2", "--reloads", "1", "--requests", "40"]))
    assert result["requests"] == 40 and result["failed"] == 0, result
    assert result["reload_status"] == [200], result
    assert result["versions_in_order"][0][0] == "1" and result["versions_in_order"][-1][0] == "2", result
    assert result["version_regressions"] == 0, result
    assert result["phases"]["during"]["peak_rss_mb"] is not None, result
