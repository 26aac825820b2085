"""The KServe v2 tensor codec: request tensors -> batcher rows -> response tensors, and its 400s."""

from __future__ import annotations

import time

import pytest

from app.api.v2.codec import decode_inputs, infer, tensor_metadata
from app.runtime.batcher import Batcher, BatchLimits, TensorSpec
from app.runtime.errors import BadRequest
from app.runtime.metrics import Metrics

INPUTS = [TensorSpec("token_ids", "int64", ("batch", "seq")), TensorSpec("mask", "float32", ("batch", "seq"))]
OUTPUTS = [TensorSpec("probs", "float32", ("batch", "seq", 2))]


class Doubler:
    def run(self, inputs):
        x = inputs["token_ids"].astype("float32") * inputs["mask"]
        return {"probs": x[..., None].repeat(2, axis=-1) * 2}


def tensor(name, shape, data, datatype="INT64"):
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def test_metadata_marks_variable_axes():
    assert tensor_metadata(INPUTS)[0] == {"name": "token_ids", "datatype": "INT64", "shape": [-1, -1]}


def test_rows_are_cut_along_the_batch_axis():
    rows = decode_inputs([tensor("token_ids", [2, 3], [1, 2, 3, 4, 5, 6]),
                          tensor("mask", [2, 3], [[1, 1, 1], [1, 1, 0]], "FP32")], INPUTS)
    assert [r["token_ids"].tolist() for r in rows] == [[1, 2, 3], [4, 5, 6]]
    assert rows[1]["mask"].dtype.name == "float32"


@pytest.mark.parametrize("inputs, message", [
    ([tensor("token_ids", [1, 2], [1, 2])], "missing input(s) ['mask']"),
    ([tensor("token_ids", [1, 2], [1, 2]), tensor("mask", [1, 2], [1, 1], "FP32"), tensor("x", [1], [1])],
     "unknown input(s) ['x']"),
    ([tensor("token_ids", [1, 2], [1, 2]), tensor("mask", [1, 2], [1, 1], "INT64")], "datatype INT64"),
    ([tensor("token_ids", [1, 3], [1, 2]), tensor("mask", [1, 3], [1, 1, 1], "FP32")], "2 values for shape"),
    ([tensor("token_ids", [2], [1, 2]), tensor("mask", [1, 2], [1, 1], "FP32")], "has 1 axes"),
    ([tensor("token_ids", [1, 2], [1, 2]), tensor("mask", [1, 3], [1, 1, 1], "FP32")], "sequence length"),
])
def test_bad_tensors_are_400_with_a_message(inputs, message):
    with pytest.raises(BadRequest) as info:
        decode_inputs(inputs, INPUTS)
    assert message in info.value.message


def test_ints_may_become_floats_but_floats_never_silently_become_ints():
    (row,) = decode_inputs([tensor("mask", [1, 2], [1, 0], "FP32"), tensor("token_ids", [1, 2], [1, 2])], INPUTS)
    assert row["mask"].tolist() == [1.0, 0.0]
    with pytest.raises(BadRequest, match="not INT64"):
        decode_inputs([tensor("token_ids", [1, 2], [1.5, 2.0]), tensor("mask", [1, 2], [1, 1], "FP32")], INPUTS)


async def test_infer_runs_through_the_batcher_and_returns_v2_tensors():
    batcher = Batcher("fake", Doubler(), INPUTS, OUTPUTS, BatchLimits(), Metrics())
    batcher.start()
    try:
        inputs = [tensor("token_ids", [2, 2], [1, 2, 3, 4]), tensor("mask", [2, 2], [1, 1, 1, 0], "FP32")]
        (out,) = await infer(batcher, inputs, ["probs"], time.monotonic() + 5)
        assert out["name"] == "probs" and out["datatype"] == "FP32" and out["shape"] == [2, 2, 2]
        assert out["data"] == [2, 2, 4, 4, 6, 6, 0, 0]
        with pytest.raises(BadRequest, match="unknown output"):
            await infer(batcher, inputs, ["nope"], time.monotonic() + 5)
    finally:
        await batcher.stop()
