"""The `zhserve` command: serve, eval, train, export, import, bench (see DESIGN.md, "CLI contract")."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

DEFAULT_MODELS = Path(__file__).resolve().parent.parent / "models"  # as app.settings, without pydantic


def _serve(args: argparse.Namespace) -> None:
    from app.server import run

    run(models=args.models, host=args.host, port=args.port, watch=args.watch)


def _eval(args: argparse.Namespace) -> None:
    from training.cli import eval_main

    models = Path(args.models) if args.models else DEFAULT_MODELS
    words = Path(args.words) if args.words else None
    metrics = eval_main(args.task, [Path(d) for d in args.data], models, args.limit, args.split, words)
    print(json.dumps(metrics, ensure_ascii=False))  # the LAST line of stdout (CLI contract)


def _train(args: argparse.Namespace) -> None:
    from training.cli import train_main

    train_main(args.task, args.rest)


def _export(args: argparse.Namespace) -> None:
    from training.cli import export_main

    export_main(args.task, args.rest)


def _import(args: argparse.Namespace) -> None:
    from training.cli import import_main

    import_main(args.kind, args.rest)


def _bench(args: argparse.Namespace) -> None:
    from bench.run import main as bench_main

    bench_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zhserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="start the HTTP server on a model repository")
    p.add_argument("--models", default=None, help=f"model repository (default: settings, else {DEFAULT_MODELS})")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--watch", action="store_true", default=None,
                   help="poll the repository (every watch_interval_s, default 5): load new models and versions "
                        "live, unload removed folders (setting ZHSERVE_WATCH)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("eval", help="measure a served model on a data file; last stdout line is JSON")
    p.add_argument("task", choices=["extract", "explain", "qa", "math", "segment", "parse"])
    p.add_argument("--data", required=True, nargs="+", help="one or more data files")
    p.add_argument("--limit", type=int, default=0, help="only the first N records")
    p.add_argument("--split", choices=["train", "dev", "test"], default=None,
                   help="only records of this split of the project's md5 split (extract: of the text; "
                        "qa: of the question id; math: of the problem id, dev and test shares of Ape210K valid)")
    p.add_argument("--words", default=None, help="segment: training word list, for OOV recall")
    p.add_argument("--models", default=None)
    p.set_defaults(func=_eval)

    for name, func, text in (("train", _train, "train a model (needs the train extra)"),
                             ("export", _export, "export a trained model to ONNX (needs the train extra)")):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("task")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=func)

    p = sub.add_parser("import", help="bring a model in another format: tf-checkpoint (Google/bert4keras BERT "
                                      "-> Hugging Face folder; needs the tf extra)", add_help=False)
    p.add_argument("kind")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_import)

    p = sub.add_parser("bench", help="load benchmarks (see bench/README)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "httpx"):  # chatter at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
