"""The model repository: models/<name>/model.json + numbered version folders; the highest serves.

A model is one or more ONNX stages (model.json "stages"), each with its own session and batcher.
Every model loads on its own: one that fails is recorded as failed (reported by /readyz and
/v1/models) and never takes the others down. A ModelHandle is one loaded version: a new version gets
a new handle beside the old one (app/runtime/control.py swaps them), and the old one is closed once
the requests that took it (`in_use`) are done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from app.runtime import memory
from app.runtime.admission import Admission, Permit
from app.runtime.backend import OnnxBackend
from app.runtime.batcher import Batcher, BatchLimits, TensorSpec
from app.runtime.errors import Unavailable
from app.runtime.metrics import Metrics
from app.runtime.variants import open_stage

log = logging.getLogger(__name__)

LOADING, READY, FAILED, UNLOADED = "loading", "ready", "failed", "unloaded"


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
    in_use: int = 0  # requests holding this version (a route's task dependency, an admission permit)
    idle: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # set while in_use is 0
    closed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # set once closed

    def __post_init__(self) -> None:
        self.idle.set()

    @contextmanager
    def using(self) -> Iterator[ModelHandle]:
        """Count a request on this version while it runs, so a swap closes the version only once it is idle.
        On the event loop only (asyncio.Event is not thread-safe)."""
        self.in_use += 1
        self.idle.clear()
        try:
            yield self
        finally:
            self.in_use -= 1
            if self.in_use == 0:
                self.idle.set()

    @property
    def task(self) -> str:
        return self.config.get("task", "")

    def stage(self, name: str) -> Batcher:
        self._check_ready()
        return self.stages[name]

    @asynccontextmanager
    async def admit(self, rows: dict[str, int], deadline: float) -> AsyncIterator[Permit]:
        """A permit for a request's estimated rows per stage, taken before its first stage (429 at once
        when the model cannot take it in time); hold it until the request is done. The request counts
        as using this version meanwhile."""
        self._check_ready()
        with self.using():
            async with self.admission.permit(rows, deadline) as permit:
                yield permit

    def _check_ready(self) -> None:
        if self.state != READY:
            raise Unavailable(f"model {self.name} is {self.state}" + (f": {self.error}" if self.error else ""))

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "task": self.task, "state": self.state,
                "error": self.error, "providers": self.providers, "variants": self.variants,
                "quality": self.config.get("quality"), "limits": self.config.get("limits"),
                "stages": sorted(self.config.get("stages", {}))}


def version_folders(model_dir: Path) -> list[Path]:
    return sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def latest_version(model_dir: Path) -> Path:
    versions = version_folders(model_dir)
    if not versions:
        raise FileNotFoundError(f"no numbered version folder in {model_dir}")
    return versions[-1]


class Signature(NamedTuple):
    """What a load of a model would read (ModelRepository.signature)."""

    config: tuple  # model.json: (name, size, mtime)
    version: str | None  # the highest version folder
    files: tuple  # its files: (relative path, size, mtime) each


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

    def names(self) -> list[str]:
        """The models on disk now: every folder holding a model.json."""
        return sorted(p.parent.name for p in self.root.glob("*/model.json"))

    def read(self, name: str) -> ModelHandle:
        """A new handle for the highest version of models/<name> (a broken model.json makes a failed one)."""
        config_path = self.root / name / "model.json"
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except Exception as exc:  # noqa: BLE001
            return ModelHandle(name, {}, config_path, state=FAILED, error=f"bad model.json: {exc}")
        handle = ModelHandle(name, config, config_path)
        try:
            handle.directory = latest_version(self.root / name)
            handle.version = handle.directory.name
        except OSError:  # no version folder yet: load() reports it
            pass
        return handle

    def signature(self, name: str) -> Signature:
        """What a load of models/<name> would read: the highest version folder's files (names, sizes, mtimes)
        and model.json's mtime. A failed version is tried again only once this changes (a copy completes)."""
        def stat(path: Path, base: Path) -> tuple:
            try:
                s = path.stat()
                return str(path.relative_to(base)), s.st_size, s.st_mtime_ns
            except OSError:  # gone meanwhile
                return str(path.relative_to(base)), None, None

        model_dir = self.root / name
        versions = version_folders(model_dir) if model_dir.is_dir() else []
        if not versions:
            return Signature(stat(model_dir / "model.json", model_dir), None, ())
        files = tuple(stat(p, versions[-1]) for p in sorted(versions[-1].rglob("*")))
        return Signature(stat(model_dir / "model.json", model_dir), versions[-1].name, files)

    def discover(self) -> list[ModelHandle]:
        """Read every models/<name>/model.json (a broken one becomes a failed model)."""
        for name in self.names():
            self.models[name] = self.read(name)
            self.metrics.model_ready.labels(name).set(0)
        return list(self.models.values())

    def open_file(self, path: Path) -> OnnxBackend:
        return OnnxBackend(path, self.device, self.threads, self.cpu_arena)

    def open(self, handle: ModelHandle) -> None:
        """Create the sessions and batchers of the handle's version and warm them up (blocking: call from a
        thread). Raises on failure, leaving nothing open and the repository's other handles untouched."""
        if handle.state == FAILED:
            raise ValueError(handle.error)
        started = time.monotonic()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{handle.name}")
        try:
            directory = handle.directory or latest_version(self.root / handle.name)
            stages = {}
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
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise

    def start(self, handle: ModelHandle) -> None:
        """Start the loaded model's batchers (on the event loop) and report it ready."""
        for batcher in handle.stages.values():
            batcher.start()
        handle.state = READY
        self.metrics.model_ready.labels(handle.name).set(1)

    def mark_failed(self, handle: ModelHandle, error: str) -> None:
        handle.state, handle.error = FAILED, error
        self.metrics.model_ready.labels(handle.name).set(0)

    async def close(self, handle: ModelHandle) -> None:
        """Stop one version's batchers (rows still queued fail as unavailable) and its inference thread."""
        handle.state = UNLOADED
        for batcher in handle.stages.values():
            await batcher.stop()
        if handle.executor is not None:
            # wait (off the loop) for a batch still running on a session before freeing it
            await asyncio.to_thread(handle.executor.shutdown, wait=True, cancel_futures=True)
        for batcher in handle.stages.values():
            batcher.backend.close()
        memory.trim()  # a version's weights are large: give their pages back now (glibc would keep them)
        handle.closed.set()

    async def stop(self) -> None:
        for handle in list(self.models.values()):
            await self.close(handle)
