"""Best reader checkpoint -> no-answer threshold, dev/test quality, ONNX, model.json.

The graph: question_ids (B, 64) and passage_ids (B, T) -> probs (B, T, 2), sigmoid start/end pointers.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from app.tasks.qa.decode import question_ids
from app.text import CharVocab
from training.common.export import fold_pretrained, write_model_json
from training.common.paths import DATA, portable_recipe, short
from training.common.plots import plot_curve
from training.common.splits import qa_split
from training.qa.data import Question, load
from training.qa.evaluate import TorchReader, best_answers, score
from training.qa.gradient import export_gradient, gradient_stage_spec, ig_terms
from training.qa.model import DGCNNReader, ReaderConfig, ReaderStage

log = logging.getLogger(__name__)

MAX_LENGTH = 20_000  # characters per passage; read in windows, so only a bound on one request's work
MAX_TOTAL_LENGTH = 40_000  # characters a request reads in all: within the default deadline on 2 CPU cores
MAX_PASSAGES = 32  # WebQA gives 20 passages a question
CMRC_TRIAL = DATA / "qa" / "cmrc2018" / "trial.json"
SAMPLES = [DATA / "qa" / "webqa_sogou_samples" / "WebQA_sample.json",
           DATA / "qa" / "webqa_sogou_samples" / "SogouQA_sample.json"]


def load_reader(checkpoint: Path) -> tuple[DGCNNReader, dict]:
    """The net with any frozen pretrained table folded into its trainable embedding, and the checkpoint's
    reading settings."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    net = DGCNNReader(ReaderConfig(**ckpt["config"]))
    net.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    reading = {k: ckpt[k] for k in ("window", "stride", "max_answer")}
    return fold_pretrained(net).eval(), reading


def load_served_reader(version: Path) -> DGCNNReader:
    """The PyTorch net holding the weights of a served version's reader.onnx (for the gradient graph and eager
    baselines; the model folder keeps no training checkpoint). Named initializers carry their parameter names;
    the linear layers' matrices are stored transposed and unnamed, in the order the forward pass uses them
    (query before key: the same shape)."""
    import onnx
    from onnx import numpy_helper

    config = json.loads((version.parent / "model.json").read_text(encoding="utf-8"))
    net = DGCNNReader(ReaderConfig(**config["architecture"]))
    state = net.state_dict()
    graph = onnx.load(str(version / config["stages"]["reader"]["file"])).graph
    found, unnamed = {}, []
    for init in graph.initializer:
        value = torch.from_numpy(numpy_helper.to_array(init).copy())
        if init.name.startswith("net."):
            found[init.name[4:]] = value
        elif value.dim() == 2:
            unnamed.append(value.T)
    linears = [n for n in ("question_pool", "fuse", "query", "key", "fuse_attention", "pointer")
               if f"{n}.weight" not in found]
    for name, value in zip(linears, unnamed, strict=True):
        found[f"{name}.weight"] = value
    net.load_state_dict({k: v.reshape(state[k].shape) for k, v in found.items()})
    return net.eval()


EXPLAIN = {"steps": 50, "max_steps": 200}  # the passage limit is the reader's window


def gradient_parity(net: DGCNNReader, path: Path) -> float:
    """Largest absolute difference between the exported gradient graph and torch autograd's IG terms."""
    import onnxruntime as ort

    from training.qa.gradient import INPUTS, example_inputs

    inputs = example_inputs(net, 3, 40)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: x.numpy() for n, x in zip(INPUTS, inputs, strict=True)})
    ref = ig_terms(net)(*inputs)
    return max(float(np.abs(g - r.detach().numpy()).max()) for g, r in zip(got, ref, strict=True))


def add_gradient(net: DGCNNReader, out_dir: Path, config: dict) -> float:
    """gradient.onnx into a version folder, its stage and the "explain" section into `config`; its parity."""
    export_gradient(net, out_dir / "gradient.onnx")
    config["stages"]["gradient"] = gradient_stage_spec(net.config.question_length, net.config.vocab_size,
                                                       net.config.max_len)
    config["explain"] = {**EXPLAIN, "max_length": config["reading"]["window"]}
    return gradient_parity(net, out_dir / "gradient.onnx")


