"""/extract through zhserve and through two general-purpose model servers, loaded the same way in one run.

  zhserve    python -m app serve (its batcher, with the limits below)
  litserve   bench/peer_litserve.py: LitServe, dynamic batching of whole requests, one worker
  ray-serve  bench/peer_ray.py: Ray Serve, one replica, @serve.batch on the subject and on the object stage

All three run the same two ONNX stages (subject.onnx, then one object.onnx row per subject) with the same
pre- and post-processing (app.text, app.tasks.extract), the same onnxruntime threads and batches of at most
`--max-batch-size` rows gathered for at most `--delay-ms`. Before timing, each peer must return zhserve's
triples for a few sentences. Needs the `peers` extra (pip install -e '.[peers]').
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import httpx
import numpy as np

from app.runtime.backend import OnnxBackend
from app.runtime.batcher import TensorSpec, collate, split
from app.tasks.extract.decode import Span, Thresholds, build_triples, find_subjects
from app.tasks.extract.schema import Schema
from app.text import CharVocab
from bench.extract import bench_texts, free_port
from bench.load import LoadResult, run_load

ROOT = Path(__file__).resolve().parent.parent
NAMES = {"zhserve": "zhserve", "litserve": "LitServe", "ray-serve": "Ray Serve"}


class Pipeline:
    """app/tasks/extract/task.py's pipeline on plain onnxruntime sessions, for the peer servers."""

    def __init__(self, model_dir: Path, threads: int, max_batch_size: int):
        config = json.loads((model_dir / "model.json").read_text())
        version = max((d for d in model_dir.iterdir() if d.name.isdigit()), key=lambda d: int(d.name))
        self.vocab, self.schema = CharVocab.load(version / config["vocab"]), Schema.load(version / config["schema"])
        self.thresholds = Thresholds(**config["thresholds"])
        self.max_batch_size = max_batch_size
        self.stages = {}
        for name in ("subject", "object"):
            spec = config["stages"][name]
            inputs, outputs = ([TensorSpec.from_dict(k, v) for k, v in spec[kind].items()]
                               for kind in ("inputs", "outputs"))
            backend = OnnxBackend(version / spec["file"], device="cpu", intra_op_threads=threads)
            self.stages[name] = (backend, inputs, outputs, next(s for s in inputs if s.seq_axis is not None))

    def run(self, stage: str, rows: list[dict]) -> list[dict]:
        """One stage on rows, in batches of at most max_batch_size (a batch of requests may hold more subjects)."""
        backend, inputs, outputs, seq = self.stages[stage]
        out = []
        for i in range(0, len(rows), self.max_batch_size):
            chunk = rows[i : i + self.max_batch_size]
            out += split(backend.run(collate(chunk, inputs)), [r[seq.name].shape[seq.seq_axis] for r in chunk], outputs)
        return out

    def subject_row(self, text: str) -> dict:
        return {"token_ids": self.vocab.encode(text)}

    def object_rows(self, text: str, encoded: dict) -> tuple[list[dict], list[Span]]:
        spans = find_subjects(encoded["subject_probs"], self.thresholds)
        rows = [{"hidden": encoded["hidden"], "mask": np.ones(len(text), np.float32),
                 "subject": np.array([s.start, s.end], np.int64)} for s in spans]
        return rows, spans

    def triples(self, text: str, spans: list[Span], objects: list[dict]) -> list[dict]:
        out = []
        for span, o in zip(spans, objects, strict=True):
            out += build_triples(text, span, o["object_probs"], self.schema, self.thresholds)
        return sorted(out, key=lambda t: -t["score"])

    def extract(self, texts: list[str]) -> list[list[dict]]:
        """Both stages over a batch of texts: the subject rows as one batch, then all their object rows."""
        encoded = self.run("subject", [self.subject_row(t) for t in texts])
        per_text = [self.object_rows(t, e) for t, e in zip(texts, encoded, strict=True)]
        objects = self.run("object", [r for rows, _ in per_text for r in rows])
        results, k = [], 0
        for text, (rows, spans) in zip(texts, per_text, strict=True):
            results.append(self.triples(text, spans, objects[k : k + len(rows)]))
            k += len(rows)
        return results


class Server:
    """A server process in its own process group (Ray starts helpers that must go with it), ready once
    `ready_path` answers 200; stop() sends SIGTERM, then kills the whole group."""

    def __init__(self, cmd: list[str], env: dict, port: int, ready_path: str, timeout: float = 180):
        self.log = tempfile.TemporaryFile()  # not a pipe: nobody reads it while the server runs, and Ray logs a lot
        self.proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"{cmd} exited {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{cmd} not ready after {timeout:.0f} s: {self.tail()}")

    def tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()


def triples_of(url: str, texts: list[str]) -> list[list[dict]]:
    out = []
    for text in texts:
        r = httpx.post(url, json={"text": text}, timeout=30)
        r.raise_for_status()
        out.append(r.json()["results"][0]["triples"])
    return out


