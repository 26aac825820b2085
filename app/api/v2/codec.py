"""Raw tensor inference for the Open Inference Protocol (KServe v2): request tensors <-> batcher rows.

A request's tensors carry a batch axis; each batch entry becomes one batcher row, so raw requests
share batches (and metrics, deadlines, backpressure) with the task endpoints. A tensor comes as JSON `data`
or as raw bytes (the binary tensor data extension, app/api/v2/binary.py); both are checked alike.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import replace

import numpy as np

from app.api.v2.binary import RAW, from_bytes, to_bytes
from app.runtime.admission import Permit
from app.runtime.batcher import Batcher, TensorSpec
from app.runtime.errors import BadRequest

# KServe v2 datatypes <-> numpy
DATATYPES = {"BOOL": "bool", "UINT8": "uint8", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
             "FP16": "float16", "FP32": "float32", "FP64": "float64"}
NUMPY_TO_V2 = {v: k for k, v in DATATYPES.items()}
MAX_NESTING = 64  # levels of nested lists in `data`, whatever the tensor's rank


def tensor_metadata(specs: list[TensorSpec]) -> list[dict]:
    """Shapes as v2 metadata: -1 for variable axes."""
    return [{"name": s.name, "datatype": NUMPY_TO_V2[s.dtype],
             "shape": [d if isinstance(d, int) else -1 for d in s.shape]} for s in specs]


def _is_id(name: str) -> bool:
    """Inputs that index an embedding table: a negative or too-large id would read outside it."""
    return name.endswith("_ids") or name == "token"


def _flatten(name: str, data: object, shape: list[int]) -> list:
    """The values of `data` in row-major order: flat, or nested exactly as `shape` (a list of shape[0] lists
    of shape[1] ... values). Walked with an explicit stack, so no nesting depth can exhaust the call stack."""
    if not isinstance(data, list):
        raise BadRequest(f"input {name}: data is {type(data).__name__}, expected a list")
    if not any(isinstance(v, list) for v in data):  # flat
        if len(data) != math.prod(shape):
            raise BadRequest(f"input {name}: {len(data)} values for shape {shape} ({math.prod(shape)} expected)")
        return data
    if len(shape) > MAX_NESTING:
        raise BadRequest(f"input {name}: data nested over {MAX_NESTING} levels")
    values: list = []
    stack = [(data, 0)]  # (a list, its axis); popped in row-major order
    while stack:
        node, axis = stack.pop()
        if not isinstance(node, list) or len(node) != shape[axis]:
            got = f"a list of {len(node)}" if isinstance(node, list) else f"the value {reprlib.repr(node)}"
            raise BadRequest(f"input {name}: nested data does not match shape {shape} (ragged?): {got} at "
                             f"axis {axis}, expected a list of {shape[axis]}")
        if axis == len(shape) - 1:
            if any(isinstance(v, list) for v in node):
                raise BadRequest(f"input {name}: data nested deeper than the {len(shape)} axes of shape {shape}")
            values.extend(node)
        else:
            stack.extend((child, axis + 1) for child in reversed(node))
    return values


def _json_array(name: str, values: list, spec: TensorSpec) -> np.ndarray:
    """JSON values checked one by one against the datatype (numpy would silently turn true into 1, or fail with
    an error of its own), then made an array of the spec's dtype (flat)."""
    dtype = np.dtype(spec.dtype)
    allowed = {"b": {bool}, "i": {int}, "u": {int}, "f": {int, float}}[dtype.kind]  # JSON gives no other types
    if not set(map(type, values)) <= allowed:
        bad = next(v for v in values if type(v) not in allowed)
        raise BadRequest(f"input {name}: data is not {NUMPY_TO_V2[spec.dtype]}: {reprlib.repr(bad)} "
                         f"({type(bad).__name__})")
    if dtype.kind in "iu" and values:
        low, high = min(values), max(values)
        _check_ids(name, low, high, spec)
        info = np.iinfo(dtype)
        if low < info.min or high > info.max:
            raise BadRequest(f"input {name}: {low if low < info.min else high} is outside the range of "
                             f"{NUMPY_TO_V2[spec.dtype]}")
    if dtype.kind != "f":
        return np.array(values, dtype=dtype)
    try:
        with np.errstate(over="ignore"):  # overflow becomes inf, refused just below
            array = np.array(values, dtype=np.float64).astype(dtype)
    except OverflowError:  # an integer too large for a float64
        array = np.array([np.inf])
    _check_finite(name, array, spec)
    return array


def _check_ids(name: str, low: int, high: int, spec: TensorSpec) -> None:
    if (spec.bound is not None or _is_id(name)) and low < 0:
        raise BadRequest(f"input {name}: id {low} is negative")
    if spec.bound is not None and high >= spec.bound:
        raise BadRequest(f"input {name}: id {high} is outside [0, {spec.bound})")


