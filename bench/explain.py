"""/explain latency by text length (Integrated Gradients, 50 trapezoid steps, zero baseline), against
PyTorch eager autograd computing the same attributions, measured in the same run.

  server        POST /explain through the real app in-process (httpx ASGI transport: routing, validation,
                batcher, onnxruntime gradient graph, integration, JSON), one request at a time
  ort           the gradient graph alone: one onnxruntime call on the 51 interpolation rows (no HTTP, no queue)
  torch-eager   TripleScore on the served weights, the 51 rows as one batch, torch.autograd.grad, then the same
                integration; torch gets as many threads as onnxruntime (and, as a last column, one thread),
                idle threads waiting passively as onnxruntime's do (OMP_WAIT_POLICY=PASSIVE; --torch-spin
                keeps torch's spinning default, which on a busy 2-core machine costs it seconds per call)

Texts are cut from concatenated dev-split DuIE sentences (a different cut per request); the target is a
3-character subject near the start (subject_span [2, 5]), so the score is log P(subject start) + log P(end).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LENGTHS = (32, 64, 128)
SUBJECT = [2, 5]


def bench_texts(length: int, count: int) -> list[str]:
    """`count` cuts of `length` characters from the dev split's sentences, laid end to end."""
    from training.common.io import read_jsonl
    from training.common.paths import DATA
    from training.common.splits import extract_split

    stream, need = [], length * count
    for name in ("train_part1.json", "train_part2.json"):
        for record in read_jsonl(DATA / "ie" / "duie2" / name):
            if extract_split(record["text"]) == "dev":
                stream.append(record["text"])
                if sum(map(len, stream)) >= need:
                    joined = "".join(stream)
                    return [joined[i * length : (i + 1) * length] for i in range(count)]
    raise SystemExit(f"not enough dev-split text for {count} texts of {length} characters")


def percentiles(seconds: list[float]) -> tuple[float, float]:
    return float(np.percentile(seconds, 50)) * 1000, float(np.percentile(seconds, 90)) * 1000


async def time_server(models: Path, threads: int, texts: dict[int, list[str]], steps: int,
                      warmup: int) -> tuple[dict[int, list[float]], dict[int, list[np.ndarray]]]:
    import httpx

    from app.api.app import create_app
    from app.settings import Settings

    app = create_app(Settings(models=models, intra_op_threads=threads, request_timeout_s=600, log_level="warning"))
    latencies: dict[int, list[float]] = {}
    attributions: dict[int, list[np.ndarray]] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:
            for _ in range(600):  # models load in the background: wait until ready
                body = (await client.get("/readyz")).json()
                if "loading" not in body["models"].values():
                    break
                await asyncio.sleep(0.1)
            if body["models"].get("extract") != "ready":
                raise SystemExit(f"extract model not ready: {body}")

            async def post(text: str) -> dict:
                r = await client.post("/explain", json={"text": text, "target": {"subject_span": SUBJECT},
                                                        "steps": steps})
                if r.status_code != 200:
                    raise SystemExit(f"/explain answered {r.status_code}: {r.text}")
                return r.json()

            for length, batch in texts.items():
                for text in batch[:warmup]:
                    await post(text)
                latencies[length], attributions[length] = [], []
                for text in batch:
                    started = time.perf_counter()
                    body = await post(text)
                    latencies[length].append(time.perf_counter() - started)
                    attributions[length].append(np.array(body["attributions"]))
    return latencies, attributions


class Reference:
    """The same IG outside the server: the ONNX gradient graph called directly, and PyTorch eager."""

    def __init__(self, models: Path, threads: int, steps: int):
        import torch

        from app.runtime.backend import OnnxBackend
        from app.runtime.repository import latest_version
        from app.tasks.explain import quadrature
        from app.text import CharVocab
        from training.extract.export import load_served_net
        from training.extract.gradient import TripleScore

        torch.set_num_threads(threads)
        self.torch = torch
        config = json.loads((models / "extract" / "model.json").read_text())
        version = latest_version(models / "extract")
        self.vocab = CharVocab.load(version / config["vocab"])
        self.table = np.load(version / config["explain"]["embeddings"]).astype(np.float32)
        self.ort = OnnxBackend(version / config["stages"]["gradient"]["file"], "cpu", threads)
        net = load_served_net(version)
        for p in net.parameters():
            p.requires_grad_(False)
        self.net, self.score = net, TripleScore(net).eval()
        self.alphas, self.weights = quadrature(steps, "trapezoid")

    def _rows(self, length: int) -> dict[str, np.ndarray]:
        k = len(self.alphas)
        subject = np.array([SUBJECT[0], SUBJECT[1] - 1], np.int64)  # inclusive end, as the explainer sends it
        return {"mask": np.ones((k, length), np.float32), "subject": np.tile(subject, (k, 1)),
                "object": np.zeros((k, 2), np.int64), "label": np.zeros(k, np.int64),
                "use_object": np.zeros(k, np.float32)}

    def ort_ig(self, text: str) -> np.ndarray:
        from app.tasks.explain import integrate, interpolate

        inputs = self.table[self.vocab.encode(text)]
        baseline = np.zeros_like(inputs)
        out = self.ort.run({"embeddings": interpolate(inputs, baseline, self.alphas), **self._rows(len(text))})
        return integrate(inputs, baseline, self.weights, out["gradient"], out["score"]).attributions

    def torch_ig(self, text: str) -> np.ndarray:
        torch = self.torch
        ids = torch.from_numpy(self.vocab.encode(text))[None]
        with torch.no_grad():
            inputs = self.net.embeddings(ids)[0]  # (T, H)
        alphas = torch.from_numpy(self.alphas).float()
        points = (alphas[:, None, None] * inputs[None]).requires_grad_(True)  # zero baseline
        rows = {k: torch.from_numpy(v) for k, v in self._rows(len(text)).items()}
        scores = self.score(points, rows["mask"], rows["subject"], rows["object"], rows["label"], rows["use_object"])
        (gradients,) = torch.autograd.grad(scores.sum(), points)
        path = torch.tensordot(torch.from_numpy(self.weights).float(), gradients, dims=1)  # (T, H)
        return (inputs * path).sum(-1).numpy()