def same_triples(a: list[dict], b: list[dict]) -> bool:
    """Equal triples; scores may differ in the last rounded digit (another process, another float path)."""
    def key(t: dict) -> str:
        return json.dumps({k: v for k, v in t.items() if k != "score"}, sort_keys=True, ensure_ascii=False)

    a, b = sorted(a, key=key), sorted(b, key=key)
    return [key(t) for t in a] == [key(t) for t in b] and all(
        abs(x["score"] - y["score"]) < 1e-4 for x, y in zip(a, b, strict=True))


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="zhserve bench peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--servers", nargs="+", default=list(NAMES), choices=list(NAMES))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--requests", type=int, default=2000, help="at most this many requests per measurement")
    p.add_argument("--seconds", type=float, default=15.0, help="at most this long per measurement")
    p.add_argument("--texts", type=int, default=512, help="distinct test-split sentences to send")
    p.add_argument("--check", type=int, default=8, help="sentences whose triples every peer must match")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads, every server")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--delay-ms", type=float, default=2.0, help="longest wait for a batch to fill")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "peers.json"))
    a = p.parse_args(argv)
    models = Path(a.models)
    texts = bench_texts(a.texts)
    payloads = [{"text": t} for t in texts]
    print(f"{len(texts)} test-split sentences, mean {np.mean([len(t) for t in texts]):.0f} characters; "
          f"{os.cpu_count()} CPUs", flush=True)

    py = sys.executable
    peer_args = ["--models", str(models), "--threads", str(a.threads), "--max-batch-size", str(a.max_batch_size),
                 "--delay-ms", str(a.delay_ms)]
    servers = {  # command, environment, readiness path
        "zhserve": ([py, "-m", "app", "serve", "--models", str(models)],
                    {"ZHSERVE_DEVICE": "cpu", "ZHSERVE_INTRA_OP_THREADS": str(a.threads),
                     "ZHSERVE_MAX_BATCH_SIZE": str(a.max_batch_size), "ZHSERVE_MAX_QUEUE_DELAY_MS": str(a.delay_ms),
                     "ZHSERVE_LOG_LEVEL": "warning"}, "/readyz"),
        "litserve": ([py, "-m", "bench.peer_litserve", *peer_args], {}, "/health"),
        "ray-serve": ([py, "-m", "bench.peer_ray", *peer_args], {"RAY_USAGE_STATS_ENABLED": "0"}, "/readyz"),
    }
    order = ["zhserve"] + [n for n in a.servers if n != "zhserve"]  # zhserve first: its triples are the reference
    reference: list[list[dict]] = []
    results: list[LoadResult] = []
    for name in order:
        cmd, env, ready = servers[name]
        port = free_port()
        started = time.monotonic()
        server = Server(cmd + ["--port", str(port)], env, port, ready)
        print(f"{name}: ready in {time.monotonic() - started:.1f} s", flush=True)
        try:
            url = f"http://127.0.0.1:{port}/extract"
            got = triples_of(url, texts[: a.check])
            if name == "zhserve":
                reference = got
            for text, want, have in zip(texts, reference, got, strict=False):
                assert same_triples(want, have), f"{name} disagrees with zhserve on {text!r}:\n{want}\n{have}"
            print(f"{name}: same triples as zhserve on {len(got)} sentences "
                  f"({sum(map(len, got))} triples)", flush=True)
            asyncio.run(run_load(url, payloads[:64], 8, 64, 10))  # warm-up
            for c in a.concurrency:
                r = asyncio.run(run_load(url, payloads, c, a.requests, a.seconds, name))
                results.append(r)
                print(json.dumps(r.row()), flush=True)
        finally:
            server.stop()
    versions = {}
    for package in ("onnxruntime", "litserve", "ray"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    report(results, a, versions, Path(a.out))


def report(results: list[LoadResult], a: argparse.Namespace, versions: dict, out: Path) -> None:
    by = {(r.name, r.concurrency): r for r in results}
    peers = [n for n in NAMES if n != "zhserve" and any(r.name == n for r in results)]
    head = ["concurrency"] + [f"{NAMES[n]} {m}" for n in NAMES if n == "zhserve" or n in peers
                              for m in ("rps", "p50 ms", "p99 ms")]
    head += [f"zhserve / {NAMES[n]}" for n in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in a.concurrency:
        z = by.get(("zhserve", c))
        cells = [str(c)]
        for n in ["zhserve", *peers]:
            r = by.get((n, c))
            cells += [f"{r.throughput:.1f}", f"{r.percentile(50) * 1000:.0f}", f"{r.percentile(99) * 1000:.0f}"] \
                if r else ["", "", ""]
        cells += [f"{z.throughput / by[(n, c)].throughput:.2f}" if z and (n, c) in by and by[(n, c)].throughput
                  else "" for n in peers]
        lines.append("| " + " | ".join(cells) + " |")
    errors = sum(r.errors for r in results)
    print("\n" + "\n".join(lines) + (f"\n\n{errors} failed requests" if errors else ""))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(a, k) for k in ("threads", "max_batch_size", "delay_ms", "requests", "seconds", "texts")}
    out.write_text(json.dumps({"settings": settings, "versions": versions, "runs": [r.row() for r in results]},
                              indent=1))
