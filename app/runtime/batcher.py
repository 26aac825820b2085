"""A task-agnostic dynamic batcher: rows in, futures out.

Each row is a dict of numpy arrays without the batch axis. Rows from many requests are merged into
one padded batch that closes at `max_batch_size` rows, at `max_batch_tokens` padded tokens, or
`max_queue_delay_ms` after its oldest row arrived (no wait at all when that row's request came
alone, with no other request within the delay before it: at low load nothing would join, and the
delay would only add latency). Rows are grouped by length (the oldest row always goes first, then
the rows closest to it in length) to limit padding. Inference runs on a worker thread, never on
the event loop. Admission (app/runtime/admission.py) bounds the queue before a request's first stage, so
submit never refuses rows. Every row carries its request's deadline: rows whose request gave up (deadline
passed, client gone) are dropped before they run, and counted by reason.
If a batch fails, its rows are retried one by one, so one bad row fails only its own request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from app.runtime.admission import Permit
from app.runtime.backend import Arrays, Backend
from app.runtime.errors import BackendError, BadRequest, DeadlineExceeded, Unavailable
from app.runtime.metrics import Metrics
from app.runtime.stats import Compute, InferenceStats

log = logging.getLogger(__name__)

SEQ = "seq"  # the name of the variable-length axis in tensor shapes

# The current request's rows' (enqueued, ran, done) times, from all its submits (concurrent ones too); the
# HTTP layer sets a fresh list per request and reports queue and inference time in response headers.
TIMING: ContextVar[list[tuple[float, float, float]] | None] = ContextVar("zhserve_timing", default=None)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple  # batch axis first, e.g. ("batch", "seq", 2)
    # integer inputs: values lie in [0, bound): a number (token ids: the vocabulary size) or an axis ("seq")
    bound: int | str | None = None

    @property
    def seq_axis(self) -> int | None:
        """Axis of the sequence within one row (batch axis removed), or None."""
        return self.shape.index(SEQ) - 1 if SEQ in self.shape else None

    @classmethod
    def from_dict(cls, name: str, d: dict) -> TensorSpec:
        return cls(name, d["dtype"], tuple(d["shape"]), d.get("bound"))


@dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int = 64
    max_batch_tokens: int = 16384
    max_queue_delay_ms: float = 2.0
    max_queue_rows: int = 4096


@dataclass(eq=False)
class _Pending:
    row: Arrays
    length: int
    deadline: float
    future: asyncio.Future
    sparse: bool = False  # no other request submitted within the queue delay before this one
    enqueued: float = field(default_factory=time.monotonic)
    gone: str = "deadline"  # why the row is dropped if its future is done before it runs
    ran: float = 0.0  # when its batch started and ended (time.monotonic())
    done: float = 0.0
    compute: Compute | None = None  # its batch's compute time (one object shared by the rows of a batch)


class Batcher:
    def __init__(self, name: str, backend: Backend, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 limits: BatchLimits, metrics: Metrics, executor: Executor | None = None,
                 max_length: int | None = None):
        """`executor` runs inference; stages of one model share one single-thread executor so that
        their sessions never compete for the same cores. Without one, the batcher owns its own.
        `max_length`: the longest row the stage takes (its position table); longer rows are refused."""
        self.name, self.backend, self.limits, self.metrics = name, backend, limits, metrics
        self.max_length = max_length
        self.inputs, self.outputs = inputs, outputs
        self._length_input = next((s for s in inputs if s.seq_axis is not None), None)
        self._queue: list[_Pending] = []
        self._running = 0  # rows in the batch being run
        self._last_submit = float("-inf")
        self._arrived = asyncio.Event()
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")
        self._worker: asyncio.Task | None = None
        self.seconds_per_row = 0.0  # measured: a moving average over batches, read by admission
        self.stats = InferenceStats()  # requests and executions, as the v2 statistics extension reports them
        metrics.touch_model(name)

    # -- public API -------------------------------------------------------------------------

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")
            self._worker.add_done_callback(self._worker_done)

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        for p in self._queue:
            if not p.future.done():
                p.future.set_exception(Unavailable(f"model {self.name}: server shutting down"))
            self.metrics.rows_dropped.labels(self.name, "shutdown").inc()
        self._queue.clear()
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, rows: list[Arrays], deadline: float, permit: Permit | None = None) -> list[Arrays]:
        """Run `rows` (in any batch composition) and return their outputs in the same order.

        `deadline` is a time.monotonic() value; past it the rows are dropped and DeadlineExceeded raised.
        If the caller is cancelled (its client went away), its queued rows are dropped before they run.
        `permit`: the request's admission permit, told what its rows cost once they ran.
        """
        if not rows:
            return []
        started = time.monotonic()
        try:
            pending = await self._submit(rows, deadline, permit)
        except BaseException:  # refused, deadline, client gone, backend error: a failed request
            self.stats.failed(time.monotonic() - started)
            raise
        batches = list({id(p.compute): p for p in pending}.values())  # one row per batch the request ran in
        self.stats.succeeded(time.monotonic() - started, sum((p.compute for p in batches), Compute()),
                             sum(p.done - p.ran for p in batches))
        return [p.future.result() for p in pending]

    async def _submit(self, rows: list[Arrays], deadline: float, permit: Permit | None) -> list[_Pending]:
        lengths = [self._length(r) for r in rows]
        if self.max_length is not None and max(lengths) > self.max_length:
            raise BadRequest(f"model {self.name}: a row of length {max(lengths)}, over the stage's max_length "
                             f"{self.max_length}")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        sparse = now - self._last_submit > self.limits.max_queue_delay_ms / 1000
        self._last_submit = now
        pending = [_Pending(r, n, deadline, loop.create_future(), sparse) for r, n in zip(rows, lengths, strict=True)]
        self._queue.extend(pending)
        self._gauges()
        self._arrived.set()
        try:
            async with asyncio.timeout_at(self._loop_time(deadline)):
                await asyncio.gather(*(p.future for p in pending))
            if permit is not None:
                permit.spent(len(rows), len(rows) * self.seconds_per_row)
            if (timing := TIMING.get()) is not None:
                timing.extend((p.enqueued, p.ran, p.done) for p in pending)
            return pending
        except TimeoutError:
            raise DeadlineExceeded(f"model {self.name}: deadline passed before the rows were run") from None
        except asyncio.CancelledError:
            for p in pending:
                p.gone = "client_gone"
            raise
        finally:
            for p in pending:  # the worker drops rows whose future is already done
                if not p.future.done():
                    p.future.cancel()
                elif not p.future.cancelled():
                    p.future.exception()  # mark retrieved: a failure already reached the caller

    # -- worker -----------------------------------------------------------------------------

    async def _loop(self) -> None:
        delay = self.limits.max_queue_delay_ms / 1000
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            first = self._queue[0].enqueued
            sparse = self._queue[0].sparse
            while (not sparse and len(self._queue) < self.limits.max_batch_size
                   and (left := first + delay - time.monotonic()) > 0):
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)
            batch = self._take()
            if batch:
                await self._execute(batch)

    def _take(self) -> list[_Pending]:
        """Drop dead rows, then pick the oldest row and the rows nearest to it in length."""
        now = time.monotonic()
        live = []
        for p in self._queue:
            if p.future.done() or p.deadline <= now:
                self.metrics.rows_dropped.labels(self.name, p.gone).inc()
                if not p.future.done():
                    p.future.set_exception(DeadlineExceeded(f"model {self.name}: deadline passed in the queue"))
            else:
                live.append(p)
        if not live:
            self._queue = []
            self._gauges()
            return []
        oldest, rest = live[0], live[1:]
        order = sorted(range(len(rest)), key=lambda i: abs(rest[i].length - oldest.length))
        chosen, longest = [oldest], oldest.length
        taken = set()
        for i in order:
            if len(chosen) >= self.limits.max_batch_size:
                break
            width = max(longest, rest[i].length, 1)
            if width * (len(chosen) + 1) > self.limits.max_batch_tokens:
                break
            chosen.append(rest[i])
            taken.add(i)
            longest = width
        self._queue = [p for i, p in enumerate(rest) if i not in taken]
        self._gauges()
        return chosen

    async def _execute(self, batch: list[_Pending]) -> None:
        self._running = len(batch)
        self._gauges()
        started = time.monotonic()
        for p in batch:
            self.metrics.queue_wait.labels(self.name).observe(started - p.enqueued)
        loop = asyncio.get_running_loop()
        try:
            results, compute = await loop.run_in_executor(self._executor, self._run_isolated, [p.row for p in batch])
        except Exception as exc:  # noqa: BLE001 - delivered to every caller of the batch
            results, compute = [exc] * len(batch), Compute()
        per_row = (time.monotonic() - started) / len(batch)
        self.seconds_per_row = per_row if not self.seconds_per_row else 0.8 * self.seconds_per_row + 0.2 * per_row
        done = time.monotonic()
        for p in batch:
            p.ran, p.done, p.compute = started, done, compute
        self.metrics.batch_size.labels(self.name).observe(len(batch))
        self.metrics.rows.labels(self.name).inc(len(batch))
        self.metrics.batch_tokens.labels(self.name, "real").inc(sum(p.length for p in batch))
        self.metrics.batch_tokens.labels(self.name, "padded").inc(len(batch) * max(p.length for p in batch))
        for p, result in zip(batch, results, strict=True):
            if p.future.done():
                continue
            if isinstance(result, Exception):
                err = result if isinstance(result, BackendError) else BackendError(f"model {self.name}: {result}")
                p.future.set_exception(err)
            else:
                p.future.set_result(result)
        self._running = 0
        self._gauges()

    def _run_isolated(self, rows: list[Arrays]) -> tuple[list[Arrays | Exception], Compute]:
        """Run the batch; if it fails, run each row alone so only the bad rows fail. Returns the rows' results
        and the compute time of the runs that succeeded."""
        try:
            return self._run(rows)
        except Exception as exc:  # noqa: BLE001
            if len(rows) == 1:
                log.warning("model %s: row failed: %s", self.name, exc)
                return [exc], Compute()
            log.warning("model %s: batch of %d failed (%s); retrying row by row", self.name, len(rows), exc)
            out: list[Arrays | Exception] = []
            total = Compute()
            for row in rows:
                try:
                    result, compute = self._run([row])
                    out.extend(result)
                    total += compute
                except Exception as row_exc:  # noqa: BLE001
                    out.append(row_exc)
            return out, total

    def _run(self, rows: list[Arrays]) -> tuple[list[Arrays], Compute]:
        started = time.perf_counter()
        batch = collate(rows, self.inputs)
        collated = time.perf_counter()
        outputs = self.backend.run(batch)
        ran = time.perf_counter()
        result = split(outputs, [self._length(r) for r in rows], self.outputs)
        done = time.perf_counter()
        self.metrics.inference_duration.labels(self.name).observe(done - started)
        compute = Compute(collated - started, ran - collated, done - ran)
        self.stats.executed(len(rows), compute)
        return result, compute

    # -- helpers ----------------------------------------------------------------------------

    def _length(self, row: Arrays) -> int:
        spec = self._length_input
        return 1 if spec is None else int(row[spec.name].shape[spec.seq_axis])

    def _gauges(self) -> None:
        self.metrics.queue_depth.labels(self.name).set(len(self._queue))
        self.metrics.rows_in_flight.labels(self.name).set(len(self._queue) + self._running)

    @staticmethod
    def _loop_time(deadline: float) -> float:
        """Convert a time.monotonic() deadline to the event loop's clock."""
        loop = asyncio.get_running_loop()
        return loop.time() + (deadline - time.monotonic())

    def _worker_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("batcher %s worker died", self.name, exc_info=task.exception())


