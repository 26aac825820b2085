"""Live reloads under load: /extract latency, failures, versions and server memory while the model is reloaded.

One `zhserve serve` process on a temporary repository holding the shipped extractor as version 1 (hard links
where the filesystem allows, else copies; models/ is never written). C clients send /extract with test-split
sentences (a built-in list without the shared data) in three phases, all bounded by --requests and --seconds:

  before   --before-seconds of traffic (at most a quarter of the requests)
  during   K reloads one after another: version N+1 is added (copied to N+1.tmp, renamed) and loaded through
           POST /v2/repository/models/extract/load; the phase ends when the last load answers
  after    --after-seconds more (a tenth of the requests is kept for it)

Prints requests and failures (by status), latency p50/p99 per phase and during/before, each reload's duration,
the versions the responses carried in the order the requests were sent, the version regressions (a response
older than one already seen, or than a load already answered, when its request was sent: must be 0), and the
server's peak RSS per phase (both versions are in memory during a swap). The last line is JSON.

    zhserve bench reload [--clients 8] [--reloads 5] [--requests 3000] [--seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from bench.extract import ROOT, free_port, start, stop
from bench.load import run_load

MODEL = "extract"
PHASES = ("before", "during", "after")
FALLBACK_TEXTS = ["《星河彼岸》是作家林远舟创作的一部长篇小说", "电影《青石巷》由陈默执导，王小川、李青主演",
                  "《夜航船》是歌手周晓岚演唱的一首歌曲，收录在专辑《远方》中",
                  "周杰伦出生于台湾省新北市，代表作有《七里香》。",
                  "鲁迅，原名周树人，浙江绍兴人，代表作《狂人日记》《阿Q正传》",
                  "《平凡的世界》是中国作家路遥创作的一部长篇小说",
                  "姚明出生于上海，曾效力于休斯顿火箭队", "北京大学创办于1898年，初名京师大学堂"]


# -- the repository -----------------------------------------------------------------------------------------

def link_tree(source: Path, target: Path) -> None:
    """A copy of a folder as hard links where the filesystem allows (nothing writes through them), else copies."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


def make_repository(models: Path, root: Path) -> Path:
    """root/extract: the shipped model.json and version 1 (the highest shipped version)."""
    shipped = models / MODEL
    version = max((d for d in shipped.iterdir() if d.name.isdigit()), key=lambda d: int(d.name))
    (root / MODEL).mkdir(parents=True)
    shutil.copy(shipped / "model.json", root / MODEL / "model.json")
    link_tree(version, root / MODEL / "1")
    return root / MODEL


def add_version(model: Path, number: int) -> None:
    """Version `number`, a copy of version 1, appearing at once (copied under a .tmp name, then renamed)."""
    staging = model / f"{number}.tmp"
    link_tree(model / "1", staging)
    staging.rename(model / str(number))


def texts(limit: int) -> list[str]:
    from training.common.paths import DATA

    if not (DATA / "ie" / "duie2" / "train_part1.json").exists():
        return FALLBACK_TEXTS
    from bench.extract import bench_texts

    return bench_texts(limit)


# -- memory -------------------------------------------------------------------------------------------------

def rss_bytes(pid: int) -> int:
    try:
        import psutil
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS in /proc/{pid}/status") from None
    return psutil.Process(pid).memory_info().rss


