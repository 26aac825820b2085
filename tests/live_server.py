"""`python -m app serve` in a subprocess on a free port of 127.0.0.1, settings from the environment, its log kept."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.extract import free_port

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def live_server(log: Path, **env: str) -> Iterator[str]:
    """The server's base URL once /healthz answers (models may still be loading); stdout and stderr go to `log`."""
    port = free_port()
    settings = {"ZHSERVE_HOST": "127.0.0.1", "ZHSERVE_PORT": str(port), "ZHSERVE_INTRA_OP_THREADS": "1",
                "ZHSERVE_CONFIG": str(log.with_suffix(".absent.toml")), "OMP_NUM_THREADS": "1", **env}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app", "serve"], cwd=ROOT, env={**os.environ, **settings},
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"the server did not answer /healthz: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()  # graceful shutdown: the log is complete once it exits
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
