"""A BERT masked LM (the project's own run, or a user's Hugging Face checkpoint folder) -> ONNX encoder
truncated at the layer Perturbed Masking reads, plus vocab.txt and model.json.

encoder.onnx: token_ids (B, T) int64 -> hidden (B, T, H), the hidden states after `layer` layers
([PAD] positions are masked out of attention inside the graph).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.text import CharVocab
from training.common.bert import load_mlm
from training.common.export import write_model_json
from training.common.paths import shown
from training.common.plots import plot_curve

log = logging.getLogger(__name__)


class HiddenAtLayer(nn.Module):
    def __init__(self, bert, layer: int, pad_id: int):
        super().__init__()
        bert.encoder.layer = bert.encoder.layer[:layer]  # later layers are never read: do not run them
        self.bert, self.pad_id = bert.eval(), pad_id

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        mask = (token_ids != self.pad_id).long()
        return self.bert(input_ids=token_ids, attention_mask=mask).last_hidden_state


def export_encoder(model, vocab: CharVocab, layer: int, path: Path) -> float:
    """Write the ONNX encoder; returns the largest |onnxruntime - PyTorch| on a padded batch."""
    import copy

    import onnxruntime as ort

    net = HiddenAtLayer(copy.deepcopy(model.bert), layer, vocab.pad_id).eval()
    limit = model.config.max_position_embeddings
    batch, seq = torch.export.Dim("batch", min=1, max=8192), torch.export.Dim("seq", min=2, max=limit)
    ids = torch.randint(5, len(vocab), (3, 17))
    ids[1, 12:] = vocab.pad_id
    torch.onnx.export(net, (ids,), path, dynamo=True, external_data=False, input_names=["token_ids"],
                      output_names=["hidden"], dynamic_shapes={"token_ids": {0: batch, 1: seq}}, verbose=False)
    with torch.no_grad():
        expected = net(ids).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"token_ids": ids.numpy()})
    keep = (ids != vocab.pad_id).numpy()
    return float(np.abs(got - expected)[keep].max())


@dataclass
class ProbeRules:
    """What /segment and /parse read besides the encoder: the probed layer, the segmentation rule (`weights`
    over the gap features, or the paper's mutual-impact rule when None, joined above `threshold`), and the
    parsing rule: `arc_weights` (reading the WordTagger `tagger`'s guesses when given), or without them the
    paper's rule over the impacts in `orientation`, `root_rule`, `center`."""

    layer: int
    threshold: float
    orientation: str = "head_moves_dependent"
    weights: list[float] | None = None
    root_rule: str = "most_affected"
    center: bool = False
    ngrams: Path | None = None  # corpus statistics to ship beside the encoder
    arc_weights: list[float] | None = None
    tagger: object | None = None


@dataclass
class ExportJob:
    """`zhserve export mlm`: where the encoder comes from, what to tune it on and what to measure it on."""

    run: Path | None  # a `zhserve train mlm` run, or
    hf_model: Path | None  # a Hugging Face BERT folder
    models: Path
    name: str = "mlm"
    layer: int | None = None  # None: tuned, as is the threshold
    threshold: float | None = None
    orientation: str | None = None  # None: fit the learned arc rule
    segment_eval: list[Path] = field(default_factory=list)
    parse_eval: list[Path] = field(default_factory=list)
    segment_limit: int = 0
    parse_limit: int = 0
    words: Path | None = None  # training word list, for OOV recall
    tune_data: Path | None = None
    command: str = ""
    tune_limit: int = 0
    ngrams: Path | None = None


def write_model(model, vocab: CharVocab, models: Path, name: str, rules: ProbeRules, quality: dict,
                training: dict) -> Path:
    from app.tasks.mlm.parse import ARC_FEATURES, ROOT_FEATURES, tag_feature_names
    from app.tasks.mlm.segment import feature_names
    from training.mlm.probe import mutual_only

    model_dir = models / name
    out = model_dir / "1"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    parity = export_encoder(model, vocab, rules.layer, out / "encoder.onnx")
    vocab.save(out / "vocab.txt")
    if rules.ngrams is not None:
        shutil.copyfile(rules.ngrams, out / "ngrams.npz")
    if rules.tagger is not None:
        rules.tagger.save(out / "parse_tagger.npz")
    tag_names = [] if rules.tagger is None else tag_feature_names(rules.tagger.tags)
    hidden = model.config.hidden_size
    limit = model.config.max_position_embeddings - 2
    config = {
        "name": name,
        "task": "mlm",
        "description": "BERT masked LM encoder for Perturbed Masking: /segment and /parse",
        "vocab": "vocab.txt",
        # /segment probes clause by clause, so its texts can be long; /parse probes every pair of characters
        "limits": {"max_length": 1000, "max_parse_length": min(limit, 40)},
        "architecture": {"layers": model.config.num_hidden_layers, "hidden": hidden,
                         "heads": model.config.num_attention_heads, "vocab_size": len(vocab),
                         "max_position_embeddings": model.config.max_position_embeddings,
                         "probe_layer": rules.layer},
        "segment": {"max_clause_length": min(limit, 64), "threshold": rules.threshold,
                    "weights": list(mutual_only(rules.ngrams is not None) if rules.weights is None
                                    else rules.weights),
                    "features": feature_names(rules.ngrams is not None),
                    **({"ngrams": "ngrams.npz"} if rules.ngrams is not None else {}),
                    "rule": "join neighbours i, i+1 when weights . gap_features(i) > threshold "
                            "(app/tasks/mlm/segment.py)"},
        "parse": {"orientation": rules.orientation, "root": rules.root_rule,
                  "center": rules.center,
                  **({"tagger": "parse_tagger.npz", "tags": rules.tagger.tags} if rules.tagger is not None else {}),
                  **({"weights": rules.arc_weights, "features": [*ARC_FEATURES, *tag_names, *ROOT_FEATURES],
                      "rule": "per dependent, softmax over candidate heads and the root of weights . features; "
                              "Eisner over the log-probabilities (app/tasks/mlm/parse.py)"}
                     if rules.arc_weights else {})},
        # CPU: one request already fills the cores, and large padded batches cost more than they share
        # (bench segment: 1024 to 4096 tokens alike, 32768 slower); raise it on a GPU.
        "batching": {"max_batch_size": 512, "max_batch_tokens": 2048, "max_queue_delay_ms": 2.0},
        "stages": {"encoder": {
            "file": "encoder.onnx", "max_length": model.config.max_position_embeddings,
            "inputs": {"token_ids": {"dtype": "int64", "shape": ["batch", "seq"], "bound": len(vocab)}},
            "outputs": {"hidden": {"dtype": "float32", "shape": ["batch", "seq", hidden]}}}},
        "quality": {**quality, "onnx_parity_max_abs_diff": parity},
        "training": training,
    }
    write_model_json(model_dir, config)
    return model_dir


def plot_history(history: list[dict], path: Path) -> None:
    """Training loss and held-out masked-token accuracy against steps."""
    plot_curve(path, [h["step"] for h in history], [h["train_loss"] for h in history],
               [h["masked_accuracy"] for h in history], "step", "training loss (masked positions)",
               "held-out masked-token accuracy", "project BERT masked-LM pretraining")


def export(job: ExportJob) -> Path:
    """Tune what is not given (on UD dev), export, then measure the served model and record it in model.json.
    `job.ngrams`: corpus statistics (zhserve train ngrams) for the segmentation rule, if counted with this
    vocabulary."""
    from app.tasks.mlm.ngrams import NgramStats, vocab_digest
    from training.mlm.evaluate import evaluate_parse, evaluate_segment, read_conllu
    from training.mlm.probe import tune_parsing, tune_segmentation

    run, hf_model, models, ngrams, tune_data, tune_limit = (job.run, job.hf_model, job.models, job.ngrams,
                                                            job.tune_data, job.tune_limit)
    layer, threshold, orientation = job.layer, job.threshold, job.orientation
    model, vocab = load_mlm(hf_model or run)
    stats = NgramStats.load(ngrams) if ngrams is not None and ngrams.exists() else None
    if stats is not None and stats.digest != vocab_digest(vocab.tokens):
        log.warning("%s was counted with another vocabulary: segmentation reads impacts only", ngrams)
        stats = None
    tune_sentences = read_conllu(tune_data)
    tuning: dict = {}
    weights = None
    if layer is None or threshold is None:
        sentences = tune_sentences[: tune_limit or None]
        seg = tune_segmentation(model, vocab, [s.words for s in sentences], stats)
        layer, threshold, weights = seg["best"]["layer"], seg["best"]["threshold"], seg["best"]["weights"]
        tuning["segmentation"] = {"data": shown(tune_data), "n": len(sentences),
                                  **{k: v for k, v in seg["best"].items() if k != "weights"},
                                  "rules_best_threshold": seg["table"]}
    root_rule, center, arc_weights, tagger = "most_affected", False, None, None
    if orientation is None:
        parse = tune_parsing(model, vocab, tune_sentences[: tune_limit or None], layer, stats)
        orientation, root_rule, center = parse["paper"].values()
        arc_weights, tagger = parse.pop("weights"), parse.pop("tagger")
        tuning["parsing"] = {"data": f"sentences of at most 40 characters of {shown(tune_data)}: fitted on those "
                                     "of training/mlm/metrics.py fitting_half, UAS (gold words) on the others; the "
                                     "tagger on the universal POS of every fitting_half sentence",
                             "layer": layer, **parse}
    training: dict = {"source": "Hugging Face checkpoint" if hf_model else "zhserve train mlm", "command": job.command}
    quality: dict = {"probe_tuning": tuning}
    if run and (run / "final.json").exists():
        final = json.loads((run / "final.json").read_text())
        cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
        quality["masked_lm"] = {"split": "held-out corpus and task lines (md5(line) % 200 == 0, "
                                         "training/mlm/data.py is_heldout)", **final}
        training |= {"recipe": {k: v for k, v in cfg.items() if k != "out"},
                     "data": "../shared/data/corpus (all three files) + task texts: DuIE/SKE train split, CMRC 2018 "
                             "train, Math23K, HMWP (Ape210K, segmentation and parsing files left out)"}
    rules = ProbeRules(layer, threshold, orientation, weights, root_rule, center, ngrams if stats is not None else None,
                       arc_weights, tagger)
    model_dir = write_model(model, vocab, models, job.name, rules, quality, training)
    if run and (run / "history.json").exists():
        plot_history(json.loads((run / "history.json").read_text()), model_dir / "training_curve.png")
    config = json.loads((model_dir / "model.json").read_text())
    seg_eval, parse_eval, words_file = job.segment_eval, job.parse_eval, job.words
    seg_limit, parse_limit = job.segment_limit, job.parse_limit
    if seg_eval:
        seg = evaluate_segment(seg_eval, models, seg_limit, words_file)
        config["quality"]["segment"] = {
            **seg, "data": [shown(p) for p in seg_eval],
            "command": f"zhserve eval segment --data {' '.join(shown(p) for p in seg_eval)}"
                       + (f" --words {shown(words_file)}" if words_file else "")
                       + (f" --limit {seg_limit}" if seg_limit else "")}
    if parse_eval:
        parse = evaluate_parse(parse_eval, models, parse_limit)
        config["quality"]["parse"] = {
            **parse, "data": [shown(p) for p in parse_eval],
            "command": f"zhserve eval parse --data {' '.join(shown(p) for p in parse_eval)}"
                       + (f" --limit {parse_limit}" if parse_limit else "")}
    write_model_json(model_dir, config)
    return model_dir
