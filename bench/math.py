"""/solve_math latency (p50/p99, one request at a time) and throughput with concurrent clients against one
at a time: every beam step of every request is a batcher row, so concurrent requests decode together.

Questions are real problems: the first ones of our Ape210K dev share. Also measured, in this process
on the ONNX graphs alone: what the key/value cache saves. Without it each beam step would run the
whole row (question + expression so far); with it a step runs one new token per beam.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.extract import ROOT, free_port, start
from bench.load import print_concurrency_report, run_load, run_phases


def questions(count: int) -> list[str]:
    from training.common.io import read_jsonl
    from training.common.splits import ape_split
    from training.math.data import APE_VALID

    return [r["original_text"] for r in read_jsonl(APE_VALID) if ape_split(r["id"]) == "dev"][:count]


def cache_bound(models: Path, beams: int = 4, source: int = 60, steps: int = 16, repeats: int = 10) -> dict:
    """Decoder time of a request's beam steps with the key/value cache (the shipped step graph: one token
    against the cache) and without (the same network over the whole row, timed with the shipped
    encoder graph, which does the same work), in this process, same sessions and threads."""
    import onnxruntime as ort

    config = json.loads((models / "math" / "model.json").read_text())
    version = max((p for p in (models / "math").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    stages = config["stages"]
    encoder, step = (ort.InferenceSession(str(version / stages[s]["file"]), providers=["CPUExecutionProvider"])
                     for s in ("encoder", "step"))
    _, layers, heads, _, d = stages["step"]["inputs"]["past_keys"]["shape"]

    def timed(run) -> float:
        run()  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            run()
        return (time.perf_counter() - started) / repeats

    def whole_row(width: int) -> float:
        return timed(lambda: encoder.run(None, {"token_ids": np.full((beams, width), 10, dtype=np.int64)}))

    def cached(width: int) -> float:
        past = np.zeros((beams, layers, heads, width, d), dtype=np.float32)
        feed = {"token": np.full(beams, 10, dtype=np.int64), "position": np.full(beams, width, dtype=np.int64),
                "past_keys": past, "past_values": past, "past_mask": np.ones((beams, width), dtype=bool)}
        return timed(lambda: step.run(None, feed))

    without = sum(whole_row(source + k) for k in range(1, steps + 1))
    with_cache = sum(cached(source + k) for k in range(steps))
    return {"beams": beams, "question_tokens": source, "steps": steps, "no_cache_ms": round(without * 1000, 1),
            "cache_ms": round(with_cache * 1000, 1), "speedup": round(without / with_cache, 2)}


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="zhserve bench math", description=__doc__)
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--requests", type=int, default=40, help="sequential requests")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=30.0, help="at most this long per throughput measurement")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "math.json"))
    a = p.parse_args(argv)
    print(f"{os.cpu_count()} CPUs", flush=True)
    bound = cache_bound(Path(a.models))
    print(json.dumps({"kv_cache": bound}), flush=True)
    port = free_port()
    proc = start([sys.executable, "-m", "app", "serve", "--port", str(port), "--models", a.models],
                 {"ZHSERVE_LOG_LEVEL": "warning"}, port)
    url = f"http://127.0.0.1:{port}/solve_math"
    payloads = [{"question": q} for q in questions(max(a.requests, 200))]
    try:
        asyncio.run(run_load(url, payloads[:8], 2, 16, 30))  # warm-up
        results = run_phases(url, [(payloads[:a.requests], 1, a.requests, 300, "one at a time")]
                             + [(payloads, c, 10_000, a.seconds, f"concurrency {c}") for c in (1, a.concurrency)])
    finally:
        proc.terminate()
        proc.wait(10)
    print_concurrency_report(results, a.concurrency)
    print(f"key/value cache: {bound['steps']} steps of {bound['beams']} beams after a {bound['question_tokens']}-token "
          f"question take {bound['cache_ms']} ms with it, {bound['no_cache_ms']} ms without: {bound['speedup']}x")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": [r.row() for r in results], "kv_cache": bound}, indent=1, ensure_ascii=False))
