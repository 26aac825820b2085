"""Overload: a crowd ten times larger than capacity needs, against /extract, /parse and /solve_math, in one
run with each endpoint's capacity measured just before it.

  capacity   successful requests/s with `--clients` closed-loop clients (enough to keep the batcher busy)
  crowd      `--factor` times as many closed-loop clients for `--seconds`, each waiting the Retry-After it
             was given after a 429 (or `--backoff` seconds: an impolite crowd): goodput = 200s per second,
             against capacity; the p50/p99 time to a 429 (admission refuses at the door, so a 429 should
             come at once); and whether anything timed out (504) or failed

A crowd rather than an open-loop rate: on 2 cores a Python client cannot send thousands of requests a
second without starving the server it measures.
Goal: goodput >= 0.9 of capacity, p99 time to a 429 under 50 ms, no 504.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np

from bench.extract import ROOT, free_port, start, stop
from bench.load import run_load

PAYLOADS = {
    "extract": [{"text": "周杰伦出生于台湾省新北市，代表作有《七里香》《青花瓷》。"},
                {"text": "《红楼梦》是清代作家曹雪芹创作的章回体长篇小说。"}],
    "parse": [{"text": "中国的首都是北京，上海是中国最大的城市之一，人口众多"[:n]} for n in (20, 24)],
    "solve_math": [{"question": "一项工程，甲独做需15天完成，乙独做20天完成，两人合作几天完成？"},
                   {"question": "小明有35个苹果，吃了12个，又买了8个，现在有多少个？"}],
}


async def crowd(url: str, payloads: list[dict], clients: int, seconds: float, backoff: float | None) -> dict:
    """`clients` closed-loop clients for `seconds`: each sends, waits for the answer, and after a 429 waits
    the response's Retry-After (`backoff` None) or `backoff` seconds before it sends again."""
    statuses: list[int] = []
    latencies: dict[int, list[float]] = {}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as client:
        started = time.perf_counter()
        stop_at = started + seconds

        async def one(k: int) -> None:
            i = k
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    async with client.post(url, json=payloads[i % len(payloads)]) as r:
                        await r.read()
                        status, retry_after = r.status, float(r.headers.get("retry-after", 1))
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                statuses.append(status)
                latencies.setdefault(status, []).append(time.perf_counter() - t0)
                i += clients
                if status == 429:
                    await asyncio.sleep(retry_after if backoff is None else backoff)

        await asyncio.gather(*(one(k) for k in range(clients)))
        elapsed = time.perf_counter() - started

    def ms(status: int, q: float) -> float | None:
        values = latencies.get(status)
        return round(float(np.percentile(values, q)) * 1000, 1) if values else None

    counts = {str(s): statuses.count(s) for s in sorted(set(statuses))}
    return {"clients": clients, "statuses": counts, "seconds": round(elapsed, 2),
            "goodput_rps": round(counts.get("200", 0) / elapsed, 2), "p50_429_ms": ms(429, 50),
            "p99_429_ms": ms(429, 99), "p50_200_ms": ms(200, 50), "p99_200_ms": ms(200, 99)}


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="zhserve bench overload", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--endpoints", nargs="+", default=list(PAYLOADS), choices=list(PAYLOADS))
    p.add_argument("--factor", type=float, default=10.0, help="crowd clients over the capacity run's clients")
    p.add_argument("--seconds", type=float, default=15.0, help="length of the capacity run and of the crowd's")
    p.add_argument("--clients", type=int, default=8, help="closed-loop clients measuring capacity")
    p.add_argument("--backoff", type=float, default=None,
                   help="seconds a crowd client waits after a 429 (default: the Retry-After it was given)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "overload.json"))
    a = p.parse_args(argv)
    print(f"{os.cpu_count()} CPUs", flush=True)
    port = free_port()
    proc = start([sys.executable, "-m", "app", "serve", "--port", str(port), "--models", a.models],
                 {"ZHSERVE_LOG_LEVEL": "warning"}, port)
    rows = []
    try:
        for endpoint in a.endpoints:
            url = f"http://127.0.0.1:{port}/{endpoint}"
            payloads = PAYLOADS[endpoint]
            asyncio.run(run_load(url, payloads, 2, 8, 30))  # warm-up
            capacity = asyncio.run(run_load(url, payloads, a.clients, 100_000, a.seconds, "capacity")).throughput
            result = asyncio.run(crowd(url, payloads, int(a.factor * a.clients), a.seconds, a.backoff))
            row = {"endpoint": endpoint, "capacity_rps": round(capacity, 2), **result,
                   "goodput_over_capacity": round(result["goodput_rps"] / max(capacity, 1e-9), 2)}
            print(json.dumps(row, ensure_ascii=False), flush=True)
            rows.append(row)
    finally:
        stop(proc)
    print("| endpoint | capacity rps | crowd clients | statuses | goodput rps | goodput / capacity "
          "| p50 / p99 to 429 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['endpoint']} | {r['capacity_rps']} | {r['clients']} | {r['statuses']} | {r['goodput_rps']} | "
              f"{r['goodput_over_capacity']} | {r['p50_429_ms']} / {r['p99_429_ms']} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"runs": rows}, indent=1, ensure_ascii=False))