def export_served_gradient(models: Path, name: str) -> float:
    """The gradient graph of an already served reader (weights from its reader.onnx); model.json gains the
    stage and the "explain" section. reader.onnx is left as it is."""
    from training.common.export import latest_version, onnx_metadata, stamp_onnx

    version = latest_version(models / name)
    net = load_served_reader(version)
    config = json.loads((models / name / "model.json").read_text(encoding="utf-8"))
    diff = add_gradient(net, version, config)
    config.setdefault("quality", {})["gradient_parity_max_abs_diff"] = diff
    stamp_onnx(version / "gradient.onnx", onnx_metadata(config))
    (models / name / "model.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n",
                                              encoding="utf-8")
    log.info("gradient.onnx: parity with torch autograd %.2e", diff)
    return diff


def unanswerable(questions: list[Question], seed: int = 0) -> list[Question]:
    """Each question paired with another question's passage (a different one): no answer expected."""
    rng = random.Random(seed)
    passages = list(dict.fromkeys(q.passages[0] for q in questions))
    out = []
    for q in questions:
        other = rng.choice(passages)
        while other == q.passages[0] and len(passages) > 1:
            other = rng.choice(passages)
        out.append(Question(q.id + "-unanswerable", q.question, [other], [[]]))
    return out


def tune_threshold(reader: TorchReader, dev: list[Question]) -> tuple[float, dict, dict]:
    """The no-answer threshold with the best mean F1 over dev questions with their own passage and the same
    questions with another passage (half the cases have no answer); what it does there; and dev's scores
    when always answering (from the same reading of dev)."""
    mixed = dev + unanswerable(dev)
    candidates = reader.candidates(mixed)
    golds = [q.gold for q in mixed]
    scores = sorted({round(c[0].score, 4) for c in candidates if c})
    grid = [0.0] + [scores[int(i * (len(scores) - 1) / 100)] for i in range(101)]
    results = {t: score(best_answers(candidates, t), golds) for t in grid}
    best = max(grid, key=lambda t: results[t]["f1"])
    n = len(dev)
    answerable = score(best_answers(candidates[:n], best), golds[:n])
    refused = sum(a is None for a in best_answers(candidates[n:], best)) / max(1, n)
    always = score(best_answers(candidates[:n]), golds[:n])
    return best, {"mixed": results[best], "answerable": answerable, "unanswerable_refused": round(refused, 4)}, always


def export_onnx(net: DGCNNReader, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=2, max=net.config.max_len)
    q = torch.randint(5, net.config.vocab_size, (3, net.config.question_length))
    p = torch.randint(5, net.config.vocab_size, (3, 17))
    torch.onnx.export(ReaderStage(net).eval(), (q, p), path, dynamo=True, external_data=False,
                      input_names=["question_ids", "passage_ids"], output_names=["probs"],
                      dynamic_shapes={"question_ids": {0: batch}, "passage_ids": {0: batch, 1: seq}}, verbose=False)


def parity(net: DGCNNReader, path: Path, vocab: CharVocab, questions: list[Question], window: int) -> float:
    import onnxruntime as ort

    texts = [q.passages[0][:window] for q in questions]
    qs = np.stack([question_ids(vocab, q.question, net.config.question_length) for q in questions])
    ps = np.zeros((len(texts), max(len(t) for t in texts)), np.int64)
    for i, t in enumerate(texts):
        ps[i, : len(t)] = vocab.encode(t)
    with torch.no_grad():
        ref = torch.sigmoid(net(torch.from_numpy(qs), torch.from_numpy(ps))).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {"question_ids": qs, "passage_ids": ps})
    mask = ps > 0
    return float(np.abs(probs - ref)[mask].max())


def load_encoder_reader(run: Path):
    """(EncoderReader, its word-piece tokenizer, reading settings) of a `zhserve train qa --encoder` run."""
    from app.text.subword import SubwordTokenizer
    from training.qa.encoder_reader import from_checkpoint

    ckpt = torch.load(run / "best.pt", map_location="cpu", weights_only=False)
    net = from_checkpoint(ckpt["config"])
    net.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    return net.eval(), SubwordTokenizer.load(run / "tokenizer.json"), {k: ckpt[k] for k in ("window", "stride",
                                                                                           "max_answer")}


