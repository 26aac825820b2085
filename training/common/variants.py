"""Export variants of a served model: int8 (dynamic quantisation, for CPU) and fp16 (for CUDA) files beside the
fp32 ones, each measured on our dev split, kept only where quality holds (and, for int8, where it is faster).

`zhserve export variants --name NAME` works on a model folder in place: it writes the candidate files, lists
them in model.json "variants" (so ZHSERVE_VARIANT=int8 serves them), measures each variant through the served
task (`zhserve eval`'s code) and the CPU latency of every stage against fp32 in the same run, then deletes the
files of a variant that fails the rule and records why. Gradient stages (/explain) stay fp32: IG's
completeness check needs exact gradients.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.runtime.batcher import TensorSpec
from training.common.export import latest_version
from training.common.paths import DATA, short

log = logging.getLogger(__name__)

KINDS = ("int8", "fp16")
MAX_DROP = 0.005  # a variant is kept when no dev metric falls more than this below fp32's
INT8_OPS = ["MatMul", "Gather"]  # weights x activations and the embedding tables; Conv (ConvInteger) is slow on CPU
SKIPPED_STAGES = ("gradient",)


@dataclass(frozen=True)
class DevEval:
    """One dev measurement of a model: `zhserve eval TASK --data DATA [--split dev]`, the metrics compared."""

    task: str
    data: Path
    split: str | None
    metrics: tuple[str, ...]


DEV: dict[str, list[DevEval]] = {
    "qa": [DevEval("qa", DATA / "qa" / "cmrc2018" / "train.json", "dev", ("em", "f1"))],
    "extract": [DevEval("extract", DATA / "ie" / "duie2" / "train_part1.json", "dev", ("precision", "recall", "f1"))],
    "math": [DevEval("math", DATA / "math" / "ape210k" / "valid.ape.json", "dev", ("accuracy",))],
    "mlm": [DevEval("segment", DATA / "seg" / "ud_zh_gsdsimp" / "dev.conllu", None, ("precision", "recall", "f1")),
            DevEval("parse", DATA / "seg" / "ud_zh_gsdsimp" / "dev.conllu", None, ("uas",))],
}


# -- conversion ---------------------------------------------------------------------------------------------

def make_int8(src: Path, dst: Path) -> None:
    """Dynamic quantisation: int8 weights, activations quantised per run (no calibration data needed)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level, root.level = root.level, logging.WARNING  # the quantiser logs every tensor at INFO on the root logger
    try:
        quantize_dynamic(src, dst, op_types_to_quantize=INT8_OPS, weight_type=QuantType.QInt8,
                         extra_options={"MatMulConstBOnly": True})  # attention's activation x activation stays fp32
    finally:
        root.setLevel(level)


def make_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and arithmetic, fp32 inputs and outputs (keep_io_types), so callers see no change."""
    import onnx
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    # The converter retypes tensors but not Cast targets: a Cast to float inside the graph (masks from ids)
    # would feed float32 into fp16 arithmetic, which onnxruntime refuses at load.
    outputs = {o.name for o in model.graph.output}
    to_float = [n for n in model.graph.node if n.op_type == "Cast"
                and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)]
    for node in to_float:
        if node.output[0] not in outputs:
            next(a for a in node.attribute if a.name == "to").i = onnx.TensorProto.FLOAT16
        else:  # the Cast keep_io_types added for an output that the graph also reads inside: read the fp16 one
            for consumer in model.graph.node:
                if consumer is not node:
                    consumer.input[:] = [node.input[0] if i == node.output[0] else i for i in consumer.input]
    onnx.save(model, str(dst))


CONVERT = {"int8": make_int8, "fp16": make_fp16}


def variant_file(stage_file: str, kind: str) -> str:
    stem, suffix = os.path.splitext(stage_file)
    return f"{stem}.{kind}{suffix}"


# -- parity and latency -------------------------------------------------------------------------------------

def example_batch(spec: dict, batch: int = 16, length: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch shaped like a stage's inputs: ids within their bound, positions within the sequence, floats
    of unit scale."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, d in spec["inputs"].items():
        s = TensorSpec.from_dict(name, d)
        shape = [batch if i == 0 else dim if isinstance(dim, int) else length for i, dim in enumerate(s.shape)]
        if s.dtype == "bool":
            out[name] = np.ones(shape, bool)
        elif s.dtype.startswith("int"):
            out[name] = rng.integers(min(5, (s.bound or length) - 1), s.bound or length, shape).astype(s.dtype)
        else:
            out[name] = rng.standard_normal(shape).astype(s.dtype)
    return out


def cpu_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1  # a shared machine: one core, fair ratios
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity(reference: Path, variant: Path, feed: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest absolute difference per output between the fp32 file and a variant on the same batch."""
    ref = cpu_session(reference)
    names = [o.name for o in ref.get_outputs()]
    got = dict(zip(names, cpu_session(variant).run(names, feed), strict=True))
    return {n: float(np.abs(got[n].astype(np.float64) - r).max()) for n, r in zip(names, ref.run(names, feed),
                                                                                  strict=True)}