def _check_finite(name: str, array: np.ndarray, spec: TensorSpec) -> None:
    # NaN or inf in an input only spreads through the model, into outputs no strict JSON reader takes
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BadRequest(f"input {name}: data holds NaN, infinity or a value too large for {NUMPY_TO_V2[spec.dtype]}")


def _raw_array(name: str, raw: bytes, datatype: str, shape: list[int], spec: TensorSpec) -> np.ndarray:
    """Raw bytes of the right size as an array; ids and floats checked as JSON ones are."""
    array = from_bytes(name, raw, datatype, shape)
    if array.dtype.kind in "iu" and array.size:
        _check_ids(name, int(array.min()), int(array.max()), spec)
    _check_finite(name, array, spec)
    return array


def _axis_sizes(given: dict[str, dict], specs: list[TensorSpec]) -> dict[str, int]:
    """The size this request gives each named axis (the first input that has it; the shape checks below
    refuse the others when they differ from the batch's)."""
    sizes: dict[str, int] = {}
    for spec in specs:
        shape = given[spec.name].get("shape") or []
        for want, got in zip(spec.shape, shape, strict=False):
            if isinstance(want, str) and isinstance(got, int):
                sizes.setdefault(want, got)
    return sizes


def decode_inputs(inputs: list[dict], specs: list[TensorSpec]) -> list[dict[str, np.ndarray]]:
    """Check v2 input tensors against the model's inputs and cut them into rows (one per batch entry).

    `data` may be flat or nested exactly as `shape`; every value must be of the datatype (no true for 1, no
    1.5 or NaN for an integer) and finite. A binary input (its raw bytes under RAW) must hold exactly the bytes
    of its shape and datatype, and is checked alike. An input whose spec has a `bound` (model.json: the
    vocabulary size for token ids, the labels; or an axis name, e.g. "seq" for positions) must lie in [0, bound);
    without one, `*_ids` and
    `token` inputs are still refused negative values.
    Any violation is a BadRequest (400) naming the input, raised before the rows reach a model.
    """
    given = {t["name"]: t for t in inputs}
    wanted = {s.name for s in specs}
    if unknown := sorted(set(given) - wanted):
        raise BadRequest(f"unknown input(s) {unknown}; the model takes {sorted(wanted)}")
    if missing := sorted(wanted - set(given)):
        raise BadRequest(f"missing input(s) {missing}")
    arrays, batch = {}, None
    axes = _axis_sizes(given, specs)
    for spec in specs:
        t = given[spec.name]
        if isinstance(spec.bound, str):  # positions into a named axis, e.g. "seq": a gather past it would fail
            spec = replace(spec, bound=axes.get(spec.bound, 0))
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
        if RAW in t:
            array = _raw_array(spec.name, t[RAW], t["datatype"], shape, spec)
        elif t.get("data") is None:
            raise BadRequest(f"input {spec.name}: no data and no binary_data_size")
        else:
            array = _json_array(spec.name, _flatten(spec.name, t["data"], shape), spec).reshape(shape)
        arrays[spec.name] = array
        if batch is not None and shape[0] != batch:
            raise BadRequest(f"input {spec.name}: batch size {shape[0]} differs from the other inputs' {batch}")
        batch = shape[0]
    lengths = {a.shape[s.seq_axis + 1] for s in specs if s.seq_axis is not None for a in [arrays[s.name]]}
    if len(lengths) > 1:
        raise BadRequest(f"inputs disagree on the sequence length: {sorted(lengths)}")
    return [{name: a[i] for name, a in arrays.items()} for i in range(batch or 0)]


async def infer(batcher: Batcher, inputs: list[dict], requested: list[str] | None, deadline: float,
                permit: Permit | None = None) -> dict[str, np.ndarray]:
    """Run v2 input tensors through the batcher; return the output arrays (all, or those requested, in that
    order) with the batch axis."""
    rows = decode_inputs(inputs, batcher.inputs)
    names = [s.name for s in batcher.outputs]
    if requested and (unknown := sorted(set(requested) - set(names))):
        raise BadRequest(f"unknown output(s) {unknown}; the model gives {names}")
    results = await batcher.submit(rows, deadline, permit)
    return {name: np.stack([r[name] for r in results]) for name in requested or names}


def encode_outputs(arrays: dict[str, np.ndarray], binary: dict[str, bool]) -> tuple[list[dict], list[bytes]]:
    """v2 output tensors: JSON `data`, or (where `binary` says) `parameters.binary_data_size` and the raw bytes
    that follow the response's JSON, in the same order."""
    outputs, raw = [], []
    for name, value in arrays.items():
        tensor = {"name": name, "datatype": NUMPY_TO_V2[str(value.dtype)], "shape": list(value.shape)}
        if binary.get(name):
            raw.append(to_bytes(value))
            tensor["parameters"] = {"binary_data_size": len(raw[-1])}
        else:
            tensor["data"] = value.reshape(-1).tolist()
        outputs.append(tensor)
    return outputs, raw
