"""`zhserve import tf-checkpoint`: a tiny checkpoint in Google's naming, written here by TensorFlow (in a
subprocess, as Google's and bert4keras's code would write it: tf.compat.v1 variables and a Saver, with Adam
slots and global_step beside), imported through the CLI, loaded by transformers and compared with a numpy
BERT run on the same weights. The name mapping's refusals are checked on the same weights in memory."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.common.tf_import import CheckpointError, to_state_dict

ROOT = Path(__file__).resolve().parent.parent
LAYERS, HIDDEN, HEADS, INTERMEDIATE, POSITIONS = 2, 32, 4, 64, 64
TEXT = "我爱北京天安门 hello world"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"我爱北京天安门", "hello", "wor", "##ld", "##s", "!"]

needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                              reason="TensorFlow is not installed (pip install '.[tf]')")

WRITER = """
import sys
import numpy as np
import tensorflow as tf

weights = np.load(sys.argv[1])
with tf.Graph().as_default() as graph:
    variables = {name: tf.compat.v1.Variable(weights[name]) for name in weights.files}
    saver = tf.compat.v1.train.Saver(var_list=variables)
    with tf.compat.v1.Session(graph=graph) as session:
        session.run(tf.compat.v1.global_variables_initializer())
        saver.save(session, sys.argv[2], write_meta_graph=False)
"""


def google_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """A random tiny BERT in Google's variable names and layouts (kernels (in, out)), with both heads."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.normal(0, 0.2, shape).astype(np.float32)  # noqa: E731
    w = {"bert/embeddings/word_embeddings": normal(len(VOCAB), HIDDEN),
         "bert/embeddings/position_embeddings": normal(POSITIONS, HIDDEN),
         "bert/embeddings/token_type_embeddings": normal(2, HIDDEN),
         "bert/embeddings/LayerNorm/gamma": 1 + normal(HIDDEN), "bert/embeddings/LayerNorm/beta": normal(HIDDEN)}
    for i in range(LAYERS):
        p = f"bert/encoder/layer_{i}/"
        for name in ("attention/self/query", "attention/self/key", "attention/self/value", "attention/output/dense"):
            w[p + name + "/kernel"], w[p + name + "/bias"] = normal(HIDDEN, HIDDEN), normal(HIDDEN)
        w[p + "intermediate/dense/kernel"], w[p + "intermediate/dense/bias"] = normal(HIDDEN, INTERMEDIATE), normal(
            INTERMEDIATE)
        w[p + "output/dense/kernel"], w[p + "output/dense/bias"] = normal(INTERMEDIATE, HIDDEN), normal(HIDDEN)
        for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
            w[p + norm + "/gamma"], w[p + norm + "/beta"] = 1 + normal(HIDDEN), normal(HIDDEN)
    w |= {"bert/pooler/dense/kernel": normal(HIDDEN, HIDDEN), "bert/pooler/dense/bias": normal(HIDDEN),
          "cls/predictions/transform/dense/kernel": normal(HIDDEN, HIDDEN),
          "cls/predictions/transform/dense/bias": normal(HIDDEN),
          "cls/predictions/transform/LayerNorm/gamma": 1 + normal(HIDDEN),
          "cls/predictions/transform/LayerNorm/beta": normal(HIDDEN),
          "cls/predictions/output_bias": normal(len(VOCAB)),
          "cls/seq_relationship/output_weights": normal(2, HIDDEN), "cls/seq_relationship/output_bias": normal(2)}
    return w


def reference(w: dict[str, np.ndarray], ids: np.ndarray, types: np.ndarray):
    """Google's BERT forward in numpy on the Google-named weights: (last hidden, MLM logits, NSP logits)."""
    erf = np.vectorize(math.erf)
    gelu = lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2)))  # noqa: E731

    def norm(x, name):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * w[name + "/gamma"] + w[name + "/beta"]

    def dense(x, name):
        return x @ w[name + "/kernel"] + w[name + "/bias"]

    x = (w["bert/embeddings/word_embeddings"][ids] + w["bert/embeddings/position_embeddings"][: len(ids)]
         + w["bert/embeddings/token_type_embeddings"][types])
    x = norm(x, "bert/embeddings/LayerNorm")
    d = HIDDEN // HEADS
    for i in range(LAYERS):
        p = f"bert/encoder/layer_{i}/"
        q, k, v = (dense(x, p + f"attention/self/{n}").reshape(len(ids), HEADS, d).transpose(1, 0, 2)
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        context = (scores / scores.sum(-1, keepdims=True) @ v).transpose(1, 0, 2).reshape(len(ids), HIDDEN)
        x = norm(dense(context, p + "attention/output/dense") + x, p + "attention/output/LayerNorm")
        x = norm(dense(gelu(dense(x, p + "intermediate/dense")), p + "output/dense") + x, p + "output/LayerNorm")
    h = norm(gelu(dense(x, "cls/predictions/transform/dense")), "cls/predictions/transform/LayerNorm")
    mlm = h @ w["bert/embeddings/word_embeddings"].T + w["cls/predictions/output_bias"]
    pooled = np.tanh(dense(x[0], "bert/pooler/dense"))
    nsp = pooled @ w["cls/seq_relationship/output_weights"].T + w["cls/seq_relationship/output_bias"]
    return x, mlm, nsp


def write_checkpoint(folder: Path, weights: dict[str, np.ndarray]) -> None:
    folder.mkdir()
    saved = dict(weights)
    # what a training run leaves beside the weights: Adam slots per variable, and the step counter
    saved |= {f"{name}/adam_m": np.zeros_like(v) for name, v in list(weights.items())[:3]}
    saved |= {f"{name}/adam_v": np.zeros_like(v) for name, v in list(weights.items())[:3]}
    saved["global_step"] = np.array(1000, dtype=np.int64)
    np.savez(folder / "weights.npz", **saved)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", WRITER, str(folder / "weights.npz"), str(folder / "bert_model.ckpt")],
                   check=True, env=env, timeout=600)
    (folder / "weights.npz").unlink()
    config = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
              "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": INTERMEDIATE,
              "max_position_embeddings": POSITIONS, "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
              "type_vocab_size": 2, "vocab_size": len(VOCAB)}
    (folder / "bert_config.json").write_text(json.dumps(config))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    """The checkpoint written by TensorFlow, imported through the CLI (in a subprocess, as a user runs it)."""
    tmp_path = tmp_path_factory.mktemp("tf_import")
    write_checkpoint(tmp_path / "google", google_weights())
    assert (tmp_path / "google" / "bert_model.ckpt.index").exists()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "app", "import", "tf-checkpoint", str(tmp_path / "google"),
                           "--out", str(tmp_path / "hf")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "hf"


