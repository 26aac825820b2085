"""Overload: a burst at 10x capacity against /extract, /parse and /solve_math, in one run with each
endpoint's capacity measured just before it.

  capacity   successful requests/s with a few closed-loop clients (enough to keep the batcher busy)
  burst      requests sent open-loop at `--factor` times that rate for `--seconds`; every response
             is timed: goodput = 200s per second of the burst (until its last response), and the
             p50/p99 time to a 429 (admission refuses at the door, so a 429 should come at once)

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

from bench.extract import ROOT, free_port, start
from bench.load import run_load

PAYLOADS = {
    "extract": [{"text": "周杰伦出生于台湾省新北市，代表作有《七里香》《青花瓷》。"},
                {"text": "《红楼梦》是清代作家曹雪芹创作的章回体长篇小说。"}],
    "parse": [{"text": "中国的首都是北京，上海是中国最大的城市之一，人口众多"[:n]} for n in (20, 24)],
    "solve_math": [{"question": "一项工程，甲独做需15天完成，乙独做20天完成，两人合作几天完成？"},
                   {"question": "小明有35个苹果，吃了12个，又买了8个，现在有多少个？"}],
}


async def burst(url: str, payloads: list[dict], rate: float, seconds: float) -> dict:
    """Send at `rate` requests/s for `seconds` (open loop), wait for every response, and time them."""
    statuses: list[int] = []
    latencies: dict[int, list[float]] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as client:
        async def one(payload: dict) -> None:
            t0 = time.perf_counter()
            try:
                async with client.post(url, json=payload) as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            statuses.append(status)
            latencies.setdefault(status, []).append(time.perf_counter() - t0)

        started = time.perf_counter()
        tasks, n = [], int(rate * seconds)
        for i in range(n):
            tasks.append(asyncio.create_task(one(payloads[i % len(payloads)])))
            await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started

    def ms(status: int, q: float) -> float | None:
        values = latencies.get(status)
        return round(float(np.percentile(values, q)) * 1000, 1) if values else None

    counts = {str(s): statuses.count(s) for s in sorted(set(statuses))}
    return {"sent": n, "statuses": counts, "seconds": round(elapsed, 2),
            "goodput_rps": round(counts.get("200", 0) / elapsed, 2), "p50_429_ms": ms(429, 50),
            "p99_429_ms": ms(429, 99), "p50_200_ms": ms(200, 50), "p99_200_ms": ms(200, 99)}


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="zhserve bench overload", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--endpoints", nargs="+", default=list(PAYLOADS), choices=list(PAYLOADS))
    p.add_argument("--factor", type=float, default=10.0, help="burst rate over the measured capacity")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the capacity run and of the burst")
    p.add_argument("--clients", type=int, default=8, help="closed-loop clients measuring capacity")
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
            result = asyncio.run(burst(url, payloads, a.factor * capacity, a.seconds))
            row = {"endpoint": endpoint, "capacity_rps": round(capacity, 2),
                   "burst_rps": round(a.factor * capacity, 2), **result,
                   "goodput_over_capacity": round(result["goodput_rps"] / max(capacity, 1e-9), 2)}
            print(json.dumps(row, ensure_ascii=False), flush=True)
            rows.append(row)
    finally:
        proc.terminate()
        proc.wait(10)
    print("| endpoint | capacity rps | burst rps | statuses | goodput rps | goodput / capacity | p99 to 429 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['endpoint']} | {r['capacity_rps']} | {r['burst_rps']} | {r['statuses']} | {r['goodput_rps']} | "
              f"{r['goodput_over_capacity']} | {r['p99_429_ms']} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"runs": rows}, indent=1, ensure_ascii=False))