def collate(rows: list[Arrays], specs: list[TensorSpec]) -> Arrays:
    """Stack rows into one batch, zero-padding each input's sequence axis to the longest row. Each row is
    copied once, straight into its place (rows can be large: a decoder's key/value cache)."""
    batch = {}
    for spec in specs:
        arrays = [np.asarray(r[spec.name], dtype=spec.dtype) for r in rows]
        axis = spec.seq_axis
        if axis is None:
            batch[spec.name] = np.stack(arrays)
            continue
        shape = list(arrays[0].shape)
        shape[axis] = max(a.shape[axis] for a in arrays)
        out = np.zeros((len(arrays), *shape), dtype=spec.dtype)
        for i, a in enumerate(arrays):
            place = [i] + [slice(None)] * a.ndim
            place[axis + 1] = slice(0, a.shape[axis])
            out[tuple(place)] = a
        batch[spec.name] = out
    return batch


def split(outputs: Arrays, lengths: list[int], specs: list[TensorSpec]) -> list[Arrays]:
    """Cut a batch's outputs back into rows, trimming padding off each output's sequence axis."""
    rows: list[Arrays] = [{} for _ in lengths]
    for spec in specs:
        value = outputs[spec.name]
        for i, n in enumerate(lengths):
            row = value[i]
            if spec.seq_axis is not None:
                row = np.take(row, np.arange(n), axis=spec.seq_axis)
            rows[i][spec.name] = row
    return rows
