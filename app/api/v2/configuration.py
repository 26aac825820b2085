"""Triton's model configuration and statistics extensions: a v2 model (one ONNX stage) described in the
shape of Triton's config.pbtxt (as JSON) and its counts in the shape of Triton's $model_stat."""

from __future__ import annotations

from app.runtime.batcher import Batcher, TensorSpec

TRITON_TYPES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int16": "TYPE_INT16",
                "int32": "TYPE_INT32", "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32",
                "float64": "TYPE_FP64"}


def _tensors(specs: list[TensorSpec]) -> list[dict]:
    """Triton's dims leave out the batch axis (max_batch_size > 0); -1 marks a variable axis."""
    return [{"name": s.name, "data_type": TRITON_TYPES[s.dtype],
             "dims": [d if isinstance(d, int) else -1 for d in s.shape[1:]]} for s in specs]


def model_config(name: str, batcher: Batcher, file: str, providers: list[str]) -> dict:
    """The configuration the stage really runs with: its batcher's limits (model.json over the server
    defaults, server settings over both) and the execution provider its session got."""
    limits = batcher.limits
    kind = "KIND_GPU" if "CUDAExecutionProvider" in providers else "KIND_CPU"
    parameters = {"max_batch_tokens": limits.max_batch_tokens, "max_queue_rows": limits.max_queue_rows}
    if batcher.max_length is not None:
        parameters["max_length"] = batcher.max_length
    return {
        "name": name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": limits.max_batch_size,
        "input": _tensors(batcher.inputs),
        "output": _tensors(batcher.outputs),
        "dynamic_batching": {"max_queue_delay_microseconds": round(limits.max_queue_delay_ms * 1000)},
        "instance_group": [{"name": f"{name}_0", "kind": kind, "count": 1}],
        "default_model_filename": file,
        # Triton's config parameters are string values
        "parameters": {k: {"string_value": str(v)} for k, v in parameters.items()},
    }


def model_stats(name: str, version: str | None, batcher: Batcher) -> dict:
    return {"name": name, "version": version or "", **batcher.stats.report()}
