"""/segment (or, with --endpoint parse, /parse) latency by sentence length, and throughput with concurrent
clients against one at a time.

One zhserve process on the model repository; texts cut from the SIGHAN PKU raw test file (a sentence
of 30 characters is 30 consecutive characters of a line, punctuation included, as users send them).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from bench.extract import ROOT, free_port, start
from bench.load import print_concurrency_report, run_load, run_phases


def texts_of_length(n: int, count: int) -> list[str]:
    from training.common.paths import DATA

    lines = (DATA / "seg" / "sighan2005" / "pku_test.utf8").read_text(encoding="utf-8").split()
    return [line[:n] for line in lines if len(line) >= n][:count]


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="zhserve bench segment", description=__doc__)
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--endpoint", choices=["segment", "parse"], default="segment",
                   help="/parse probes every pair of characters and takes at most 40")
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="default 10 30 60 (parse: 10 20 40)")
    p.add_argument("--requests", type=int, default=30, help="sequential requests per length")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20.0, help="at most this long per throughput measurement")
    p.add_argument("--out", default=None, help="default bench/results/<endpoint>.json")
    a = p.parse_args(argv)
    lengths = a.lengths or ([10, 30, 60] if a.endpoint == "segment" else [10, 20, 40])
    middle = lengths[len(lengths) // 2]  # the length the throughput phases send
    print(f"{os.cpu_count()} CPUs", flush=True)
    port = free_port()
    proc = start([sys.executable, "-m", "app", "serve", "--port", str(port), "--models", a.models],
                 {"ZHSERVE_LOG_LEVEL": "warning"}, port)
    url = f"http://127.0.0.1:{port}/{a.endpoint}"
    texts = [{"text": t} for t in texts_of_length(middle, 200)]
    try:
        asyncio.run(run_load(url, texts[:8], 2, 16, 20))  # warm-up
        results = run_phases(url, [([{"text": t} for t in texts_of_length(n, a.requests)], 1, a.requests, 120,
                                    f"length {n}, one at a time") for n in lengths]
                             + [(texts, c, 10_000, a.seconds, f"length {middle}, concurrency {c}")
                                for c in (1, a.concurrency)])
    finally:
        proc.terminate()
        proc.wait(10)
    print_concurrency_report(results, a.concurrency)
    out = Path(a.out or ROOT / "bench" / "results" / f"{a.endpoint}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": [r.row() for r in results]}, indent=1, ensure_ascii=False))
