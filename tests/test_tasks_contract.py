"""The task contract: model.json sections parsed strictly, and which model serves a task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.runtime.repository import ModelHandle
from app.tasks.base import read_config
from app.tasks.extract.task import ExtractConfig
from app.tasks.math.task import MathConfig
from app.tasks.mlm.task import MLMConfig
from app.tasks.qa.task import QAConfig
from app.tasks.registry import TASKS, serving_model

MODELS = Path(__file__).resolve().parent.parent / "models"
SCHEMAS = {"extract": ExtractConfig, "qa": QAConfig, "math": MathConfig, "mlm": MLMConfig}


def handle(name: str, config: dict) -> ModelHandle:
    return ModelHandle(name, config, MODELS / name / "model.json")


def shipped(name: str) -> dict:
    return json.loads((MODELS / name / "model.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_shipped_model_json_parses(name):
    config = shipped(name)
    assert TASKS[config["task"]].kind == config["task"]
    assert read_config(handle(name, config), SCHEMAS[name]).limits


def test_a_misspelt_key_fails_naming_the_file_and_the_key():
    config = shipped("extract")
    config["thresholds"]["subject_strat"] = config["thresholds"].pop("subject_start")
    with pytest.raises(ValueError) as info:
        read_config(handle("extract", config), ExtractConfig)
    message = str(info.value)
    assert str(MODELS / "extract" / "model.json") in message
    assert "thresholds.subject_strat" in message and "thresholds.subject_start" in message


def test_a_missing_limit_fails_naming_it():
    config = shipped("math")
    del config["limits"]["max_beam_size"]
    with pytest.raises(ValueError, match=r"limits\.max_beam_size: Field required"):
        read_config(handle("math", config), MathConfig)


def test_the_model_named_like_the_task_serves_it_else_the_first_by_name():
    models = [handle(n, {"task": t}) for n, t in (("qa-b", "qa"), ("qa-a", "qa"), ("extract", "extract"))]
    assert serving_model(models, "qa").name == "qa-a"
    assert serving_model([*models, handle("qa", {"task": "qa"})], "qa").name == "qa"
    assert serving_model(models, "math") is None
