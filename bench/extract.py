"""/extract throughput and latency, against three baselines measured in the same run.

  server        zhserve with dynamic batching (the shipped model.json settings)
  no-batching   zhserve with max_batch_size=1
  naive-torch   a FastAPI server calling PyTorch eager per request (bench/naive_server.py)
  ceiling       the same ONNX stages called in-process on length-sorted batches of 64: no HTTP, no queue

Each server runs in its own process and is loaded by an async client at each concurrency.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench.load import LoadResult, run_load

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, grace: float = 40) -> None:
    """SIGTERM (the server's graceful shutdown lets in-flight requests end), then kill if it lingers."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()


def start(cmd: list[str], env: dict, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{cmd} did not become ready")


def ceiling(models: Path, texts: list[str], batch_size: int = 64) -> float:
    """Texts per second through the two ONNX stages with ideal batching, decoding included."""
    from app.runtime.backend import OnnxBackend
    from app.runtime.batcher import TensorSpec, collate, split
    from app.tasks.extract.decode import Thresholds, build_triples, find_subjects
    from app.tasks.extract.schema import Schema
    from app.text import CharVocab

    config = json.loads((models / "extract" / "model.json").read_text())
    version = max((d for d in (models / "extract").iterdir() if d.name.isdigit()), key=lambda d: int(d.name))
    vocab, schema = CharVocab.load(version / "vocab.txt"), Schema.load(version / "schema.jsonl")
    th = Thresholds(**config["thresholds"])
    stages = {}
    for name, spec in config["stages"].items():
        specs = [[TensorSpec.from_dict(k, v) for k, v in spec[kind].items()] for kind in ("inputs", "outputs")]
        stages[name] = (OnnxBackend(version / spec["file"]), *specs)

    def run(stage: str, rows: list[dict], lengths: list[int]) -> list[dict]:
        backend, inputs, outputs = stages[stage]
        out = []
        for i in range(0, len(rows), batch_size):
            out += split(backend.run(collate(rows[i : i + batch_size], inputs)), lengths[i : i + batch_size], outputs)
        return out

    ordered = sorted(texts, key=len)
    warm = ordered[:batch_size]
    run("subject", [{"token_ids": vocab.encode(t)} for t in warm], [len(t) for t in warm])
    started = time.perf_counter()
    encoded = run("subject", [{"token_ids": vocab.encode(t)} for t in ordered], [len(t) for t in ordered])
    rows, owners = [], []
    for i, out in enumerate(encoded):
        for span in find_subjects(out["subject_probs"], th):
            rows.append({"hidden": out["hidden"], "mask": np.ones(len(ordered[i]), np.float32),
                         "subject": np.array([span.start, span.end])})
            owners.append((i, span))
    objects = run("object", rows, [len(r["mask"]) for r in rows])
    for (i, span), out in zip(owners, objects, strict=True):
        build_triples(ordered[i], span, out["object_probs"], schema, th)
    return len(texts) / (time.perf_counter() - started)


def bench_texts(limit: int) -> list[str]:
    from training.common.io import read_jsonl
    from training.common.paths import DATA
    from training.common.splits import extract_split

    paths = [DATA / "ie" / "duie2" / f for f in ("train_part1.json", "train_part2.json")]
    texts = [r["text"] for p in paths for r in read_jsonl(p) if extract_split(r["text"]) == "test"]
    return texts[:limit]


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="zhserve bench extract", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--requests", type=int, default=2000, help="at most this many requests per measurement")
    p.add_argument("--seconds", type=float, default=15.0, help="at most this long per measurement")
    p.add_argument("--texts", type=int, default=512, help="distinct test-split sentences to send")
    p.add_argument("--skip", nargs="*", default=[], choices=["no-batching", "naive-torch"])
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "extract.json"))
    a = p.parse_args(argv)
    models = Path(a.models)
    texts = bench_texts(a.texts)
    payloads = [{"text": t} for t in texts]
    print(f"{len(texts)} test-split sentences, mean {np.mean([len(t) for t in texts]):.0f} characters; "
          f"{os.cpu_count()} CPUs", flush=True)

    ceiling_rps = ceiling(models, texts)
    print(f"ceiling (in-process ONNX, batches of 64): {ceiling_rps:.1f} texts/s", flush=True)

    py = sys.executable
    servers = {
        "server": ([py, "-m", "app", "serve"], {}),
        "no-batching": ([py, "-m", "app", "serve"], {"ZHSERVE_MAX_BATCH_SIZE": "1"}),
        "naive-torch": ([py, "-m", "bench.naive_server", "--model-dir", str(models / "extract")], {}),
    }
    results: list[LoadResult] = []
    for name, (cmd, env) in servers.items():
        if name in a.skip:
            continue
        port = free_port()
        cmd = cmd + ["--port", str(port)] + (["--models", str(models)] if "app" in cmd else [])
        proc = start(cmd, {**env, "ZHSERVE_LOG_LEVEL": "warning"}, port)
        try:
            url = f"http://127.0.0.1:{port}/extract"
            asyncio.run(run_load(url, payloads[:16], 4, 32, 10))  # warm-up
            for c in a.concurrency:
                r = asyncio.run(run_load(url, payloads, c, a.requests, a.seconds, name))
                results.append(r)
                print(json.dumps(r.row()), flush=True)
        finally:
            proc.terminate()
            proc.wait(10)

    report(results, ceiling_rps, a.concurrency, Path(a.out))


def report(results: list[LoadResult], ceiling_rps: float, concurrency: list[int], out: Path) -> None:
    by = {(r.name, r.concurrency): r for r in results}
    lines = ["| concurrency | server rps | p50 ms | p99 ms | no-batching rps | naive-torch rps | "
             "server / ceiling | server / no-batching | server / naive-torch |",
             "|---|---|---|---|---|---|---|---|---|"]

    def rps(name: str, c: int) -> float:
        return by[(name, c)].throughput if (name, c) in by else float("nan")

    for c in concurrency:
        s = by.get(("server", c))
        if s is None:
            continue
        lines.append(f"| {c} | {s.throughput:.1f} | {s.percentile(50) * 1000:.1f} | {s.percentile(99) * 1000:.1f} | "
                     f"{rps('no-batching', c):.1f} | {rps('naive-torch', c):.1f} | {s.throughput / ceiling_rps:.2f} | "
                     f"{s.throughput / rps('no-batching', c):.2f} | {s.throughput / rps('naive-torch', c):.2f} |")
    table = "\n".join(lines)
    print(f"\nceiling: {ceiling_rps:.1f} texts/s\n{table}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"ceiling_rps": ceiling_rps, "runs": [r.row() for r in results]}, indent=1))
