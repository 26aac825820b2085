"""The model repository: models/<name>/model.json + numbered version folders; the highest serves.

A model is one or more ONNX stages (model.json "stages"), each with its own session and batcher.
Every model loads on its own: one that fails is recorded as failed (reported by /readyz and
/v1/models) and never takes the others down.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.runtime.admission import Admission, Permit
from app.runtime.backend import OnnxBackend
from app.runtime.batcher import Batcher, BatchLimits, TensorSpec
from app.runtime.errors import Unavailable
from app.runtime.metrics import Metrics
from app.runtime.variants import open_stage

log = logging.getLogger(__name__)

LOADING, READY, FAILED = "loading", "ready", "failed"


@dataclass
class ModelHandle:
    name: str
    config: dict
    config_path: Path | None = None  # models/<name>/model.json
    version: str | None = None
    directory: Path | None = None  # the version folder
    stages: dict[str, Batcher] = field(default_factory=dict)
    admission: Admission | None = None
    executor: ThreadPoolExecutor | None = None  # one inference thread for all stages of the model
    providers: list[str] = field(default_factory=list)
    variants: dict[str, str] = field(default_factory=dict)  # stage -> the variant served (fp32, int8, fp16)
    state: str = LOADING
    error: str | None = None
    load_seconds: float | None = None

    @property
    def task(self) -> str:
        return self.config.get("task", "")

    def stage(self, name: str) -> Batcher:
        self._check_ready()
        return self.stages[name]

    def admit(self, rows: dict[str, int], deadline: float) -> AbstractAsyncContextManager[Permit]:
        """A permit for a request's estimated rows per stage, taken before its first stage (429 at once
        when the model cannot take it in time); hold it until the request is done."""
        self._check_ready()
        return self.admission.permit(rows, deadline)

    def _check_ready(self) -> None:
        if self.state != READY:
            raise Unavailable(f"model {self.name} is {self.state}" + (f": {self.error}" if self.error else ""))

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "task": self.task, "state": self.state,
                "error": self.error, "providers": self.providers, "variants": self.variants,
                "quality": self.config.get("quality"), "limits": self.config.get("limits"),
                "stages": sorted(self.config.get("stages", {}))}


def latest_version(model_dir: Path) -> Path:
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise FileNotFoundError(f"no numbered version folder in {model_dir}")
    return max(versions, key=lambda p: int(p.name))


def warmup_batch(inputs: list[TensorSpec], length: int = 8) -> dict[str, np.ndarray]:
    """A one-row batch of zeros shaped like the inputs (symbolic axes: batch 1, others `length`)."""
    def size(i: int, dim) -> int:
        return dim if isinstance(dim, int) else 1 if i == 0 else length

    return {s.name: np.zeros([size(i, d) for i, d in enumerate(s.shape)], dtype=s.dtype) for s in inputs}


def batch_limits(config: dict, defaults: BatchLimits, overrides: dict, stage: dict | None = None) -> BatchLimits:
    """A stage's "batching" over its model's over the server defaults; explicit server settings win over all."""
    values = {**defaults.__dict__, **config.get("batching", {}), **(stage or {}).get("batching", {}), **overrides}
    return BatchLimits(**{k: values[k] for k in defaults.__dict__})


class ModelRepository:
    def __init__(self, root: Path, metrics: Metrics, device: str = "auto", intra_op_threads: int = 0,
                 defaults: BatchLimits | None = None, overrides: dict | None = None, cpu_arena: str = "shrink",
                 variant: str = "auto"):
        self.root, self.metrics, self.device, self.threads = Path(root), metrics, device, intra_op_threads
        self.cpu_arena, self.variant = cpu_arena, variant
        self.defaults, self.overrides = defaults or BatchLimits(), overrides or {}
        self.models: dict[str, ModelHandle] = {}

    def discover(self) -> list[ModelHandle]:
        """Read every models/<name>/model.json (a broken one becomes a failed model)."""
        for config_path in sorted(self.root.glob("*/model.json")):
            name = config_path.parent.name
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
                self.models[name] = ModelHandle(name, config, config_path)
            except Exception as exc:  # noqa: BLE001
                self.models[name] = ModelHandle(name, {}, config_path, state=FAILED, error=f"bad model.json: {exc}")
            self.metrics.model_ready.labels(name).set(0)
        return list(self.models.values())

    def open_file(self, path: Path) -> OnnxBackend:
        return OnnxBackend(path, self.device, self.threads, self.cpu_arena)

    def load(self, handle: ModelHandle) -> None:
        """Create the sessions and batchers of one model (blocking: call from a thread)."""
        if handle.state == FAILED:
            return
        started = time.monotonic()
        try:
            directory = latest_version(self.root / handle.name)
            stages = {}
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{handle.name}")
            for stage_name, spec in handle.config["stages"].items():
                backend, handle.variants[stage_name] = open_stage(directory, handle.config, stage_name, self.variant,
                                                                  self.device, self.open_file)
                inputs = [TensorSpec.from_dict(k, v) for k, v in spec["inputs"].items()]
                backend.run(warmup_batch(inputs))  # first-run allocations happen now, not on a request
                timed = time.perf_counter()
                backend.run(warmup_batch(inputs))
                outputs = [TensorSpec.from_dict(k, v) for k, v in spec["outputs"].items()]
                label = handle.name if len(handle.config["stages"]) == 1 else f"{handle.name}/{stage_name}"
                limits = batch_limits(handle.config, self.defaults, self.overrides, spec)
                stages[stage_name] = Batcher(label, backend, inputs, outputs, limits, self.metrics, executor,
                                             spec.get("max_length"))
                # A lone short row costs at least what a row in a batch does: admission starts cautious.
                stages[stage_name].seconds_per_row = time.perf_counter() - timed
                handle.providers = backend.providers
            handle.directory, handle.version, handle.stages = directory, directory.name, stages
            max_rows = batch_limits(handle.config, self.defaults, self.overrides).max_queue_rows
            handle.admission = Admission(handle.name, stages, max_rows)
            handle.executor = executor
            handle.load_seconds = round(time.monotonic() - started, 3)
        except Exception as exc:  # noqa: BLE001 - isolate: this model fails, the others go on
            log.exception("model %s failed to load", handle.name)
            self.mark_failed(handle, f"{type(exc).__name__}: {exc}")

    def start(self, handle: ModelHandle) -> None:
        """Start the loaded model's batchers (on the event loop) and report it ready."""
        for batcher in handle.stages.values():
            batcher.start()
        handle.state = READY
        self.metrics.model_ready.labels(handle.name).set(1)

    def mark_failed(self, handle: ModelHandle, error: str) -> None:
        handle.state, handle.error = FAILED, error
        self.metrics.model_ready.labels(handle.name).set(0)

    async def stop(self) -> None:
        for handle in self.models.values():
            for batcher in handle.stages.values():
                await batcher.stop()
            if handle.executor is not None:
                handle.executor.shutdown(wait=False, cancel_futures=True)
