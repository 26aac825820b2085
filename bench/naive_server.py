"""Baseline (c): the naive server a team writes first: PyTorch eager, one request at a time, no batching.

python -m bench.naive_server --model-dir models/extract --port 8101
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from app.tasks.extract.decode import Thresholds
from app.tasks.extract.schema import Schema
from app.text import CharVocab
from training.extract.evaluate import TorchPredictor
from training.extract.export import load_served_net


class Body(BaseModel):
    text: str


def create_app(version_dir: Path, thresholds: Thresholds) -> FastAPI:
    net = load_served_net(version_dir)
    vocab = CharVocab.load(version_dir / "vocab.txt")
    schema = Schema.load(version_dir / "schema.jsonl")
    lock = asyncio.Lock()
    app = FastAPI()

    def predict(text: str) -> list[dict]:
        return TorchPredictor(net, vocab, schema).predict([text], thresholds)[0]  # fresh: no cache across requests

    @app.post("/extract")
    async def extract(body: Body) -> dict:
        async with lock:  # one model, one request at a time, as such servers usually do
            return {"results": [{"text": body.text, "triples": await asyncio.to_thread(predict, body.text)}]}

    @app.get("/readyz")
    async def ready() -> dict:
        return {"ready": True}

    return app


def main() -> None:
    import json

    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", default="models/extract")
    p.add_argument("--port", type=int, default=8101)
    a = p.parse_args()
    model_dir = Path(a.model_dir)
    config = json.loads((model_dir / "model.json").read_text())
    version = max((d for d in model_dir.iterdir() if d.name.isdigit()), key=lambda d: int(d.name))
    uvicorn.run(create_app(version, Thresholds(**config["thresholds"])), host="127.0.0.1", port=a.port,
                log_level="warning")


if __name__ == "__main__":
    main()