def latencies(paths: dict[str, Path], feed: dict[str, np.ndarray], repeats: int = 15) -> dict[str, float]:
    """Median seconds per run of each file on one core; runs interleaved so load on the machine hits all alike."""
    sessions = {k: cpu_session(p) for k, p in paths.items()}
    for s in sessions.values():
        s.run(None, feed)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeats):
        for k, s in sessions.items():
            started = time.perf_counter()
            s.run(None, feed)
            times[k].append(time.perf_counter() - started)
    return {k: statistics.median(v) for k, v in times.items()}


# -- dev quality --------------------------------------------------------------------------------------------

@contextmanager
def serving_variant(kind: str) -> Iterator[None]:
    """Evaluate through the server's own choice: the setting ZHSERVE_VARIANT, for this block only."""
    before = os.environ.get("ZHSERVE_VARIANT")
    os.environ["ZHSERVE_VARIANT"] = kind
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("ZHSERVE_VARIANT", None)
        else:
            os.environ["ZHSERVE_VARIANT"] = before


def dev_quality(task: str, models: Path, kind: str, limit: int) -> dict[str, dict]:
    from training.cli import eval_main

    scores = {}
    with serving_variant(kind):
        for e in DEV[task]:
            result = eval_main(e.task, [e.data], models, limit, e.split)
            scores[e.task] = {"n": result["n"], **{m: round(float(result[m]), 4) for m in e.metrics}}
    return scores


def worst_drop(fp32: dict[str, dict], variant: dict[str, dict]) -> float:
    return max(fp32[t][m] - variant[t][m] for t in fp32 for m in fp32[t] if m != "n")


# -- the command --------------------------------------------------------------------------------------------

def leave_out(entry: dict, version: Path, reason: str) -> None:
    """Delete a variant's files and record why it is not shipped."""
    entry["left_out"] = reason
    for f in entry.pop("files", {}).values():
        (version / f).unlink(missing_ok=True)


def export_variants(models: Path, name: str, limit: int, kinds: tuple[str, ...] = KINDS, command: str = "",
                    not_shipped: tuple[str, ...] = ()) -> dict:
    """Build, measure and keep or drop each variant of models/<name>; returns the model.json "variants".
    `not_shipped`: variants measured and recorded but left out even when they pass (repository size)."""
    model_dir = models / name
    config = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    version = latest_version(model_dir)
    stages = {s: spec for s, spec in config["stages"].items() if s not in SKIPPED_STAGES}
    section: dict = {"rule": f"kept when every dev metric is at most {MAX_DROP} below fp32's and, for int8, the "
                             "CPU latency of every stage is lower (fp16 is for CUDA: its speed is not measured "
                             "here, its quality is measured on the CPU provider)",
                     "parity": "parity_max_abs_diff: largest absolute difference from fp32 per output on a synthetic "
                               "batch of 16 rows (ids within their bound, unit-normal floats, so a later stage's "
                               "figures are on inputs unlike its real ones); tests/test_variants.py checks the "
                               "shipped variants on a real sentence",
                     "command": command, "fp32": {"bytes": {s: (version / spec["file"]).stat().st_size
                                                            for s, spec in stages.items()}}}
    for kind in kinds:
        files = {s: variant_file(spec["file"], kind) for s, spec in stages.items()}
        entry: dict = {"files": files, "bytes": {}, "parity_max_abs_diff": {}, "cpu_speedup": {}}
        for s, spec in stages.items():
            CONVERT[kind](version / spec["file"], version / files[s])
            feed = example_batch(spec, length=min(128, spec.get("max_length", 128)))
            entry["bytes"][s] = (version / files[s]).stat().st_size
            entry["parity_max_abs_diff"][s] = parity(version / spec["file"], version / files[s], feed)
            times = latencies({"fp32": version / spec["file"], kind: version / files[s]}, feed)
            entry["cpu_speedup"][s] = round(times["fp32"] / times[kind], 3)
            log.info("%s/%s %s: %s", name, s, kind, {k: v[s] for k, v in entry.items() if k != "files"})
        section[kind] = entry
    config["variants"] = section
    write_config(model_dir, config)  # the candidates are listed, so the served task can be asked for them

    section["fp32"]["dev"] = dev_quality(config["task"], models, "fp32", limit)
    for kind in kinds:
        entry = section[kind]
        entry["dev"] = dev_quality(config["task"], models, kind, limit)
        drop = worst_drop(section["fp32"]["dev"], entry["dev"])
        slower = kind == "int8" and min(entry["cpu_speedup"].values()) <= 1.0
        if drop > MAX_DROP or slower:
            leave_out(entry, version, f"dev drop {drop:.4f} > {MAX_DROP}" if drop > MAX_DROP
                      else f"not faster on CPU (speed-up {entry['cpu_speedup']})")
        elif kind in not_shipped:
            leave_out(entry, version, "passes the rule; not shipped to keep the repository small")
        log.info("%s %s: dev %s, worst drop %.4f, %s", name, kind, entry["dev"], drop,
                 entry.get("left_out", "kept"))
    section["dev_data"] = [f"{short(e.data)}" + (f" ({e.split} split)" if e.split else "")
                           + (f", at most {limit} records" if limit else "") for e in DEV[config["task"]]]
    config["variants"] = section
    write_config(model_dir, config)
    return section


def write_config(model_dir: Path, config: dict) -> None:
    """model.json only (write_model_json would also restamp the ONNX files: the fp32 files stay untouched)."""
    (model_dir / "model.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
