"""Shared fixtures: the shared data, and a tiny extractor trained and exported once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.paths import DATA

DUIE = DATA / "ie" / "duie2"


def pytest_configure(config):
    if not DUIE.exists():
        raise pytest.UsageError(f"the shared data is missing: expected it at {DATA}")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """Train a tiny DGCNN (hidden 32, 96 sentences, 2 epochs): checks the pipeline, not quality."""
    from training.extract.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny_run")
    train(TrainConfig(data=[str(DUIE / "train_part1.json")], schema=str(DUIE / "schema.json"), out=str(out),
                      hidden=32, epochs=2, batch_size=16, limit=96, threads=2))
    return out


@pytest.fixture(scope="session")
def tiny_models(tiny_run, tmp_path_factory) -> Path:
    """A model repository holding the tiny extractor, exported to ONNX like the shipped one."""
    from training.extract.export import export

    models = tmp_path_factory.mktemp("models")
    export(tiny_run, models, "extract", [DUIE / "train_part1.json"], command="tests")
    return models