class RssSampler(threading.Thread):
    """The server's RSS every `interval` seconds, with the time of each sample (a thread: the client's event
    loop is busy under load)."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.samples = pid, interval, []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.samples.append((time.perf_counter(), rss_bytes(self.pid)))
            except (OSError, RuntimeError):  # the server exited: the bench reports it
                return
            self.stopped.wait(self.interval)


# -- the load -----------------------------------------------------------------------------------------------

@dataclass
class Sample:
    sent: float
    done: float
    status: int | str  # the HTTP status, or the client error's name
    version: str | None


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    reloads: list[dict] = field(default_factory=list)  # version, status, started, seconds
    marks: dict[str, float] = field(default_factory=dict)  # when each phase began, and "end"


async def drive(base: str, model: Path, payloads: list[dict], a: argparse.Namespace) -> Run:
    run = Run()
    issued = 0
    quota = max(a.clients, a.requests // 4)  # requests the clients may have sent so far; raised phase by phase
    done = False
    gate = asyncio.Condition()
    quota_used = asyncio.Event()
    deadline = time.perf_counter() + a.seconds

    def may_send() -> bool:
        return done or issued < quota

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal issued
        while True:
            async with gate:
                await gate.wait_for(may_send)
                if done:
                    return
                payload = payloads[issued % len(payloads)]
                issued += 1
                if issued >= quota:
                    quota_used.set()
            sent = time.perf_counter()
            try:
                async with session.post(f"{base}/extract", json=payload) as r:
                    body = await r.read()
                    status = r.status
                version = json.loads(body).get("version") if status == 200 else None
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, version = type(exc).__name__, None
            run.samples.append(Sample(sent, time.perf_counter(), status, version))

    async def phase(name: str, new_quota: int, seconds: float | None = None) -> None:
        nonlocal quota
        run.marks[name] = time.perf_counter()
        async with gate:
            quota = new_quota
            quota_used.clear()
            if issued >= quota:
                quota_used.set()
            gate.notify_all()
        if seconds is not None:
            left = max(0.0, min(seconds, deadline - time.perf_counter()))
            try:
                await asyncio.wait_for(quota_used.wait(), left)
            except TimeoutError:
                pass

    async def reload(session: aiohttp.ClientSession, number: int) -> None:
        await asyncio.to_thread(add_version, model, number)
        began = time.perf_counter()
        async with session.post(f"{base}/v2/repository/models/{MODEL}/load") as r:
            body = (await r.read()).decode()
            status = r.status
        run.reloads.append({"version": str(number), "status": status, "started": began,
                            "seconds": time.perf_counter() - began, **({"error": body} if status != 200 else {})})

    timeout = aiohttp.ClientTimeout(total=120)
    async with (aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=a.clients), timeout=timeout) as load,
                aiohttp.ClientSession(timeout=timeout) as control):
        clients = [asyncio.create_task(client(load)) for _ in range(a.clients)]
        await phase("before", quota, a.before_seconds)
        await phase("during", a.requests - max(a.clients, a.requests // 10))
        for number in range(2, a.reloads + 2):
            if time.perf_counter() >= deadline:
                break
            await reload(control, number)
        await phase("after", a.requests, a.after_seconds)
        async with gate:
            done = True
            gate.notify_all()
        await asyncio.gather(*clients)
        run.marks["end"] = time.perf_counter()
    return run


# -- the report ---------------------------------------------------------------------------------------------

def phase_of(t: float, marks: dict[str, float]) -> str:
    return "after" if t >= marks["after"] else "during" if t >= marks["during"] else "before"


def version_runs(samples: list[Sample]) -> list[list]:
    """[version, responses] for each run of one version, the requests in the order they were sent."""
    runs: list[list] = []
    for s in sorted(samples, key=lambda s: s.sent):
        if s.version is None:
            continue
        if runs and runs[-1][0] == s.version:
            runs[-1][1] += 1
        else:
            runs.append([s.version, 1])
    return runs


def regressions(samples: list[Sample], reloads: list[dict]) -> int:
    """Responses whose version is older than one the client already knew of when it sent the request: a
    response that had arrived, or a load that had answered 200."""
    known = sorted([(s.done, int(s.version)) for s in samples if s.version is not None]
                   + [(r["started"] + r["seconds"], int(r["version"])) for r in reloads if r["status"] == 200])
    times, newest = [t for t, _ in known], list(np.maximum.accumulate([v for _, v in known])) if known else []
    count = 0
    for s in samples:
        if s.version is None:
            continue
        i = bisect.bisect_left(times, s.sent)  # everything known strictly before it was sent
        if i and newest[i - 1] > int(s.version):
            count += 1
    return count


def summarize(run: Run, rss: list[tuple[float, int]], a: argparse.Namespace) -> dict:
    phases = {}
    for name in PHASES:
        mine = [s for s in run.samples if phase_of(s.sent, run.marks) == name]
        ok = [s.done - s.sent for s in mine if s.status == 200]
        memory = [b for t, b in rss if phase_of(t, run.marks) == name and t <= run.marks["end"]]
        phases[name] = {"requests": len(mine), "failed": len(mine) - len(ok),
                        "p50_ms": round(float(np.percentile(ok, 50)) * 1000, 1) if ok else None,
                        "p99_ms": round(float(np.percentile(ok, 99)) * 1000, 1) if ok else None,
                        "peak_rss_mb": round(max(memory) / 2**20, 1) if memory else None}

    def ratio(key: str) -> float | None:
        before, during = phases["before"][key], phases["during"][key]
        return round(during / before, 2) if before and during else None

    failures = Counter(str(s.status) for s in run.samples if s.status != 200)
    return {"bench": "reload", "clients": a.clients, "reloads": len(run.reloads),
            "requests": len(run.samples), "failed": sum(failures.values()), "failed_by_status": dict(failures),
            "phases": phases, "p50_during_over_before": ratio("p50_ms"), "p99_during_over_before": ratio("p99_ms"),
            "rss_during_over_before": ratio("peak_rss_mb"),
            "final_rss_mb": round(rss[-1][1] / 2**20, 1) if rss else None,
            "reload_s": [round(r["seconds"], 2) for r in run.reloads],
            "reload_status": [r["status"] for r in run.reloads],
            "versions_in_order": version_runs(run.samples),
            "version_regressions": regressions(run.samples, run.reloads),
            "seconds": round(run.marks["end"] - run.marks["before"], 1), "cpus": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 2)}


def print_report(result: dict) -> None:
    print("| phase | requests | failed | p50 ms | p99 ms | peak RSS MB |\n|---|---|---|---|---|---|")
    for name, p in result["phases"].items():
        print(f"| {name} | {p['requests']} | {p['failed']} | {p['p50_ms']} | {p['p99_ms']} | {p['peak_rss_mb']} |")
    print(f"during / before: p50 {result['p50_during_over_before']}x, p99 {result['p99_during_over_before']}x, "
          f"peak RSS {result['rss_during_over_before']}x; RSS at the end {result['final_rss_mb']} MB")
    print(f"requests {result['requests']}, failed {result['failed']} {result['failed_by_status'] or ''}")
    print(f"reloads (s): {result['reload_s']} (statuses {result['reload_status']})")
    print("versions, in the order the requests were sent: "
          + " -> ".join(f"{v} ({n})" for v, n in result["versions_in_order"])
          + f"; regressions {result['version_regressions']}")
    print(f"{result['seconds']} s of load, {result['cpus']} CPUs, load average {result['load_average']}")


def measure(a: argparse.Namespace) -> dict:
    payloads = [{"text": t} for t in texts(a.texts)]
    with tempfile.TemporaryDirectory(prefix="zhserve-reload-") as tmp:
        model = make_repository(Path(a.models), Path(tmp) / "models")
        port = free_port()
        env = {"ZHSERVE_LOG_LEVEL": "warning", "ZHSERVE_INTRA_OP_THREADS": str(a.threads),
               "OMP_NUM_THREADS": str(a.threads), "ZHSERVE_CONFIG": str(Path(tmp) / "absent.toml")}
        proc = start([sys.executable, "-m", "app", "serve", "--models", str(model.parent), "--host", "127.0.0.1",
                      "--port", str(port)], env, port)
        sampler = RssSampler(proc.pid)
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(run_load(f"{base}/extract", payloads[:16], a.clients, 4 * a.clients, 30))  # warm-up
            sampler.start()
            run = asyncio.run(drive(base, model, payloads, a))
        finally:
            sampler.stopped.set()
            stop(proc)
    return summarize(run, sampler.samples, a)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="zhserve bench reload", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(ROOT / "models"), help="read only: its extract model is copied")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients sending /extract")
    p.add_argument("--reloads", type=int, default=5, help="reloads, one after another")
    p.add_argument("--requests", type=int, default=3000, help="at most this many /extract requests in all")
    p.add_argument("--seconds", type=float, default=120.0, help="at most this long (a reload running ends first)")
    p.add_argument("--before-seconds", type=float, default=5.0)
    p.add_argument("--after-seconds", type=float, default=3.0)
    p.add_argument("--texts", type=int, default=512, help="distinct test-split sentences to send")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per session")
    a = p.parse_args(argv)
    if a.clients < 1 or a.reloads < 0 or a.requests < 1:
        p.error("--clients and --requests must be at least 1, --reloads at least 0")
    return a


def main(argv: list[str]) -> None:
    result = measure(parse(argv))
    print_report(result)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1:])
