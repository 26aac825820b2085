"""Server memory (RSS) after the largest requests the server accepts, for each onnxruntime CPU arena mode,
and the time of a fixed mix of ordinary requests in each mode (the price of giving memory back).

For each mode (`--modes`, default on shrink off) one zhserve process on the model repository:
  baseline   RSS once ready, after a few ordinary requests
  largest    the largest request each endpoint accepts (a /v2 batch to the mlm encoder at the output bound,
             /extract with 64 texts of 512 characters, /qa with 2 passages of 20,000 characters (its 40,000 in
             all), /parse at 40 characters, /v2 extract.subject at 512 tokens), one after another
  after      RSS once they are done: what the process keeps
  mix        seconds for 40 ordinary requests (extract, parse, qa, solve_math), one at a time
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import httpx

from bench.extract import ROOT, free_port, start, stop

ORDINARY = [("extract", {"text": "周杰伦出生于台湾省新北市，代表作有《七里香》。"}),
            ("parse", {"text": "中国的首都是北京，上海是最大的城市"}),
            ("qa", {"question": "周杰伦出生在哪里？",
                    "passage": "周杰伦，1979年1月18日出生于台湾省新北市，华语流行乐男歌手。"}),
            ("solve_math", {"question": "小明有35个苹果，吃了12个，又买了8个，现在有多少个？"})]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def largest(models: Path) -> list[tuple[str, dict]]:
    rng = random.Random(0)
    mlm = json.loads((models / "mlm" / "model.json").read_text())
    vocab, length = mlm["architecture"]["vocab_size"], mlm["stages"]["encoder"]["max_length"]
    hidden = mlm["stages"]["encoder"]["outputs"]["hidden"]["shape"][-1]
    rows = 4_000_000 // (length * hidden)  # the most rows whose outputs stay within max_v2_output_values
    ids = [rng.randrange(5, vocab) for _ in range(rows * length)]
    extract = json.loads((models / "extract" / "model.json").read_text())
    subject_ids = [rng.randrange(5, extract["architecture"]["vocab_size"]) for _ in range(512)]
    hanzi = [chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(20_000)]
    return [("v2/models/mlm/infer", {"inputs": [{"name": "token_ids", "shape": [rows, length], "datatype": "INT64",
                                                 "data": ids}]}),
            ("extract", {"texts": ["".join(rng.sample(hanzi, 512)) for _ in range(64)]}),
            ("qa", {"question": "这是什么？", "passages": ["".join(rng.sample(hanzi, len(hanzi))) for _ in range(2)]}),
            ("parse", {"text": "".join(hanzi[:40])}),
            ("v2/models/extract.subject/infer", {"inputs": [{"name": "token_ids", "shape": [1, 512],
                                                             "datatype": "INT64", "data": subject_ids}]})]


def measure(mode: str, models: Path) -> dict:
    port = free_port()
    proc = start([sys.executable, "-m", "app", "serve", "--port", str(port), "--models", str(models)],
                 {"ZHSERVE_LOG_LEVEL": "warning", "ZHSERVE_CPU_ARENA": mode, "ZHSERVE_REQUEST_TIMEOUT_S": "120"},
                 port)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=300) as client:
            for path, body in ORDINARY * 2:
                client.post(f"{base}/{path}", json=body).raise_for_status()
            baseline, peak, statuses = rss_mb(proc.pid), 0.0, {}
            for path, body in largest(models):
                statuses[path] = client.post(f"{base}/{path}", json=body).status_code
                peak = max(peak, rss_mb(proc.pid))
            after = rss_mb(proc.pid)
            started = time.perf_counter()
            for path, body in ORDINARY * 10:
                client.post(f"{base}/{path}", json=body).raise_for_status()
            mix = time.perf_counter() - started
    finally:
        stop(proc)
    return {"mode": mode, "baseline_mb": round(baseline), "peak_mb": round(peak), "after_mb": round(after),
            "kept_mb": round(after - baseline), "mix_seconds": round(mix, 2), "statuses": statuses}


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="zhserve bench memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--modes", nargs="+", default=["on", "shrink", "off"], choices=["on", "shrink", "off"])
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "memory.json"))
    a = p.parse_args(argv)
    print(f"{os.cpu_count()} CPUs", flush=True)
    rows = []
    for mode in a.modes:
        rows.append(measure(mode, Path(a.models)))
        print(json.dumps(rows[-1]), flush=True)
    first = rows[0]
    print("| arena | baseline MB | peak MB | after MB | kept MB | mix s | mix / first mode |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['baseline_mb']} | {r['peak_mb']} | {r['after_mb']} | {r['kept_mb']} | "
              f"{r['mix_seconds']} | {r['mix_seconds'] / first['mix_seconds']:.2f} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"runs": rows}, indent=1, ensure_ascii=False))
