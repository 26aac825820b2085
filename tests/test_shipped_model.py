"""The model shipped in models/ serves real answers: triples from sentences written for this test."""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.runtime.settings import Settings
from tests.test_api import wait_ready

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(models=MODELS))) as c:
        assert wait_ready(c)["models"]["extract"] == "ready"
        yield c


def triples_of(client, text):
    r = client.post("/extract", json={"text": text})
    assert r.status_code == 200
    return {(t["subject"], t["predicate"], t["object"]["@value"]) for t in r.json()["results"][0]["triples"]}


@pytest.mark.parametrize("text, expected", [
    ("《星河彼岸》是作家林远舟创作的一部长篇小说", ("星河彼岸", "作者", "林远舟")),
    ("电影《青石巷》由陈默执导，王小川、李青主演", ("青石巷", "导演", "陈默")),
    ("《夜航船》是歌手周晓岚演唱的一首歌曲，收录在专辑《远方》中", ("夜航船", "歌手", "周晓岚")),
])
def test_shipped_model_extracts_a_correct_triple(client, text, expected):
    assert expected in triples_of(client, text)


def test_shipped_model_records_its_quality():
    config = json.loads((MODELS / "extract" / "model.json").read_text())
    quality = config["quality"]
    assert quality["f1"] > 0 and quality["n"] > 0 and "command" in quality and "split" in quality
    assert config["training"]["data"]