def export(run: Path, models: Path, name: str, data: list[Path], command: str = "", limit: int = 0) -> Path:
    """`limit`: measure on the first N dev and test questions only (quick checks)."""
    if (run / "tokenizer.json").exists():  # a --encoder run
        from training.qa.encoder_reader import EncoderTorchReader

        net, tokenizer, reading = load_encoder_reader(run)
        reader = EncoderTorchReader(net, tokenizer, reading["window"], reading["stride"], reading["max_answer"])
    else:
        vocab = CharVocab.load(run / "vocab.txt")
        net, reading = load_reader(run / "best.pt")
        reader = TorchReader(net, vocab, reading["window"], reading["stride"], reading["max_answer"])
    dev = [q for path in data for q in load(path) if qa_split(q.id) == "dev" and q.gold][: limit or None]
    threshold, tuning, dev_always = tune_threshold(reader, dev)
    log.info("no-answer threshold %.4f: %s", threshold, tuning)
    test = load(CMRC_TRIAL)[: limit or None]
    test_candidates = reader.candidates(test)
    # CMRC promises an answer in the passage: scored as `zhserve eval qa` asks, without the no-answer option
    test_scores = score(best_answers(test_candidates), [q.gold for q in test])
    test_refusing = score(best_answers(test_candidates, threshold), [q.gold for q in test])
    log.info("CMRC 2018 trial: %s (with the no-answer threshold: %s)", test_scores, test_refusing)
    samples = {}
    for path in SAMPLES:
        if path.exists():
            qs = load(path)
            samples[path.stem] = {"n": len(qs), "no_answer_questions": sum(not q.gold for q in qs),
                                  **score(best_answers(reader.candidates(qs), threshold), [q.gold for q in qs])}
    log.info("multi-passage samples: %s", samples)

    model_dir = models / name
    out_dir = model_dir / "1"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (run / "tokenizer.json").exists():
        from training.qa import encoder_reader

        encoder_reader.export_onnx(net, out_dir / "reader.onnx")
        shutil.copy(run / "tokenizer.json", out_dir / "tokenizer.json")
        max_diff = encoder_reader.parity(net, out_dir / "reader.onnx", tokenizer, test[:16], reading["window"])
    else:
        export_onnx(net, out_dir / "reader.onnx")
        shutil.copy(run / "vocab.txt", out_dir / "vocab.txt")
        max_diff = parity(net, out_dir / "reader.onnx", vocab, test[:16], reading["window"])
    log.info("onnx parity: max abs diff %.2e", max_diff)

    history = json.loads((run / "history.json").read_text()) if (run / "history.json").exists() else []
    recipe = json.loads((run / "train_config.json").read_text()) if (run / "train_config.json").exists() else {}
    recipe = portable_recipe(recipe, ("data", "out", "embeddings", "encoder"))
    if history:
        plot_curve(model_dir / "training_curve.png", [h["epoch"] for h in history], [h["loss"] for h in history],
                   [h.get("f1", float("nan")) for h in history], "epoch", "training loss",
                   "dev F1 (400 questions)", f"{'encoder' if (run / 'tokenizer.json').exists() else 'DGCNN'} reader: "
                   "training loss and dev F1", (0, 1))
    data_names = [short(p) for p in data]
    encoded = (run / "tokenizer.json").exists()
    sections = encoder_sections(net, reading, threshold) if encoded else dgcnn_sections(net, reading, threshold)
    config = {
        "name": name,
        "task": "qa",
        **sections,
        # Windows are 256 characters: a handful per batch keeps padding and per-batch latency small on CPU.
        "batching": {"max_batch_size": 32, "max_batch_tokens": 4096, "max_queue_delay_ms": 2.0},
        "quality": {
            "split": "test: CMRC 2018 trial set (1,002 questions; never trained on)",
            "n": len(test), **test_scores,
            "with_no_answer_threshold": test_refusing,
            "metric": "CMRC 2018 EM and F1 (punctuation removed, Chinese characters one token each, F1 from the "
                      "longest common subsequence, best over the gold answers), asked with allow_no_answer false "
                      "as CMRC promises an answer; with_no_answer_threshold: the same answers when null is "
                      "allowed (a null scores 0)",
            "command": "zhserve eval qa --data ../shared/data/qa/cmrc2018/trial.json",
            "dev": {"n": len(dev), "split": "10% of CMRC 2018 train by md5(question id)", **dev_always,
                    "no_answer_tuning": tuning},
            "multi_passage_samples": samples,
            "onnx_parity_max_abs_diff": max_diff,
        },
        "training": {
            "data": data_names,
            "split": "train: 90% of the questions by md5(id); dev: 10% (checkpoints, no-answer threshold)",
            "command": command,
            "recipe": recipe,
            "epochs_run": len(history),
            "best_dev_during_training": max(history, key=lambda h: h.get("em", 0) + h.get("f1", 0), default=None),
            "embeddings": f"fine-tuned from the encoder {recipe.get('encoder')}" if encoded else
                          "word2vec skip-gram character vectors trained on ../shared/data/corpus "
                          "(zhserve train embeddings)",
        },
    }
    if not encoded:  # the gradient graph is built over the DGCNN reader's own embedding tables
        config["quality"]["gradient_parity_max_abs_diff"] = add_gradient(net, out_dir, config)
    write_model_json(model_dir, config)
    return model_dir


