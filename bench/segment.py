"""/segment latency by sentence length, and throughput with concurrent clients against one at a time.

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
from bench.load import LoadResult, run_load


def texts_of_length(n: int, count: int) -> list[str]:
    from training.paths import DATA

    lines = (DATA / "seg" / "sighan2005" / "pku_test.utf8").read_text(encoding="utf-8").split()
    return [line[:n] for line in lines if len(line) >= n][:count]


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="zhserve bench segment", description=__doc__)
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--lengths", type=int, nargs="+", default=[10, 30, 60])
    p.add_argument("--requests", type=int, default=30, help="sequential requests per length")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20.0, help="at most this long per throughput measurement")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "segment.json"))
    a = p.parse_args(argv)
    print(f"{os.cpu_count()} CPUs", flush=True)
    port = free_port()
    proc = start([sys.executable, "-m", "app", "serve", "--port", str(port), "--models", a.models],
                 {"ZHSERVE_LOG_LEVEL": "warning"}, port)
    url = f"http://127.0.0.1:{port}/segment"
    results: list[LoadResult] = []
    try:
        asyncio.run(run_load(url, [{"text": t} for t in texts_of_length(30, 8)], 2, 16, 20))  # warm-up
        for n in a.lengths:
            payloads = [{"text": t} for t in texts_of_length(n, a.requests)]
            r = asyncio.run(run_load(url, payloads, 1, a.requests, 120, f"length {n}, one at a time"))
            results.append(r)
            print(json.dumps(r.row(), ensure_ascii=False), flush=True)
        payloads = [{"text": t} for t in texts_of_length(30, 200)]
        for c in (1, a.concurrency):
            r = asyncio.run(run_load(url, payloads, c, 10_000, a.seconds, f"length 30, concurrency {c}"))
            results.append(r)
            print(json.dumps(r.row(), ensure_ascii=False), flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    lines = ["| run | requests | p50 ms | p99 ms | throughput rps |", "|---|---|---|---|---|"]
    lines += [f"| {r.name} | {r.requests} | {r.percentile(50) * 1000:.0f} | {r.percentile(99) * 1000:.0f} | "
              f"{r.throughput:.2f} |" for r in results]
    one, many = results[-2], results[-1]
    print("\n".join(lines))
    print(f"throughput ratio, {a.concurrency} concurrent clients / one at a time: "
          f"{many.throughput / max(one.throughput, 1e-9):.2f}x")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": [r.row() for r in results]}, indent=1, ensure_ascii=False))
