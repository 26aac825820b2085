"""`zhserve train TASK ...` and `zhserve export TASK ...`."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.paths import DATA, ROOT, RUNS

DUIE = DATA / "ie" / "duie2"
DUIE_FILES = [str(DUIE / "train_part1.json"), str(DUIE / "train_part2.json")]


def train_main(task: str, argv: list[str]) -> None:
    if task == "embeddings":
        p = argparse.ArgumentParser(prog="zhserve train embeddings", description="char vocab + word2vec vectors")
        p.add_argument("--out", default=str(RUNS / "embeddings"))
        p.add_argument("--max-chars", type=int, default=20_000_000, help="corpus characters to train on")
        p.add_argument("--task-data", nargs="*", default=DUIE_FILES, help="task texts added (train split only)")
        a = p.parse_args(argv)
        from training.embeddings import main
        from training.extract.data import read_jsonl, split_of

        texts = [r["text"] for f in a.task_data for r in read_jsonl(f) if split_of(r["text"]) == "train"]
        main(Path(a.out), texts, max_chars=a.max_chars)
    elif task == "extract":
        from training.extract.train import RECIPES, TrainConfig, train

        p = argparse.ArgumentParser(prog="zhserve train extract", description="train the DGCNN relation extractor")
        p.add_argument("--data", nargs="+", default=DUIE_FILES)
        p.add_argument("--schema", default=str(DUIE / "schema.json"))
        p.add_argument("--out", default=str(RUNS / "extract"))
        train(TrainConfig(**_config_args(p, TrainConfig, RECIPES, argv)))
    elif task == "mlm":
        import logging

        from training.mlm.train import RECIPES, MLMConfig, train

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        p = argparse.ArgumentParser(prog="zhserve train mlm", description="pretrain the project's BERT masked LM")
        train(MLMConfig(**_config_args(p, MLMConfig, RECIPES, argv)))
    else:
        raise SystemExit(f"zhserve train: unknown task {task!r} (known: embeddings, extract, mlm)")


def _config_args(p: argparse.ArgumentParser, config, recipes: dict, argv: list[str]) -> dict:
    """One flag per config field not already on `p`, plus --recipe presets (explicit flags still win)."""
    from dataclasses import fields

    p.add_argument("--recipe", choices=sorted(recipes), help="preset sizes: cpu (the shipped model) or gpu")
    taken = {a.dest for a in p._actions}
    for f in fields(config):
        if f.name not in taken:
            p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default) if f.default is not None else str,
                           default=f.default)
    recipe = p.parse_known_args(argv)[0].recipe
    if recipe:
        p.set_defaults(**recipes[recipe])
    args = vars(p.parse_args(argv))
    args.pop("recipe")
    return args


def export_main(task: str, argv: list[str]) -> None:
    if task != "extract":
        raise SystemExit(f"zhserve export: unknown task {task!r} (known: extract)")
    p = argparse.ArgumentParser(prog="zhserve export extract",
                                description="tune thresholds, export ONNX, write model.json")
    p.add_argument("--run", default=str(RUNS / "extract"), help="training output folder")
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--name", default="extract")
    p.add_argument("--data", nargs="+", default=DUIE_FILES)
    p.add_argument("--command", default="", help="training command to record in model.json")
    a = p.parse_args(argv)
    from training.extract.export import export

    export(Path(a.run), Path(a.models), a.name, [Path(d) for d in a.data], a.command)


def eval_main(task: str, data: list[Path], models: Path, limit: int = 0, split: str | None = None) -> dict:
    if task == "extract":
        from training.extract.evaluate import evaluate_served

        return evaluate_served(data, models, limit, split)
    raise SystemExit(f"zhserve eval: task {task!r} has no model yet (available: extract)")