def dgcnn_sections(net: DGCNNReader, reading: dict, threshold: float) -> dict:
    """The model.json sections of the DGCNN reader: characters, question and window ids apart."""
    f32, i64 = "float32", "int64"
    return {
        "description": "DGCNN reading comprehension: question + passage windows -> start/end pointers, "
                       "answers voted across passages, no-answer by threshold",
        "vocab": "vocab.txt",
        "limits": {"max_length": MAX_LENGTH, "max_total_length": MAX_TOTAL_LENGTH,
                   "max_question_length": net.config.question_length,
                   "max_passages": MAX_PASSAGES},
        "architecture": net.config.to_dict(),
        "reading": {**reading, "question_length": net.config.question_length, "no_answer_threshold": threshold},
        "stages": {"reader": {"file": "reader.onnx", "max_length": net.config.max_len,
                              "inputs": {"passage_ids": {"dtype": i64, "shape": ["batch", "seq"],
                                                         "bound": net.config.vocab_size},
                                         "question_ids": {"dtype": i64,
                                                          "shape": ["batch", net.config.question_length],
                                                          "bound": net.config.vocab_size}},
                              "outputs": {"probs": {"dtype": f32, "shape": ["batch", "seq", 2]}}}},
    }


def encoder_sections(net, reading: dict, threshold: float) -> dict:
    """The model.json sections that differ for a reader on a pretrained encoder: word-piece rows of
    [CLS] question [SEP] window [SEP] (token_ids, type_ids), the question limit in characters such that its
    pieces always fit (a character is at most one piece)."""
    c = net.config
    f32, i64 = "float32", "int64"
    return {
        "description": f"reading comprehension on a pretrained {c.encoder['model_type']} encoder: [CLS] question "
                       "[SEP] passage window [SEP] -> start/end pointers put back on characters, answers voted "
                       "across passages, no-answer by threshold",
        "tokenizer": "wordpiece", "vocab": "tokenizer.json",
        "limits": {"max_length": MAX_LENGTH, "max_total_length": MAX_TOTAL_LENGTH,
                   "max_question_length": c.question_tokens - 2, "max_passages": MAX_PASSAGES},
        "architecture": {"reader": "pretrained encoder + sigmoid start/end pointers", **c.encoder,
                         "question_tokens": c.question_tokens, "max_tokens": c.max_tokens},
        "reading": {**reading, "question_length": c.question_tokens, "no_answer_threshold": threshold},
        "stages": {"reader": {"file": "reader.onnx", "max_length": c.max_tokens,
                              "inputs": {"token_ids": {"dtype": i64, "shape": ["batch", "seq"],
                                                       "bound": c.encoder["vocab_size"]},
                                         "type_ids": {"dtype": i64, "shape": ["batch", "seq"],
                                                      "bound": c.encoder_config.get("type_vocab_size", 2)}},
                              "outputs": {"probs": {"dtype": f32, "shape": ["batch", "seq", 2]}}}},
    }