def time_calls(fn, texts: list[str], warmup: int) -> tuple[list[float], list[np.ndarray]]:
    for text in texts[:warmup]:
        fn(text)
    seconds, results = [], []
    for text in texts:
        started = time.perf_counter()
        results.append(fn(text))
        seconds.append(time.perf_counter() - started)
    return seconds, results


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="zhserve bench explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    p.add_argument("--requests", type=int, default=10, help="timed requests per length (after --warmup more)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="onnxruntime intra-op threads, and torch's (default: one per CPU)")
    p.add_argument("--torch-spin", action="store_true",
                   help="leave torch's OpenMP threads spinning while idle (its default); without it they wait "
                        "passively, as onnxruntime's do here (allow_spinning 0)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "explain.json"))
    a = p.parse_args(argv)
    if not a.torch_spin:  # read when torch's OpenMP runtime starts: before torch is imported
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules:
        print("warning: torch was imported before the bench set OMP_WAIT_POLICY", file=sys.stderr)
    models = Path(a.models)
    texts = {n: bench_texts(n, a.requests) for n in a.lengths}
    load = os.getloadavg()[0]
    print(f"{a.requests} dev-split texts per length {a.lengths}, {a.steps} steps trapezoid, target subject_span "
          f"{SUBJECT}; {os.cpu_count()} CPUs, {a.threads} threads for onnxruntime and torch "
          f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}); "
          f"load average {load:.2f} before the run (other work on the machine competes for the CPU)", flush=True)

    served, served_attr = asyncio.run(time_server(models, a.threads, texts, a.steps, a.warmup))
    ref = Reference(models, a.threads, a.steps)
    rows = []
    for n in a.lengths:
        ort_s, ort_attr = time_calls(ref.ort_ig, texts[n], a.warmup)
        torch_s, torch_attr = time_calls(ref.torch_ig, texts[n], a.warmup)
        # torch on one thread: no thread barriers, which a busy machine makes expensive
        ref.torch.set_num_threads(1)
        torch1_s, _ = time_calls(ref.torch_ig, texts[n], a.warmup)
        ref.torch.set_num_threads(a.threads)
        # the three compute the same attributions (the server's are rounded to 1e-6)
        diff = max(float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-12))
                   for pair in (zip(served_attr[n], torch_attr, strict=True), zip(ort_attr, torch_attr, strict=True))
                   for x, y in pair)
        row = {"length": n, "requests": len(texts[n]), "steps": a.steps}
        for name, seconds in (("server", served[n]), ("ort", ort_s), ("torch", torch_s), ("torch_1thread", torch1_s)):
            p50, p90 = percentiles(seconds)
            row |= {f"{name}_p50_ms": round(p50, 1), f"{name}_p90_ms": round(p90, 1)}
        row["torch_over_server_p50"] = round(row["torch_p50_ms"] / row["server_p50_ms"], 2)
        row["torch_over_ort_p50"] = round(row["torch_p50_ms"] / row["ort_p50_ms"], 2)
        row["max_rel_attribution_diff"] = float(f"{diff:.2e}")
        rows.append(row)
        print(json.dumps(row), flush=True)
    report(rows, a, load, Path(a.out))


def report(rows: list[dict], a, load: float, out: Path) -> None:
    lines = ["| characters | server p50 ms | server p90 ms | ort p50 ms | torch-eager p50 ms | torch-eager p90 ms | "
             "torch / server | torch / ort | torch 1 thread p50 ms |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['length']} | {r['server_p50_ms']:.0f} | {r['server_p90_ms']:.0f} | {r['ort_p50_ms']:.0f} | "
                     f"{r['torch_p50_ms']:.0f} | {r['torch_p90_ms']:.0f} | {r['torch_over_server_p50']:.2f} | "
                     f"{r['torch_over_ort_p50']:.2f} | {r['torch_1thread_p50_ms']:.0f} |")
    print("\n" + "\n".join(lines))
    print(f"({a.requests} requests per length, {a.steps} steps; attributions agree to "
          f"{max(r['max_rel_attribution_diff'] for r in rows):.1e} of their largest value; "
          f"load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": a.threads, "steps": a.steps, "cpus": os.cpu_count(),
                               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                               "load_average_start": load, "rows": rows}, indent=1))
