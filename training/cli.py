"""`zhserve train TASK ...`, `zhserve export TASK ...` and `zhserve eval TASK ...`: one table of subcommands each.

Logging is configured once, by app/cli.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from training.common.paths import DATA, ROOT, RUNS

DUIE = DATA / "ie" / "duie2"
DUIE_FILES = [str(DUIE / "train_part1.json"), str(DUIE / "train_part2.json")]
SEG = DATA / "seg"
MODELS = str(ROOT / "models")


def _config_args(p: argparse.ArgumentParser, config, recipes: dict, argv: list[str], base: dict | None = None) -> dict:
    """One flag per config field not already on `p`, plus --recipe presets over `base` defaults (explicit flags
    still win). A --device this host lacks is refused here (DeviceError)."""
    p.add_argument("--recipe", choices=sorted(recipes), help="preset sizes: cpu (the shipped model) or gpu")
    taken = {a.dest for a in p._actions}
    for f in fields(config):
        if f.name not in taken:
            p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default) if f.default is not None else str,
                           default=f.default)
    p.set_defaults(**(base or {}))
    recipe = p.parse_known_args(argv)[0].recipe
    if recipe:
        p.set_defaults(**recipes[recipe])
    args = vars(p.parse_args(argv))
    args.pop("recipe")
    if "device" in args:  # refused now, not after the data has loaded
        from training.common.device import pick_device

        pick_device(args["device"], quiet=True)
    return args


def _trainer_args(p: argparse.ArgumentParser, config, recipes: dict, encoder_recipes: dict, argv: list[str],
                  encoder_defaults: dict | None = None) -> dict:
    """_config_args, where --encoder DIR brings its own recipes (and fine-tuning defaults)."""
    if any(a == "--encoder" or a.startswith("--encoder=") for a in argv):
        return _config_args(p, config, encoder_recipes, argv, encoder_defaults)
    return _config_args(p, config, recipes, argv)


# -- train --------------------------------------------------------------------------------------------------

def train_embeddings(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="zhserve train embeddings", description="char vocab + word2vec vectors")
    p.add_argument("--out", default=str(RUNS / "embeddings"))
    p.add_argument("--max-chars", type=int, default=20_000_000, help="corpus characters to train on")
    p.add_argument("--task-data", nargs="*", default=DUIE_FILES, help="task texts added (train split only)")
    a = p.parse_args(argv)
    from training.common.embeddings import main
    from training.common.io import read_jsonl
    from training.common.splits import extract_split

    texts = [r["text"] for f in a.task_data for r in read_jsonl(f) if extract_split(r["text"]) == "train"]
    main(Path(a.out), texts, max_chars=a.max_chars)


def train_ngrams(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="zhserve train ngrams", description="corpus n-gram statistics for /segment")
    p.add_argument("--stream", default=str(RUNS / "mlm" / "train.npy"), help="written by zhserve train mlm")
    p.add_argument("--vocab", default=str(RUNS / "mlm" / "vocab.txt"))
    p.add_argument("--out", default=str(RUNS / "ngrams" / "ngrams.npz"))
    p.add_argument("--min-count", type=int, default=5, help="rarer contexts are left out")
    a = p.parse_args(argv)
    from training.mlm.ngrams import main

    main(Path(a.stream), Path(a.vocab), Path(a.out), a.min_count)


def train_math_reranker(argv: list[str]) -> None:
    from training.math.data import APE_VALID

    p = argparse.ArgumentParser(prog="zhserve train math-reranker",
                                description="fit the /solve_math answer reranker on the served solver's beams")
    p.add_argument("--models", default=MODELS)
    p.add_argument("--name", default="math")
    p.add_argument("--data", default=str(APE_VALID), help="Ape210K valid: fitted on our train share")
    p.add_argument("--beam-size", type=int, default=8)
    p.add_argument("--out", default=str(RUNS / "math_rerank"), help="where the decoded beams are kept")
    a = p.parse_args(argv)
    from training.math.rerank import main

    command = " ".join(["zhserve train math-reranker", *argv])
    main(Path(a.models), a.name, Path(a.data), a.beam_size, Path(a.out), command)


def train_extract(argv: list[str]) -> None:
    from training.extract.train import ENCODER_RECIPES, RECIPES, TrainConfig, train

    p = argparse.ArgumentParser(prog="zhserve train extract", description="train the relation extractor: the DGCNN, "
                                "or a pretrained encoder with --encoder DIR (a local Hugging Face BERT-family folder)")
    p.add_argument("--data", nargs="+", default=DUIE_FILES)
    p.add_argument("--schema", default=str(DUIE / "schema.json"))
    p.add_argument("--out", default=str(RUNS / "extract"))
    p.add_argument("--extra-train", nargs="*", default=[], help="JSON lines used for training only (e.g. SKE 2019)")
    train(TrainConfig(**_trainer_args(p, TrainConfig, RECIPES, ENCODER_RECIPES, argv)))


def qa_config(argv: list[str]):
    """The TrainConfig `zhserve train qa ARGV` trains with (--encoder brings its own defaults and recipes)."""
    from training.qa.train import CMRC_TRAIN, ENCODER_DEFAULTS, ENCODER_RECIPES, RECIPES, TrainConfig

    p = argparse.ArgumentParser(prog="zhserve train qa", description="train the DGCNN reading-comprehension model, "
                                "or fine-tune a pretrained encoder (--encoder DIR) as the reader")
    p.add_argument("--data", nargs="+", default=[str(CMRC_TRAIN)], help="SQuAD/CMRC JSON (our split by id)")
    p.add_argument("--out", default=str(RUNS / "qa"))
    p.add_argument("--encoder", default="", help="a local Hugging Face BERT-family folder with a fast tokenizer "
                                                 "(its own recipes and fine-tuning defaults apply)")
    return TrainConfig(**_trainer_args(p, TrainConfig, RECIPES, ENCODER_RECIPES, argv, ENCODER_DEFAULTS))


def train_qa(argv: list[str]) -> None:
    from training.qa.train import train

    train(qa_config(argv))


def math_config(argv: list[str]):
    """The MathConfig `zhserve train math ARGV` trains with (--encoder brings its own defaults and recipes)."""
    from training.math.train import ENCODER_DEFAULTS, ENCODER_RECIPES, RECIPES, MathConfig

    p = argparse.ArgumentParser(prog="zhserve train math",
                                description="fine-tune the project's BERT (or --encoder DIR, a Hugging Face BERT "
                                            "folder) as a UniLM seq2seq math solver")
    p.add_argument("--encoder", default="", help="a local Hugging Face BERT folder with a fast tokenizer, "
                                                 "fine-tuned instead of --init (its own recipes and defaults apply)")
    return MathConfig(**_trainer_args(p, MathConfig, RECIPES, ENCODER_RECIPES, argv, ENCODER_DEFAULTS))


def train_math(argv: list[str]) -> None:
    from training.math.train import train

    train(math_config(argv))


def train_mlm(argv: list[str]) -> None:
    from training.mlm.train import RECIPES, MLMConfig, train

    p = argparse.ArgumentParser(prog="zhserve train mlm", description="pretrain the project's BERT masked LM")
    train(MLMConfig(**_config_args(p, MLMConfig, RECIPES, argv)))


TRAIN: dict[str, Callable[[list[str]], None]] = {
    "embeddings": train_embeddings, "ngrams": train_ngrams, "extract": train_extract, "qa": train_qa,
    "mlm": train_mlm, "math": train_math, "math-reranker": train_math_reranker}


# -- export -------------------------------------------------------------------------------------------------

def _export_args(prog: str, description: str, run: str, name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--run", default=str(RUNS / run), help="training output folder")
    p.add_argument("--models", default=MODELS)
    p.add_argument("--name", default=name)
    p.add_argument("--command", default="", help="training command to record in model.json")
    return p


def export_extract(argv: list[str]) -> None:
    p = _export_args("zhserve export extract", "tune thresholds, export ONNX, write model.json", "extract", "extract")
    p.add_argument("--data", nargs="+", default=DUIE_FILES)
    a = p.parse_args(argv)
    from training.extract.export import export

    export(Path(a.run), Path(a.models), a.name, [Path(d) for d in a.data], a.command)


def export_qa(argv: list[str]) -> None:
    from training.qa.train import CMRC_TRAIN

    p = _export_args("zhserve export qa", "tune the no-answer threshold, measure, export ONNX, write model.json",
                     "qa", "qa")
    p.add_argument("--data", nargs="+", default=[str(CMRC_TRAIN)], help="the training data (its dev split is used)")
    p.add_argument("--limit", type=int, default=0, help="tune and measure on the first N dev and test questions only")
    a = p.parse_args(argv)
    from training.qa.export import export

    export(Path(a.run), Path(a.models), a.name, [Path(d) for d in a.data], a.command, a.limit)


def export_math(argv: list[str]) -> None:
    from training.math.data import APE_VALID

    p = _export_args("zhserve export math", "math run (best.pt) -> ONNX decoder + model.json, measured on our "
                     "Ape210K dev and test shares", "math", "math")
    p.add_argument("--eval-data", default=str(APE_VALID))
    p.add_argument("--eval-limit", type=int, default=0, help="measure on the first N problems of each share only")
    a = p.parse_args(argv)
    from training.math.export import export

    export(Path(a.run), Path(a.models), a.name, Path(a.eval_data), a.eval_limit, a.command)


def export_mlm(argv: list[str]) -> None:
    p = _export_args("zhserve export mlm", "BERT masked LM -> ONNX encoder for Perturbed Masking (/segment, "
                     "/parse), tuned on UD dev and measured on PKU gold", "mlm", "mlm")
    p.add_argument("--encoder", "--hf-model", dest="encoder",
                   help="a local Hugging Face BERT folder (config.json, weights, vocab.txt or a fast tokenizer; "
                        "--hf-model is the old name); replaces --run")
    p.add_argument("--layer", type=int, help="layer whose hidden states are probed (default: tuned)")
    p.add_argument("--threshold", type=float, help="segmentation join threshold (default: tuned)")
    p.add_argument("--orientation", choices=["head_moves_dependent", "dependent_moves_head"],
                   help="parse by the paper's rule over the impacts in this orientation (default: fit the "
                        "learned arc rule on UD dev)")
    p.add_argument("--tune-data", default=str(SEG / "ud_zh_gsdsimp" / "dev.conllu"))
    p.add_argument("--tune-limit", type=int, default=0, help="tune on the first N sentences only (quick checks)")
    p.add_argument("--segment-eval", nargs="*", default=[str(SEG / "sighan2005" / "pku_test_gold.utf8")])
    p.add_argument("--segment-limit", type=int, default=0)
    p.add_argument("--words", default=str(SEG / "sighan2005" / "pku_training_words.utf8"),
                   help="training word list for OOV recall")
    p.add_argument("--parse-eval", nargs="*", default=[str(SEG / "ud_zh_gsdsimp" / "dev.conllu")])
    p.add_argument("--parse-limit", type=int, default=0)
    p.add_argument("--ngrams", default=str(RUNS / "ngrams" / "ngrams.npz"),
                   help="corpus n-gram statistics for /segment and /parse (zhserve train ngrams); skipped if absent")
    a = p.parse_args(argv)
    from training.mlm.export import ExportJob, export

    path = lambda value: Path(value) if value else None  # noqa: E731
    export(ExportJob(
        run=None if a.encoder else Path(a.run), hf_model=path(a.encoder), models=Path(a.models), name=a.name,
        layer=a.layer, threshold=a.threshold, orientation=a.orientation,
        segment_eval=[Path(d) for d in a.segment_eval], parse_eval=[Path(d) for d in a.parse_eval],
        segment_limit=a.segment_limit, parse_limit=a.parse_limit, words=path(a.words), tune_data=Path(a.tune_data),
        command=a.command, tune_limit=a.tune_limit, ngrams=path(a.ngrams)))


def export_qa_gradient(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="zhserve export qa-gradient",
                                description="the /explain gradient graph of a served reader (weights from its ONNX)")
    p.add_argument("--models", default=MODELS)
    p.add_argument("--name", default="qa")
    a = p.parse_args(argv)
    from training.qa.export import export_served_gradient

    export_served_gradient(Path(a.models), a.name)


def export_variants(argv: list[str]) -> None:
    from training.common.variants import KINDS

    p = argparse.ArgumentParser(prog="zhserve export variants",
                                description="int8 (CPU) and fp16 (CUDA) files of a served model, measured on our dev "
                                            "split against fp32 and kept where quality holds")
    p.add_argument("--models", default=MODELS, help="model repository (measure into a copy: files are written)")
    p.add_argument("--name", required=True)
    p.add_argument("--limit", type=int, default=200, help="dev records measured per eval")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--not-shipped", nargs="*", choices=KINDS, default=[],
                   help="measured and recorded, but no file kept even when they pass (repository size)")
    a = p.parse_args(argv)
    from training.common.variants import export_variants as export

    export(Path(a.models), a.name, a.limit, tuple(a.kinds), " ".join(["zhserve export variants", *argv]),
           tuple(a.not_shipped))


EXPORT: dict[str, Callable[[list[str]], None]] = {
    "extract": export_extract, "qa": export_qa, "math": export_math, "mlm": export_mlm,
    "qa-gradient": export_qa_gradient, "variants": export_variants}


# -- import -------------------------------------------------------------------------------------------------

def import_tf_checkpoint(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="zhserve import tf-checkpoint",
                                description="a Google BERT / bert4keras TensorFlow checkpoint folder (checkpoint, "
                                            "bert_config.json, vocab.txt) -> a Hugging Face BERT folder with a fast "
                                            "tokenizer, for --encoder (needs the tf extra)")
    p.add_argument("folder", help="folder holding bert_model.ckpt.* (or one other checkpoint), bert_config.json, "
                                  "vocab.txt")
    p.add_argument("--out", required=True, help="the Hugging Face folder to write")
    p.add_argument("--cased", action="store_true", help="keep letter case (Google's Chinese BERT lower-cases)")
    a = p.parse_args(argv)
    from training.common.tf_import import CheckpointError, import_checkpoint

    try:
        import_checkpoint(Path(a.folder), Path(a.out), lowercase=not a.cased)
    except CheckpointError as exc:
        raise SystemExit(f"zhserve import tf-checkpoint: {exc}") from None


IMPORT: dict[str, Callable[[list[str]], None]] = {"tf-checkpoint": import_tf_checkpoint}


# -- eval ---------------------------------------------------------------------------------------------------

def eval_extract(data, models, limit, split, words):
    from training.extract.evaluate import evaluate_served

    return evaluate_served(data, models, limit, split)


def eval_qa(data, models, limit, split, words):
    from training.qa.evaluate import evaluate_served

    return evaluate_served(data, models, limit, split)


def eval_math(data, models, limit, split, words):
    from training.math.evaluate import evaluate_served

    return evaluate_served(data, models, limit, split)


def eval_segment(data, models, limit, split, words):
    from training.mlm.evaluate import evaluate_segment

    return evaluate_segment(data, models, limit, words)


def eval_parse(data, models, limit, split, words):
    from training.mlm.evaluate import evaluate_parse

    return evaluate_parse(data, models, limit)


def eval_explain(data, models, limit, split, words):
    """/explain on the extract model: completeness and faithfulness of its attributions."""
    from training.extract.explain_eval import evaluate_explain

    return evaluate_explain(data, models, limit or 100, split)


EVAL = {"extract": eval_extract, "qa": eval_qa, "math": eval_math, "segment": eval_segment, "parse": eval_parse,
        "explain": eval_explain}


def _pick(table: dict, command: str, task: str):
    if task not in table:
        raise SystemExit(f"zhserve {command}: unknown task {task!r} (known: {', '.join(table)})")
    return table[task]


def train_main(task: str, argv: list[str]) -> None:
    from training.common.device import DeviceError
    from training.common.encoder import EncoderError

    try:
        _pick(TRAIN, "train", task)(argv)
    except (EncoderError, DeviceError) as exc:  # a folder that cannot serve, a --device not here: the reason
        raise SystemExit(f"zhserve train {task}: {exc}") from None


def export_main(task: str, argv: list[str]) -> None:
    from training.common.encoder import EncoderError

    try:
        _pick(EXPORT, "export", task)(argv)
    except EncoderError as exc:
        raise SystemExit(f"zhserve export {task}: {exc}") from None


def import_main(kind: str, argv: list[str]) -> None:
    _pick(IMPORT, "import", kind)(argv)


def eval_main(task: str, data: list[Path], models: Path, limit: int = 0, split: str | None = None,
              words: Path | None = None) -> dict:
    return _pick(EVAL, "eval", task)(data, models, limit, split, words)
