"""/docs and /redoc in a real headless Chromium with every host but 127.0.0.1 unreachable: the pages render the API
from files served by zhserve itself, and the page asks nothing of any other origin.

Chromium's network log lists every request the page made (its initiator is the page's origin), so the test
also fails on a page that merely tries an outside URL. Set ZHSERVE_SCREENSHOTS=1 to refresh docs/swagger.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.debian import program
from tests.live_server import ROOT, live_server

ENDPOINTS = ("/extract", "/qa", "/solve_math", "/segment", "/parse", "/explain", "/v2/models/{name}/infer")
OUTSIDE = re.compile(r"""https?://(?!127\.0\.0\.1[:/])(?!www\.w3\.org/)[^\s"'<>)]+""")  # svg namespaces aside
BUDGET_MS = 20_000  # virtual time: Chromium runs it as fast as the page idles, it is not a wait


@pytest.fixture(scope="module")
def chromium() -> str:
    return program("chromium", "chromium")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """No models (the pages do not need them), and API keys on: the pages and their files stay public."""
    tmp = tmp_path_factory.mktemp("docs")
    (tmp / "models").mkdir()
    with live_server(tmp / "server.log", ZHSERVE_MODELS=str(tmp / "models"), ZHSERVE_API_KEYS="docs-test-key") as url:
        yield url


def browse(chromium: str, url: str, tmp: Path, *output: str) -> tuple[str, list[tuple[str, str]]]:
    """Chromium headless on `url`, outside hosts unresolvable and outside traffic sent to a dead proxy. Returns
    stdout and every (initiator, URL) the network log saw."""
    profile, netlog = tmp / "profile", tmp / "net.json"
    shutil.rmtree(profile, ignore_errors=True)
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
               f"--user-data-dir={profile}", '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
               "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
               f"--virtual-time-budget={BUDGET_MS}", f"--log-net-log={netlog}", *output, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requests = [(e["params"].get("initiator", ""), e["params"]["url"]) for e in log["events"]
                if e["type"] == start_job and "url" in e.get("params", {})]
    return result.stdout, requests


def page_requests(requests: list[tuple[str, str]], origin: str) -> list[str]:
    """What the page asked for: the document itself and what its scripts and styles fetched (the browser's own
    traffic, update checks and the like, has no page initiator)."""
    return [url for initiator, url in requests if initiator == origin or url.startswith(origin + "/")]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_served_page_names_no_outside_url(server, page):
    html = httpx.get(server + page).text
    assert "static-offline-docs/" in html and not OUTSIDE.findall(html)


def test_swagger_ui_renders_every_endpoint_offline(server, chromium, tmp_path):
    dom, requests = browse(chromium, f"{server}/docs", tmp_path, "--dump-dom")
    paths = set(re.findall(r'data-path="([^"]+)"', dom))
    assert set(ENDPOINTS) <= paths, sorted(paths)
    assert "btn authorize" in dom  # keys are on: the bearer scheme gives Swagger UI its Authorize button
    assert not OUTSIDE.findall(dom), OUTSIDE.findall(dom)[:5]
    asked = page_requests(requests, server)
    assert f"{server}/openapi.json" in asked and f"{server}/static-offline-docs/swagger-ui-bundle.js" in asked
    assert all(url.startswith(server + "/") for url in asked), asked


def test_redoc_renders_every_endpoint_offline(server, chromium, tmp_path):
    dom, requests = browse(chromium, f"{server}/redoc", tmp_path, "--dump-dom")
    for endpoint in ENDPOINTS:
        assert f">{endpoint}<" in dom, endpoint
    # ReDoc's footer links to its makers (a hyperlink, nothing fetched): the one outside URL in its DOM
    assert set(OUTSIDE.findall(dom)) <= {"https://redocly.com/redoc/"}, set(OUTSIDE.findall(dom))
    asked = page_requests(requests, server)
    assert f"{server}/static-offline-docs/redoc.standalone.js" in asked
    assert all(url.startswith(server + "/") for url in asked), asked


@pytest.mark.skipif(os.environ.get("ZHSERVE_SCREENSHOTS") != "1", reason="set ZHSERVE_SCREENSHOTS=1 to refresh")
def test_refresh_the_screenshot(server, chromium, tmp_path):
    shot = tmp_path / "swagger.png"
    browse(chromium, f"{server}/docs", tmp_path, "--hide-scrollbars", "--window-size=1280,1600",
           f"--screenshot={shot}")
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one
    shutil.copy(shot, ROOT / "docs" / "swagger.png")
