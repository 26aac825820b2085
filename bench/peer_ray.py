"""The /extract pipeline served by Ray Serve (bench/peers.py): one replica behind Ray Serve's HTTP proxy,
the subject stage and the object stage each behind @serve.batch, so both stages batch rows from concurrent
requests as zhserve's batchers do. One inference thread runs both stages, as in zhserve.

python -m bench.peer_ray --port 8103
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray
from fastapi import FastAPI
from ray import serve

from bench.peers import Pipeline

api = FastAPI()


def deployment(max_batch_size: int, delay_ms: float):
    wait = delay_ms / 1000

    # max_ongoing_requests defaults to 5: far below 64 clients, so it would cap every batch at 5.
    @serve.deployment(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0})
    @serve.ingress(api)
    class Extract:
        def __init__(self, model_dir: str, threads: int):
            self.pipe = Pipeline(Path(model_dir), threads, max_batch_size)
            self.pool = ThreadPoolExecutor(1)  # inference off the replica's event loop, both stages on one thread

        async def run(self, stage: str, rows: list[dict]) -> list[dict]:
            return await asyncio.get_running_loop().run_in_executor(self.pool, self.pipe.run, stage, rows)

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=wait)
        async def subject(self, texts: list[str]) -> list[dict]:
            return await self.run("subject", [self.pipe.subject_row(t) for t in texts])

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=wait)
        async def object(self, rows: list[dict]) -> list[dict]:
            return await self.run("object", rows)

        @api.post("/extract")
        async def extract(self, body: dict) -> dict:
            text = body["text"]
            rows, spans = self.pipe.object_rows(text, await self.subject(text))
            objects = await asyncio.gather(*(self.object(r) for r in rows))
            return {"results": [{"text": text, "triples": self.pipe.triples(text, spans, list(objects))}]}

        @api.get("/readyz")
        async def ready(self) -> dict:
            return {"ready": True}

    return Extract


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="models")
    p.add_argument("--port", type=int, default=8103)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--delay-ms", type=float, default=2.0)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": a.port})
        app = deployment(a.max_batch_size, a.delay_ms).bind(str(Path(a.models).resolve() / "extract"), a.threads)
        serve.run(app, route_prefix="/", blocking=False)
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
