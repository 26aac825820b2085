"""Shared fixtures (a tiny extractor and a tiny BERT, each trained once per session) and the test tiers.

Markers: `data` needs ../shared/data, `slow` trains or exports a model or runs a shipped one. Tests that use
a trained-here fixture are marked both automatically. The fast tier runs anywhere in under a minute:
    pytest -m "not data and not slow"
"""

from __future__ import annotations

from pathlib import Path

import pytest

from training.common.paths import DATA

DUIE = DATA / "ie" / "duie2"


TRAINED_HERE = {"tiny_run", "tiny_models", "tiny_mlm_run", "tiny_qa"}  # fixtures that train on the shared data


def pytest_configure(config):
    config.addinivalue_line("markers", "data: needs the shared data at ../shared/data (or $ZHSERVE_DATA)")
    config.addinivalue_line("markers", "slow: trains or exports a model, or runs a shipped one")
    if not DUIE.exists() and "not data" not in (config.option.markexpr or ""):
        raise pytest.UsageError(f"the shared data is missing: expected it at {DATA} "
                                '(without it, run the fast tier: pytest -m "not data and not slow")')


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINED_HERE & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """Train a tiny DGCNN (hidden 32, 96 sentences, 2 epochs): checks the pipeline, not quality."""
    from training.extract.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny_run")
    train(TrainConfig(data=[str(DUIE / "train_part1.json")], schema=str(DUIE / "schema.json"), out=str(out),
                      hidden=32, epochs=2, batch_size=16, limit=96, threads=2, device="auto"))
    return out


@pytest.fixture(scope="session")
def tiny_models(tiny_run, tmp_path_factory) -> Path:
    """A model repository holding the tiny extractor, exported to ONNX like the shipped one."""
    from training.extract.export import export

    models = tmp_path_factory.mktemp("models")
    export(tiny_run, models, "extract", [DUIE / "train_part1.json"], command="tests")
    return models


@pytest.fixture(scope="session")
def tiny_mlm_run(tmp_path_factory) -> Path:
    """Pretrain a tiny BERT for a few steps (checks the pipeline, not quality): /segment, /parse and math start here."""
    from training.mlm.train import MLMConfig, train

    run = tmp_path_factory.mktemp("mlm_run")
    train(MLMConfig(out=str(run), hidden=32, layers=2, heads=2, intermediate=64, seq_len=32, short_seq_len=16,
                    batch_size=8, steps=6, max_chars=30_000, vocab_size=3000, eval_every=3, threads=2, device="cpu"))
    return run
