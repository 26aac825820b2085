"""Raw tensor inference for the Open Inference Protocol (KServe v2): JSON tensors <-> batcher rows.

A request's tensors carry a batch axis; each batch entry becomes one batcher row, so raw requests
share batches (and metrics, deadlines, backpressure) with the task endpoints.
"""

from __future__ import annotations

import math

import numpy as np

from app.runtime.batcher import Batcher, TensorSpec
from app.runtime.errors import BadRequest

# KServe v2 datatypes <-> numpy
DATATYPES = {"BOOL": "bool", "UINT8": "uint8", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
             "FP16": "float16", "FP32": "float32", "FP64": "float64"}
NUMPY_TO_V2 = {v: k for k, v in DATATYPES.items()}


def tensor_metadata(specs: list[TensorSpec]) -> list[dict]:
    """Shapes as v2 metadata: -1 for variable axes."""
    return [{"name": s.name, "datatype": NUMPY_TO_V2[s.dtype],
             "shape": [d if isinstance(d, int) else -1 for d in s.shape]} for s in specs]


def decode_inputs(inputs: list[dict], specs: list[TensorSpec]) -> list[dict[str, np.ndarray]]:
    """Check v2 input tensors against the model's inputs and cut them into rows (one per batch entry)."""
    given = {t["name"]: t for t in inputs}
    wanted = {s.name for s in specs}
    if unknown := sorted(set(given) - wanted):
        raise BadRequest(f"unknown input(s) {unknown}; the model takes {sorted(wanted)}")
    if missing := sorted(wanted - set(given)):
        raise BadRequest(f"missing input(s) {missing}")
    arrays, batch = {}, None
    for spec in specs:
        t = given[spec.name]
        if t["datatype"] != NUMPY_TO_V2[spec.dtype]:
            raise BadRequest(f"input {spec.name}: datatype {t['datatype']}, expected {NUMPY_TO_V2[spec.dtype]}")
        shape = list(t["shape"])
        if len(shape) != len(spec.shape):
            raise BadRequest(f"input {spec.name}: shape {shape} has {len(shape)} axes, expected {len(spec.shape)} "
                             f"({tensor_metadata([spec])[0]['shape']})")
        for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
            if got < 0 or (isinstance(want, int) and got != want):
                raise BadRequest(f"input {spec.name}: axis {axis} is {got}, expected {want}")
        if shape[0] < 1 or (spec.seq_axis is not None and shape[spec.seq_axis + 1] < 1):
            raise BadRequest(f"input {spec.name}: empty batch or sequence in shape {shape}")
        data = np.asarray(t["data"]).reshape(-1)
        if data.size != math.prod(shape):
            raise BadRequest(f"input {spec.name}: {data.size} values for shape {shape} ({math.prod(shape)} expected)")
        casting = "unsafe" if data.dtype.kind in "bi" else "same_kind"  # ints may become floats, not the reverse
        try:
            arrays[spec.name] = data.astype(spec.dtype, casting=casting).reshape(shape)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"input {spec.name}: data is not {t['datatype']}: {exc}") from None
        if batch is not None and shape[0] != batch:
            raise BadRequest(f"input {spec.name}: batch size {shape[0]} differs from the other inputs' {batch}")
        batch = shape[0]
    lengths = {a.shape[s.seq_axis + 1] for s in specs if s.seq_axis is not None for a in [arrays[s.name]]}
    if len(lengths) > 1:
        raise BadRequest(f"inputs disagree on the sequence length: {sorted(lengths)}")
    return [{name: a[i] for name, a in arrays.items()} for i in range(batch or 0)]


async def infer(batcher: Batcher, inputs: list[dict], requested: list[str] | None, deadline: float) -> list[dict]:
    """Run v2 input tensors through the batcher; return v2 output tensors (all, or those requested)."""
    rows = decode_inputs(inputs, batcher.inputs)
    names = [s.name for s in batcher.outputs]
    if requested and (unknown := sorted(set(requested) - set(names))):
        raise BadRequest(f"unknown output(s) {unknown}; the model gives {names}")
    results = await batcher.submit(rows, deadline)
    outputs = []
    for name in requested or names:
        value = np.stack([r[name] for r in results])
        outputs.append({"name": name, "datatype": NUMPY_TO_V2[str(value.dtype)], "shape": list(value.shape),
                        "data": value.reshape(-1).tolist()})
    return outputs
