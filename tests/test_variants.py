"""Export variants: the server's choice by the provider a session really got, the conversions' parity within
stated tolerances, and the quality each shipped variant recorded in model.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.runtime.metrics import Metrics
from app.runtime.repository import ModelRepository
from app.runtime.variants import choose, open_stage, stage_files
from tests.test_shipped_model import MODELS as SHIPPED

# Parity tolerances, as the largest absolute difference from fp32 relative to the largest fp32 magnitude of
# the output: fp16 rounds every value to 11 significant bits; int8 weights carry about 2 decimal digits.
FP16_TOLERANCE, INT8_TOLERANCE = 2e-3, 3e-2

CONFIG = {"stages": {"main": {"file": "main.onnx"}, "gradient": {"file": "gradient.onnx"}},
          "variants": {"int8": {"files": {"main": "main.int8.onnx"}},
                       "fp16": {"files": {"main": "main.fp16.onnx"}},
                       "bogus": {"files": {"main": "x.onnx"}}}}


# -- the choice ---------------------------------------------------------------------------------------------

def test_auto_picks_int8_on_cpu_and_fp16_on_cuda():
    files = stage_files(CONFIG, "main")
    assert files == {"fp32": "main.onnx", "int8": "main.int8.onnx", "fp16": "main.fp16.onnx"}
    assert choose(files, "auto", "cpu") == "int8"
    assert choose(files, "auto", "cuda") == "fp16"


def test_a_setting_forces_a_variant_and_a_missing_one_falls_back_to_fp32():
    files = stage_files(CONFIG, "main")
    assert choose(files, "fp16", "cpu") == "fp16" and choose(files, "fp32", "cuda") == "fp32"
    gradient = stage_files(CONFIG, "gradient")  # no variant lists the gradient stage
    assert gradient == {"fp32": "gradient.onnx"}
    assert choose(gradient, "auto", "cpu") == choose(gradient, "int8", "cpu") == "fp32"
    with pytest.raises(ValueError, match="not one of"):
        choose(files, "int4", "cpu")


def test_a_variant_measured_but_left_out_is_never_served():
    config = {**CONFIG, "variants": {"int8": {"left_out": "not faster on CPU"}}}
    assert choose(stage_files(config, "main"), "auto", "cpu") == "fp32"


class FakeSession:
    def __init__(self, path: Path, providers: list[str]):
        self.path, self.providers = path, providers


def opener(providers: list[str], opened: list[str]):
    def open_file(path: Path) -> FakeSession:
        opened.append(path.name)
        return FakeSession(path, providers)

    return open_file


def test_the_choice_follows_the_provider_the_session_really_got():
    """CUDA expected (get_available_providers lists it) but the session fell back to CPU: reopened with int8."""
    opened: list[str] = []
    session, variant = open_stage(Path("/m"), CONFIG, "main", "auto", "auto", opener(["CPUExecutionProvider"], opened),
                                  guess="cuda")
    assert opened == ["main.fp16.onnx", "main.int8.onnx"] and variant == "int8"
    assert session.path.name == "main.int8.onnx"


def test_a_session_on_cuda_keeps_fp16_and_one_on_cpu_opens_once():
    opened: list[str] = []
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert open_stage(Path("/m"), CONFIG, "main", "auto", "auto", opener(cuda, opened), guess="cuda")[1] == "fp16"
    assert opened == ["main.fp16.onnx"]
    opened.clear()
    assert open_stage(Path("/m"), CONFIG, "main", "auto", "cpu", opener(["CPUExecutionProvider"], opened))[1] == "int8"
    assert opened == ["main.int8.onnx"]


def test_a_forced_variant_is_kept_whatever_the_provider():
    opened: list[str] = []
    _, variant = open_stage(Path("/m"), CONFIG, "main", "fp16", "auto", opener(["CPUExecutionProvider"], opened),
                            guess="cuda")
    assert variant == "fp16" and opened == ["main.fp16.onnx"]


# -- conversions and the repository, on a small real graph ---------------------------------------------------

@pytest.fixture(scope="module")
def tiny_variants(tmp_path_factory) -> Path:
    """A two-layer MLP over embeddings as ONNX, its int8 and fp16 variants, and a model.json listing them."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from training.common.variants import make_fp16, make_int8

    rng = np.random.default_rng(0)
    weights = {"table": rng.standard_normal((50, 32)), "w1": rng.standard_normal((32, 64)) / 6,
               "w2": rng.standard_normal((64, 8)) / 8}
    nodes = [helper.make_node("Gather", ["table", "ids"], ["x"]), helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", 8])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    root = tmp_path_factory.mktemp("variants")
    version = root / "tiny" / "1"
    version.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(version / "main.onnx"))
    make_int8(version / "main.onnx", version / "main.int8.onnx")
    make_fp16(version / "main.onnx", version / "main.fp16.onnx")
    config = {"task": "none", "stages": {"main": {
        "file": "main.onnx", "inputs": {"ids": {"dtype": "int64", "shape": ["batch", "seq"], "bound": 50}},
        "outputs": {"y": {"dtype": "float32", "shape": ["batch", "seq", 8]}}}},
        "variants": {k: {"files": {"main": f"main.{k}.onnx"}} for k in ("int8", "fp16")}}
    (root / "tiny" / "model.json").write_text(json.dumps(config))
    return root


