"""The /extract pipeline served by LitServe (bench/peers.py): one inference worker; LitServe's dynamic
batching gathers whole requests (up to max_batch_size, waiting at most batch_timeout) and both stages run
on that batch.

python -m bench.peer_litserve --port 8102
"""

from __future__ import annotations

import argparse
from pathlib import Path

import litserve as ls

from bench.peers import Pipeline


class ExtractAPI(ls.LitAPI):
    def __init__(self, model_dir: str, threads: int, max_batch_size: int, delay_ms: float):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=delay_ms / 1000, api_path="/extract")
        self.model_dir, self.threads = Path(model_dir), threads

    def setup(self, device: str) -> None:
        self.pipe = Pipeline(self.model_dir, self.threads, self.max_batch_size)

    def decode_request(self, request: dict) -> str:
        return request["text"]

    def predict(self, texts: list[str]) -> list[dict]:
        return [{"text": t, "triples": triples} for t, triples in zip(texts, self.pipe.extract(texts), strict=True)]

    def encode_response(self, output: dict) -> dict:
        return {"results": [output]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="models")
    p.add_argument("--port", type=int, default=8102)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--delay-ms", type=float, default=2.0)
    a = p.parse_args()
    api = ExtractAPI(str(Path(a.models) / "extract"), a.threads, a.max_batch_size, a.delay_ms)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host="127.0.0.1", port=a.port, num_api_servers=1, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
