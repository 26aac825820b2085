"""Inference backends: run one padded batch (name -> array) and return its outputs.

The batcher only needs `run`; `OnnxBackend` is the real one, tests may pass any object with `run`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from app.runtime.errors import Unavailable

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


class Backend(Protocol):
    def run(self, inputs: Arrays) -> Arrays: ...


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    wants_cuda = device in ("auto", "cuda") and "CUDAExecutionProvider" in available
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if wants_cuda else ["CPUExecutionProvider"]


class OnnxBackend:
    """One onnxruntime session. `providers` is what the session really got, not what was asked for."""

    def __init__(self, path: str | Path, device: str = "auto", intra_op_threads: int = 0, cpu_arena: str = "shrink"):
        """`cpu_arena`: "on" keeps onnxruntime's CPU memory arena (what one huge batch took stays taken),
        "shrink" gives back what a run took beyond the arena's first chunk after each run, "off" uses plain
        malloc."""
        import onnxruntime as ort

        if device in ("auto", "cuda") and hasattr(ort, "preload_dlls"):
            try:  # CUDA/cuDNN from the pip packages of onnxruntime-gpu[cuda,cudnn]
                ort.preload_dlls()
            except Exception:  # noqa: BLE001 - CPU build or no CUDA: fall back quietly
                pass
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = cpu_arena != "off"
        self.run_options = ort.RunOptions()
        if cpu_arena == "shrink":
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        # Idle intra-op threads must not spin: the event loop and the other stages need those cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=_providers(device))
        self.providers = self.session.get_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in self.providers:
            log.warning("%s: CUDA asked for but the session runs on %s", path, self.providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def close(self) -> None:
        """Free the session's weights and buffers now, not when the last reference to this backend goes."""
        self.session = None

    def run(self, inputs: Arrays) -> Arrays:
        if self.session is None:
            raise Unavailable("this model version was closed")
        outputs = self.session.run(self.output_names, {k: inputs[k] for k in self.input_names}, self.run_options)
        return dict(zip(self.output_names, outputs, strict=True))
