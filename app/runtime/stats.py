"""Inference statistics of one batcher, counted where the work happens, in the terms of Triton's statistics
extension (served by /v2/models/{name}/stats).

Two kinds of event:
- a request: one `Batcher.submit` (a /v2 infer, or one stage of a task endpoint: a beam-search step is one).
  It ends in success or failure (refused, deadline passed, client gone, backend error), with its duration;
  a successful one also adds its queue time (its duration less the time its batches ran) and the compute
  time of the batches its rows ran in.
- an execution: one run of the backend on a batch, with its size and its three compute phases (collate the
  rows, run the model, cut the outputs back into rows). A batch that fails and is retried row by row counts
  every run it made.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += max(0, round(seconds * 1e9))


@dataclass
class Compute:
    """Seconds spent in the compute phases of one or more backend runs."""
    input: float = 0.0
    infer: float = 0.0
    output: float = 0.0

    @property
    def total(self) -> float:
        return self.input + self.infer + self.output

    def __add__(self, other: Compute) -> Compute:
        return Compute(self.input + other.input, self.infer + other.infer, self.output + other.output)


@dataclass
class BatchStat:
    count: int = 0
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class InferenceStats:
    last_inference_ms: int = 0  # when the last execution ended, ms since the epoch (0: none yet)
    inference_count: int = 0  # rows run
    execution_count: int = 0  # backend runs
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchStat] = field(default_factory=dict)  # batch size -> its executions
    # executions are counted on the inference thread, requests on the event loop
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def executed(self, rows: int, compute: Compute) -> None:
        with self._lock:
            self.execution_count += 1
            self.inference_count += rows
            self.last_inference_ms = int(time.time() * 1000)
            batch = self.batches.setdefault(rows, BatchStat())
            batch.count += 1
            batch.compute_input.add(compute.input)
            batch.compute_infer.add(compute.infer)
            batch.compute_output.add(compute.output)

    def succeeded(self, seconds: float, compute: Compute, running: float) -> None:
        """A request done in `seconds`, of which its batches ran `running` seconds and computed `compute`."""
        with self._lock:
            self.success.add(seconds)
            self.queue.add(max(0.0, seconds - running))
            self.compute_input.add(compute.input)
            self.compute_infer.add(compute.infer)
            self.compute_output.add(compute.output)

    def failed(self, seconds: float) -> None:
        with self._lock:
            self.fail.add(seconds)

    def report(self) -> dict:
        """A consistent copy, in the field names of Triton's statistics extension ($model_stat less name and
        version): durations as {"count", "ns"}, batch sizes in ascending order."""
        with self._lock:
            phases = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
            return {
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {p: asdict(getattr(self, p)) for p in phases},
                "batch_stats": [{"batch_size": size, **asdict(b)} for size, b in sorted(self.batches.items())],
            }
