"""The binary tensor data extension of the Open Inference Protocol (Triton's `binary_tensor_data`).

A request or response body is a JSON header followed by raw tensors: the header's length is given by the
`Inference-Header-Content-Length` HTTP header, each binary tensor names its byte size in
`parameters.binary_data_size`, and the raw tensors follow the header in the order of the tensors in it.
Raw tensors are little-endian, row-major, without padding; BOOL is one byte (0 or 1); BYTES elements are each
a 4-byte little-endian length followed by that many bytes.
Any framing that does not add up (a header length past the body, sizes that overrun it or leave bytes over,
sizes that do not fit the shape and datatype) is a BadRequest (400) naming what is wrong.
"""

from __future__ import annotations

import json
import math
import re
import struct

import numpy as np

from app.runtime.errors import BadRequest

HEADER_LENGTH = "Inference-Header-Content-Length"
RAW = "raw"  # the key under which an input tensor carries its raw bytes once cut from the body
FIXED_SIZE = {"BOOL": "<u1", "UINT8": "<u1", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
              "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the raw tensor bytes after it (none when the header length is not given)."""
    if header_length is None:
        return body, b""
    if not re.fullmatch(r"\s*[0-9]{1,18}\s*", header_length):
        raise BadRequest(f"{HEADER_LENGTH} {header_length!r} is not a byte count")
    size = int(header_length)
    if size > len(body):
        raise BadRequest(f"{HEADER_LENGTH} {size} is past the end of the {len(body)}-byte body")
    return body[:size], body[size:]


def binary_size(tensor: dict) -> int | None:
    """A tensor's `parameters.binary_data_size`, checked: None when the tensor is not binary."""
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise BadRequest(f"input {tensor['name']}: binary_data_size {size!r} is not a byte count")
    return size


def attach_raw(inputs: list[dict], raw: bytes) -> list[dict]:
    """Give each binary input its bytes, cut from `raw` in the order of the inputs; all of `raw` must be used."""
    out, offset = [], 0
    for tensor in inputs:
        size = binary_size(tensor)
        if size is None:
            out.append(tensor)
            continue
        if tensor.get("data") is not None:
            raise BadRequest(f"input {tensor['name']}: both data and binary_data_size")
        if offset + size > len(raw):
            raise BadRequest(f"input {tensor['name']}: binary_data_size {size} runs past the end of the body "
                             f"({len(raw) - offset} bytes of binary data left)")
        out.append({**tensor, RAW: raw[offset:offset + size]})
        offset += size
    if offset != len(raw):
        raise BadRequest(f"{len(raw) - offset} bytes of binary data after the last binary input "
                         f"(inputs declare {offset} of {len(raw)})")
    return out


def from_bytes(name: str, raw: bytes, datatype: str, shape: list[int]) -> np.ndarray:
    """A raw tensor as an array of `shape` (native byte order); BYTES give an object array of bytes."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return decode_bytes(name, raw, count).reshape(shape)
    if datatype not in FIXED_SIZE:
        raise BadRequest(f"input {name}: datatype {datatype} has no binary form")
    dtype = np.dtype(FIXED_SIZE[datatype])
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(f"input {name}: {len(raw)} bytes of binary data for shape {shape} of {datatype} "
                         f"({count * dtype.itemsize} expected)")
    array = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL":
        if array.size and array.max() > 1:
            raise BadRequest(f"input {name}: BOOL byte {int(array.max())} is neither 0 nor 1")
        return array.astype(bool).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False).reshape(shape)


def decode_bytes(name: str, raw: bytes, count: int) -> np.ndarray:
    """`count` BYTES elements, each a 4-byte little-endian length and its bytes, filling `raw` exactly."""
    items, offset = [], 0
    while offset < len(raw) and len(items) < count:
        if offset + 4 > len(raw):
            raise BadRequest(f"input {name}: BYTES element {len(items)} is cut off in its length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise BadRequest(f"input {name}: BYTES element {len(items)} of {size} bytes runs past the tensor's end")
        items.append(raw[offset:offset + size])
        offset += size
    if len(items) != count or offset != len(raw):
        raise BadRequest(f"input {name}: binary data holds {len(items)} BYTES elements in {offset} of {len(raw)} "
                         f"bytes, the shape wants {count}")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def to_bytes(array: np.ndarray) -> bytes:
    """An output tensor's raw form: little-endian and row-major; object arrays as length-prefixed BYTES."""
    if array.dtype == object:
        parts = [item if isinstance(item, bytes) else str(item).encode() for item in array.reshape(-1)]
        return b"".join(struct.pack("<I", len(p)) + p for p in parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def frame(header: dict, raw: list[bytes]) -> tuple[bytes, int]:
    """A response body (the JSON header, then the raw tensors) and the header's length in bytes. A model's
    output may hold NaN or infinities: JSON data carries them as NaN and Infinity (read by Python's json and
    by tritonclient's rapidjson; binary outputs carry them exactly)."""
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
    return text + b"".join(raw), len(text)
