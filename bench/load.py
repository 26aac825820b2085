"""An async HTTP load generator, bounded in requests and in time.

aiohttp rather than httpx: on a 2-core machine the client shares the CPU with the server, and
aiohttp spends several times less CPU per request, so the figures describe the server."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import numpy as np


@dataclass
class LoadResult:
    name: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")

    def row(self) -> dict:
        return {"name": self.name, "concurrency": self.concurrency, "requests": self.requests,
                "errors": self.errors, "throughput_rps": round(self.throughput, 2),
                "p50_ms": round(self.percentile(50) * 1000, 2), "p99_ms": round(self.percentile(99) * 1000, 2)}


async def run_load(url: str, payloads: list[dict], concurrency: int, max_requests: int, max_seconds: float,
                   name: str = "") -> LoadResult:
    """`concurrency` clients send payloads round-robin until max_requests are done or max_seconds pass."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    started = time.perf_counter()
    stop_at = started + max_seconds
    connector = aiohttp.TCPConnector(limit=concurrency)

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:
        async def worker() -> None:
            nonlocal issued, errors
            while issued < max_requests and time.perf_counter() < stop_at:
                payload = payloads[issued % len(payloads)]
                issued += 1
                t0 = time.perf_counter()
                try:
                    async with client.post(url, json=payload) as r:
                        await r.read()
                        ok = r.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(name, concurrency, len(latencies), errors, time.perf_counter() - started, latencies)


def run_phases(url: str, phases: list[tuple[list[dict], int, int, float, str]]) -> list[LoadResult]:
    """run_load for each (payloads, concurrency, max_requests, max_seconds, name), printing each result."""
    import json

    results = []
    for payloads, concurrency, max_requests, max_seconds, name in phases:
        results.append(asyncio.run(run_load(url, payloads, concurrency, max_requests, max_seconds, name)))
        print(json.dumps(results[-1].row(), ensure_ascii=False), flush=True)
    return results


def print_concurrency_report(results: list[LoadResult], concurrency: int) -> None:
    """A markdown table of the runs, then the throughput of the last run (many clients) over the one before (one)."""
    lines = ["| run | requests | errors | p50 ms | p99 ms | throughput rps |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.name} | {r.requests} | {r.errors} | {r.percentile(50) * 1000:.0f} | "
              f"{r.percentile(99) * 1000:.0f} | {r.throughput:.2f} |" for r in results]
    one, many = results[-2], results[-1]
    print("\n".join(lines))
    print(f"throughput ratio, {concurrency} concurrent clients / one at a time: "
          f"{many.throughput / max(one.throughput, 1e-9):.2f}x")
