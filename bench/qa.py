"""/qa latency and throughput: CMRC 2018 trial questions with their passages (about 470 characters, two or
three 256-character windows each), one request at a time and with concurrent clients, against the same
server with batching off (ZHSERVE_MAX_BATCH_SIZE=1), and against a ceiling: the same reader graph called
in-process on length-sorted batches of every question's windows (no HTTP, no queue, no decoding).
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
from bench.load import run_load, run_phases


def questions(count: int) -> list[dict]:
    from training.qa.data import load
    from training.qa.export import CMRC_TRIAL

    return [{"question": q.question, "passage": q.passages[0]} for q in load(CMRC_TRIAL)[:count]]


def ceiling(models: Path, payloads: list[dict], batch_size: int = 32) -> float:
    """Questions per second through reader.onnx alone, windows sorted by length and batched."""
    import onnxruntime as ort

    from app.tasks.qa.decode import question_ids, windows
    from app.text import CharVocab

    config = json.loads((models / "qa" / "model.json").read_text())
    version = max((p for p in (models / "qa").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    reading = config["reading"]
    vocab = CharVocab.load(version / config["vocab"])
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(version / "reader.onnx"), options, providers=["CPUExecutionProvider"])
    rows = []
    for p in payloads:
        q = question_ids(vocab, p["question"], reading["question_length"])
        rows += [(q, vocab.encode(p["passage"][w.offset : w.offset + w.length]))
                 for w in windows([len(p["passage"])], reading["window"], reading["stride"])]
    rows.sort(key=lambda r: len(r[1]))
    started = time.perf_counter()
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        ps = np.zeros((len(chunk), max(len(p) for _, p in chunk)), np.int64)
        for b, (_, p) in enumerate(chunk):
            ps[b, : len(p)] = p
        session.run(None, {"question_ids": np.stack([q for q, _ in chunk]), "passage_ids": ps})
    return len(payloads) / (time.perf_counter() - started)


def serve(models: str, env: dict, phases: list) -> list:
    port = free_port()
    proc = start([sys.executable, "-m", "app", "serve", "--port", str(port), "--models", models],
                 {"ZHSERVE_LOG_LEVEL": "warning", **env}, port)
    url = f"http://127.0.0.1:{port}/qa"
    try:
        asyncio.run(run_load(url, phases[0][0][:8], 2, 16, 30))  # warm-up
        return run_phases(url, [(payloads, c, n, s, name) for payloads, c, n, s, name in phases])
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="zhserve bench qa", description=__doc__)
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--requests", type=int, default=100, help="sequential requests")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20.0, help="at most this long per throughput measurement")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "qa.json"))
    a = p.parse_args(argv)
    print(f"{os.cpu_count()} CPUs", flush=True)
    payloads = questions(400)
    top = ceiling(Path(a.models), payloads)
    print(json.dumps({"ceiling_questions_per_s": round(top, 2)}), flush=True)
    results = serve(a.models, {}, [(payloads[: a.requests], 1, a.requests, 300, "server, one at a time"),
                                   (payloads, a.concurrency, 10_000, a.seconds, f"server, {a.concurrency} clients")])
    results += serve(a.models, {"ZHSERVE_MAX_BATCH_SIZE": "1"},
                     [(payloads, a.concurrency, 10_000, a.seconds, f"no batching, {a.concurrency} clients")])
    one, many, unbatched = results
    lines = ["| run | requests | errors | p50 ms | p99 ms | questions/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.name} | {r.requests} | {r.errors} | {r.percentile(50) * 1000:.0f} | "
              f"{r.percentile(99) * 1000:.0f} | {r.throughput:.2f} |" for r in results]
    lines.append(f"| ceiling: reader.onnx in-process, batches of 32 windows | | | | | {top:.2f} |")
    print("\n".join(lines))
    print(f"{a.concurrency} clients: {many.throughput / top:.2f} of the ceiling, "
          f"{many.throughput / max(one.throughput, 1e-9):.2f}x one at a time, "
          f"{many.throughput / max(unbatched.throughput, 1e-9):.2f}x the server with batching off")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": [r.row() for r in results], "ceiling_questions_per_s": top}, indent=1,
                              ensure_ascii=False))
