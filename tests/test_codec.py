"""The KServe v2 tensor codec: request tensors -> batcher rows -> response tensors, and its 400s."""

from __future__ import annotations

import json
import re
import struct
import time

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from app.api.v2.binary import RAW, attach_raw, frame, from_bytes, split_body, to_bytes
from app.api.v2.codec import decode_inputs, encode_outputs, infer, tensor_metadata
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
        arrays = await infer(batcher, inputs, ["probs"], time.monotonic() + 5)
        ((out,), raw) = encode_outputs(arrays, {})
        assert out == {"name": "probs", "datatype": "FP32", "shape": [2, 2, 2], "data": [2, 2, 4, 4, 6, 6, 0, 0]}
        assert raw == []
        with pytest.raises(BadRequest, match="unknown output"):
            await infer(batcher, inputs, ["nope"], time.monotonic() + 5)
    finally:
        await batcher.stop()


# -- the binary tensor data extension ---------------------------------------------------------------------------

def raw_tensor(name, array, datatype):
    """An input as the binary extension delivers it to the codec: shape and datatype, its bytes under RAW."""
    return {"name": name, "shape": list(array.shape), "datatype": datatype, RAW: to_bytes(array)}


@pytest.mark.parametrize("datatype, array", [
    ("INT64", np.array([[1, -2, 3], [2 ** 40, 0, 7]], dtype=np.int64)),
    ("FP32", np.array([0.5, -1e30, 3.25], dtype=np.float32)),
    ("FP16", np.array([[1.5], [-2.0]], dtype=np.float16)),
    ("BOOL", np.array([True, False, True])),
    ("UINT8", np.arange(6, dtype=np.uint8).reshape(2, 3)),
])
def test_raw_tensors_round_trip_in_little_endian(datatype, array):
    raw = to_bytes(array)
    assert raw == array.astype(array.dtype.newbyteorder("<")).tobytes() and len(raw) == array.size * array.itemsize
    back = from_bytes("x", raw, datatype, list(array.shape))
    assert back.dtype == array.dtype and back.tolist() == array.tolist()


def test_bytes_elements_match_tritonclients_encoding():
    strings = np.array([[b"", "周杰伦".encode()], [b"\x00\xff", b"abc"]], dtype=object)
    wire = serialize_byte_tensor(strings).item()  # the client's own 4-byte length-prefixed form
    assert to_bytes(strings) == wire
    assert from_bytes("s", wire, "BYTES", [2, 2]).tolist() == strings.tolist()
    assert deserialize_bytes_tensor(to_bytes(strings)).tolist() == strings.reshape(-1).tolist()


@pytest.mark.parametrize("raw, count, message", [
    (struct.pack("<I", 3) + b"ab", 1, "BYTES element 0 of 3 bytes runs past"),
    (struct.pack("<I", 1) + b"a" + b"\x01\x00", 2, "BYTES element 1 is cut off in its length prefix"),
    (struct.pack("<I", 1) + b"a", 2, "holds 1 BYTES elements in 5 of 5 bytes, the shape wants 2"),
    (struct.pack("<I", 1) + b"a" + b"zz", 1, "holds 1 BYTES elements in 5 of 7 bytes"),
])
def test_bytes_that_do_not_add_up_are_400(raw, count, message):
    with pytest.raises(BadRequest, match=re.escape(message)):
        from_bytes("s", raw, "BYTES", [count])


def test_the_header_length_splits_the_body_and_must_lie_inside_it():
    assert split_body(b'{"a": 1}xyz', "8") == (b'{"a": 1}', b"xyz")
    assert split_body(b'{"a": 1}', None) == (b'{"a": 1}', b"")
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length 99 is past the end of the 11-byte body"):
        split_body(b'{"a": 1}xyz', "99")
    for bad in ("-1", "8.0", "", "eight", "\u0668"):  # the last: an Arabic-Indic digit, which int() would take
        with pytest.raises(BadRequest, match="is not a byte count"):
            split_body(b'{"a": 1}xyz', bad)