@needs_tf
def test_a_tensorflow_checkpoint_imports_and_computes_what_google_bert_computes(imported):
    import torch
    from transformers import AutoTokenizer, BertForPreTraining

    weights = google_weights()
    tokenizer = AutoTokenizer.from_pretrained(imported)
    assert tokenizer.is_fast
    encoded = tokenizer(TEXT, "我爱", return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens == ["[CLS]", *"我爱北京天安门", "hello", "wor", "##ld", "[SEP]", "我", "爱", "[SEP]"]
    model = BertForPreTraining.from_pretrained(imported).eval()
    ids, types = np.array(encoded["input_ids"]), np.array(encoded["token_type_ids"])
    with torch.no_grad():
        out = model(torch.tensor(ids[None]), token_type_ids=torch.tensor(types[None]), output_hidden_states=True)
    hidden, mlm, nsp = reference(weights, ids, types)
    assert np.abs(out.hidden_states[-1][0].numpy() - hidden).max() < 1e-4
    assert np.abs(out.prediction_logits[0].numpy() - mlm).max() < 1e-4
    assert np.abs(out.seq_relationship_logits[0].numpy() - nsp).max() < 1e-4


@needs_tf
@pytest.mark.data
@pytest.mark.slow
def test_the_imported_folder_is_an_encoder_for_export_mlm(imported, tmp_path):
    """`zhserve export mlm --encoder` (the old --hf-model) on the imported folder, served by /segment."""
    from fastapi.testclient import TestClient

    from app.api.app import create_app
    from app.cli import main
    from app.settings import Settings
    from tests.test_api import wait_ready
    from training.common.encoder import load_encoder

    load_encoder(imported)  # the --encoder checks: config, fast tokenizer, [PAD] = 0, weights
    models = tmp_path / "models"
    main(["export", "mlm", "--encoder", str(imported), "--models", str(models), "--layer", "1", "--threshold", "0.1",
          "--orientation", "head_moves_dependent", "--segment-eval", "--parse-eval", "--ngrams", ""])
    config = json.loads((models / "mlm" / "model.json").read_text())
    assert config["architecture"]["hidden"] == HIDDEN and config["quality"]["onnx_parity_max_abs_diff"] < 1e-4
    with TestClient(create_app(Settings(models=models))) as client:
        assert wait_ready(client)["models"]["mlm"] == "ready"
        r = client.post("/segment", json={"text": "我爱北京天安门"})
        assert r.status_code == 200 and "".join(r.json()["words"]) == "我爱北京天安门"


def test_the_mapping_keeps_what_it_knows_and_drops_optimizer_state():
    weights = google_weights()
    state, kind = to_state_dict(weights | {"global_step": np.array(3), "bert/pooler/dense/kernel/adam_m": np.zeros(1)},
                                LAYERS)
    assert kind == "BertForPreTraining"
    assert state["bert.encoder.layer.1.attention.self.query.weight"].shape == (HIDDEN, HIDDEN)
    np.testing.assert_array_equal(state["bert.encoder.layer.0.intermediate.dense.weight"],
                                  weights["bert/encoder/layer_0/intermediate/dense/kernel"].T)
    np.testing.assert_array_equal(state["cls.seq_relationship.weight"], weights["cls/seq_relationship/output_weights"])
    encoder_only = {k: v for k, v in weights.items() if k.startswith("bert/")}
    state, kind = to_state_dict(encoder_only, LAYERS)
    assert kind == "BertModel" and "embeddings.word_embeddings.weight" in state and "pooler.dense.bias" in state
    no_nsp = {k: v for k, v in weights.items() if not k.startswith("cls/seq_relationship")}
    state, kind = to_state_dict(no_nsp, LAYERS)
    assert kind == "BertForMaskedLM" and not any(k.startswith("bert.pooler") for k in state)


@pytest.mark.parametrize("change, named", [
    (lambda w: w | {"bert/encoder/layer_0/attention/self/qkv/kernel": np.zeros(1)},
     "bert/encoder/layer_0/attention/self/qkv/kernel"),
    (lambda w: w | {"bert/encoder/layer_2/output/dense/bias": np.zeros(HIDDEN)}, "says 2 layers"),
    (lambda w: {k: v for k, v in w.items() if k != "bert/encoder/layer_1/output/LayerNorm/beta"},
     "missing variables: bert/encoder/layer_1/output/LayerNorm/beta"),
    (lambda w: {k: v for k, v in w.items() if k != "cls/predictions/output_bias"},
     "masked-LM head incomplete: missing cls/predictions/output_bias"),
])
def test_unknown_or_missing_variables_are_refused_by_name(change, named):
    with pytest.raises(CheckpointError, match=named.replace("/", "/")):
        to_state_dict(change(google_weights()), LAYERS)
