"""Render the Grafana dashboard's panels to a PNG from a real run, without Grafana.

Starts zhserve on the bundled models and a real Prometheus (Debian's `prometheus` package) that
scrapes it, drives traffic through phases of rising concurrency (with some invalid requests and
a burst beyond the queue limit, so the error panels have data), then evaluates every panel's
PromQL over the run with Prometheus' range API and draws them with matplotlib.

    python deploy/dashboard_demo.py --minutes 3 --out deploy/dashboard.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.extract import bench_texts, free_port, start  # noqa: E402
from bench.load import run_load  # noqa: E402

BOARD = ROOT / "deploy" / "grafana" / "dashboards" / "zhserve.json"


def start_prometheus(target: str, workdir: Path, port: int) -> subprocess.Popen:
    config = workdir / "prometheus.yml"
    config.write_text(f"global: {{scrape_interval: 2s}}\nscrape_configs:\n"
                      f"  - job_name: zhserve\n    static_configs: [{{targets: ['{target}']}}]\n")
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    return subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def traffic(url: str, texts: list[str], seconds: float) -> None:
    good = [{"text": t} for t in texts]
    burst = [{"texts": texts[i : i + 8]} for i in range(0, 256, 8)]  # 128 x 8 rows: beyond the queue limit
    invalid = [{"text": ""}, {"text": "长" * 600}] + good[:20]
    phases = [(1, good), (8, good), (32, good), (64, good), (128, burst), (8, invalid)]
    for concurrency, payloads in phases:
        await run_load(url, payloads, concurrency, 100_000, seconds / len(phases))


def render(prometheus: str, start_s: float, end_s: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in json.loads(BOARD.read_text())["panels"] if "DCGM" not in p["targets"][0]["expr"]]
    cols, rows = 2, (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, cols, figsize=(14, 2.6 * rows), dpi=90, squeeze=False)
    step = 5
    for ax, panel in zip(axes.flat, panels, strict=False):
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "20s")
            r = httpx.get(f"{prometheus}/api/v1/query_range",
                          params={"query": expr, "start": start_s, "end": end_s, "step": step}, timeout=30)
            for series in r.json()["data"]["result"]:
                values = [(float(t) - start_s, float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf")]
                if not values:
                    continue
                legend = target["legendFormat"]
                for key, value in series["metric"].items():
                    legend = legend.replace("{{" + key + "}}", value)
                ax.plot(*zip(*values, strict=True), label=legend[:40], linewidth=1.2)
        ax.set_title(panel["title"], fontsize=10)
        unit = panel["fieldConfig"]["defaults"]["unit"]
        ax.set_ylabel({"s": "seconds", "reqps": "per second", "bytes": "bytes", "percentunit": "ratio"}.get(unit, unit),
                      fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left", ncol=2)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("seconds into the run", fontsize=8)
    fig.suptitle("zhserve dashboard panels, evaluated by Prometheus over a real run (bundled /extract model, CPU)")
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(out)
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--out", default=str(ROOT / "deploy" / "dashboard.png"))
    a = p.parse_args()
    port, prom_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = start([sys.executable, "-m", "app", "serve", "--models", a.models, "--port", str(port)],
                       {"ZHSERVE_MAX_QUEUE_ROWS": "256", "ZHSERVE_LOG_LEVEL": "warning"}, port)
        prometheus = start_prometheus(f"127.0.0.1:{port}", Path(tmp), prom_port)
        try:
            time.sleep(5)
            started = time.time()
            asyncio.run(traffic(f"http://127.0.0.1:{port}/extract", bench_texts(256), a.minutes * 60))
            time.sleep(6)  # one more scrape after the last phase
            render(f"http://127.0.0.1:{prom_port}", started - 4, time.time(), Path(a.out))
        finally:
            prometheus.terminate()
            server.terminate()


if __name__ == "__main__":
    main()