def binary_input(name, size, **extra):
    return {"name": name, "shape": [1], "datatype": "INT64", "parameters": {"binary_data_size": size}, **extra}


def test_binary_inputs_take_their_bytes_in_order_and_all_of_them():
    plain = {"name": "json", "shape": [1], "datatype": "INT64", "data": [1]}
    a, j, b = attach_raw([binary_input("a", 2), plain, binary_input("b", 3)], b"12345")
    assert a[RAW] == b"12" and RAW not in j and b[RAW] == b"345"
    with pytest.raises(BadRequest, match=r"input b: binary_data_size 4 runs past the end of the body \(3 bytes"):
        attach_raw([binary_input("a", 2), binary_input("b", 4)], b"12345")
    with pytest.raises(BadRequest, match="2 bytes of binary data after the last binary input"):
        attach_raw([binary_input("a", 3)], b"12345")
    with pytest.raises(BadRequest, match="2 bytes of binary data after the last binary input"):
        attach_raw([plain], b"12")
    with pytest.raises(BadRequest, match="input a: both data and binary_data_size"):
        attach_raw([binary_input("a", 5, data=[1])], b"12345")
    for size in (-1, True, 2.0, "2"):
        with pytest.raises(BadRequest, match="is not a byte count"):
            attach_raw([binary_input("a", size)], b"12")


def test_raw_inputs_are_checked_like_json_ones():
    ids, mask = np.array([[1, 2, 3]]), np.ones((1, 3), dtype=np.float32)
    (row,) = decode_inputs([raw_tensor("token_ids", ids, "INT64"), raw_tensor("mask", mask, "FP32")], INPUTS)
    assert row["token_ids"].tolist() == [1, 2, 3] and row["mask"].dtype.name == "float32"
    cases = [
        ({**raw_tensor("token_ids", ids, "INT64"), "shape": [1, 4]}, "24 bytes of binary data for shape [1, 4] of "
                                                                     "INT64 (32 expected)"),
        (raw_tensor("token_ids", np.array([[1, -5, 3]]), "INT64"), "input token_ids: id -5 is negative"),
    ]
    for bad, message in cases:
        with pytest.raises(BadRequest, match=re.escape(message)):
            decode_inputs([bad, raw_tensor("mask", mask, "FP32")], INPUTS)
    with pytest.raises(BadRequest, match="input mask: data holds NaN"):
        decode_inputs([raw_tensor("token_ids", ids, "INT64"),
                       raw_tensor("mask", np.array([[1, np.nan, 1]], dtype=np.float32), "FP32")], INPUTS)
    bounded = [TensorSpec("token_ids", "int64", ("batch", "seq"), bound=3), INPUTS[1]]
    with pytest.raises(BadRequest, match=re.escape("input token_ids: id 3 is outside [0, 3)")):
        decode_inputs([raw_tensor("token_ids", ids, "INT64"), raw_tensor("mask", mask, "FP32")], bounded)
    with pytest.raises(BadRequest, match="BOOL byte 2 is neither 0 nor 1"):
        from_bytes("flags", b"\x00\x02", "BOOL", [2])
    with pytest.raises(BadRequest, match="input token_ids: no data and no binary_data_size"):
        decode_inputs([{"name": "token_ids", "shape": [1, 3], "datatype": "INT64"},
                       raw_tensor("mask", mask, "FP32")], INPUTS)


def test_binary_outputs_carry_their_size_and_follow_the_header_in_order():
    arrays = {"a": np.array([[1.0, 2.0]], dtype=np.float32), "b": np.array([3], dtype=np.int64),
              "c": np.array([True])}
    outputs, raw = encode_outputs(arrays, {"a": True, "c": True})
    assert outputs[0] == {"name": "a", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}
    assert outputs[1] == {"name": "b", "datatype": "INT64", "shape": [1], "data": [3]}
    assert outputs[2]["parameters"] == {"binary_data_size": 1} and raw == [to_bytes(arrays["a"]), b"\x01"]
    content, header_length = frame({"outputs": outputs}, raw)
    assert json.loads(content[:header_length]) == {"outputs": outputs}
    assert content[header_length:] == raw[0] + raw[1]