def relative_error(reference: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(got - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("setting, expected", [("auto", "int8"), ("fp32", "fp32"), ("fp16", "fp16")])
def test_the_repository_serves_the_chosen_file_within_tolerance(tiny_variants, setting, expected):
    ids = {"ids": np.random.default_rng(1).integers(0, 50, (4, 9))}
    runs = {}
    for variant in ("fp32", setting):
        repo = ModelRepository(tiny_variants, Metrics(), device="cpu", intra_op_threads=1, variant=variant)
        (handle,) = repo.discover()
        repo.open(handle)
        assert handle.error is None
        runs[variant] = (handle.variants["main"], handle.stages["main"].backend.run(ids)["y"])
    assert runs[setting][0] == expected and handle.describe()["variants"] == {"main": expected}
    error = relative_error(runs["fp32"][1], runs[setting][1])
    assert error <= {"fp32": 0.0, "int8": INT8_TOLERANCE, "fp16": FP16_TOLERANCE}[expected], error
    if expected != "fp32":
        assert error > 0  # really another file


def test_the_setting_is_read_from_the_environment(monkeypatch):
    from app.settings import Settings

    monkeypatch.setenv("ZHSERVE_VARIANT", "fp16")
    assert Settings().variant == "fp16"
    monkeypatch.setenv("ZHSERVE_VARIANT", "int4")
    with pytest.raises(ValueError):
        Settings()


# -- the shipped variants --------------------------------------------------------------------------------------

def shipped_variants():
    for config_path in sorted(SHIPPED.glob("*/model.json")):
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for kind, entry in config.get("variants", {}).items():
            if isinstance(entry, dict) and "files" in entry:
                yield pytest.param(config_path.parent, kind, id=f"{config_path.parent.name}-{kind}")


def test_models_record_what_every_variant_measured():
    """Kept or not, every measured variant has its dev quality, size and CPU speed beside fp32's."""
    measured = 0
    for config_path in sorted(SHIPPED.glob("*/model.json")):
        section = json.loads(config_path.read_text(encoding="utf-8")).get("variants")
        if not section:
            continue
        assert section["fp32"]["dev"] and section["dev_data"] and "rule" in section
        for kind in ("int8", "fp16"):
            entry = section[kind]
            measured += 1
            assert entry["dev"].keys() == section["fp32"]["dev"].keys() and entry["bytes"] and entry["cpu_speedup"]
            assert ("files" in entry) != ("left_out" in entry), entry  # shipped, or the reason it is not
    assert measured >= 6  # qa, extract, math, mlm: int8 and fp16 each


@pytest.mark.parametrize("version_dir, kind", list(shipped_variants()))
def test_a_shipped_variant_keeps_the_rule_it_was_kept_by(version_dir, kind):
    from training.common.variants import MAX_DROP, worst_drop

    section = json.loads((version_dir / "model.json").read_text(encoding="utf-8"))["variants"]
    entry = section[kind]
    assert worst_drop(section["fp32"]["dev"], entry["dev"]) <= MAX_DROP
    if kind == "int8":
        assert min(entry["cpu_speedup"].values()) > 1.0
    version = max((p for p in version_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for stage, name in entry["files"].items():
        assert (version / name).stat().st_size == entry["bytes"][stage]


TEXT = "周杰伦出生于台湾省新北市，毕业于淡江中学，代表作有《七里香》和《晴天》。"


def real_feed(model: str, stage: str, vocab) -> dict[str, np.ndarray] | None:
    """Ids of a real sentence for the stages that read characters (later stages read what earlier ones wrote:
    their variants are covered by the dev measurements)."""
    from app.tasks.qa.decode import question_ids

    if (model, stage) == ("qa", "reader"):
        return {"question_ids": question_ids(vocab, "周杰伦出生在哪里？", 64)[None],
                "passage_ids": vocab.encode(TEXT)[None]}
    if stage in ("encoder", "subject"):
        return {"token_ids": np.array([[vocab.cls_id, *vocab.encode(TEXT), vocab.sep_id]])}
    return None


@pytest.mark.parametrize("version_dir, kind", list(shipped_variants()))
def test_a_shipped_variant_matches_fp32_on_a_real_sentence(version_dir, kind):
    from app.text import CharVocab
    from training.common.variants import cpu_session

    config = json.loads((version_dir / "model.json").read_text(encoding="utf-8"))
    version = max((p for p in version_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    vocab = CharVocab.load(version / config["vocab"])
    checked = 0
    for stage, name in config["variants"][kind]["files"].items():
        feed = real_feed(version_dir.name, stage, vocab)
        if feed is None:
            continue
        reference = cpu_session(version / config["stages"][stage]["file"]).run(None, feed)
        got = cpu_session(version / name).run(None, feed)
        for r, g in zip(reference, got, strict=True):
            error = relative_error(r, g)
            assert 0 < error <= {"int8": INT8_TOLERANCE, "fp16": FP16_TOLERANCE}[kind], (stage, error)
        checked += 1
    assert checked >= 1
