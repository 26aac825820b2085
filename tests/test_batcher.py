"""The dynamic batcher with a fake backend: merging, ordering, grouping, deadlines, backpressure, errors."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from app.runtime.batcher import Batcher, BatchLimits, TensorSpec, collate, split
from app.runtime.errors import BackendError, DeadlineExceeded
from app.runtime.metrics import Metrics

INPUTS = [TensorSpec("x", "int64", ("batch", "seq"))]
OUTPUTS = [TensorSpec("y", "int64", ("batch", "seq")), TensorSpec("total", "int64", ("batch",))]


class FakeBackend:
    """y = x * 2 per position, total = sum(x); a row containing -1 makes the whole batch fail."""

    def __init__(self, delay: float = 0.0):
        self.delay, self.batches, self.gate = delay, [], threading.Event()
        self.entered = threading.Event()  # set when a batch reaches the backend
        self.gate.set()

    def run(self, inputs):
        self.entered.set()
        self.gate.wait(5)
        x = inputs["x"]
        self.batches.append(x.shape)
        time.sleep(self.delay)
        if (x == -1).any():
            raise RuntimeError("poisoned row")
        return {"y": x * 2, "total": x.sum(axis=1)}


def row(values):
    return {"x": np.array(values, dtype=np.int64)}


@pytest.fixture
async def make():
    """make(backend, **limits) -> a started batcher; every batcher made is stopped after the test."""
    made = []

    async def build(backend, **limits) -> Batcher:
        batcher = Batcher("fake", backend, INPUTS, OUTPUTS, BatchLimits(**limits), Metrics())
        batcher.start()
        made.append(batcher)
        return batcher

    yield build
    for batcher in made:
        await batcher.stop()


async def worker_blocked(backend: FakeBackend) -> None:
    """Wait until the worker is inside the backend (held there by the closed gate)."""
    assert await asyncio.to_thread(backend.entered.wait, 5)


async def queued(batcher: Batcher, rows: int) -> None:
    """Let the event loop run until `rows` rows wait in the batcher's queue."""
    for _ in range(10_000):
        if len(batcher._queue) >= rows:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{len(batcher._queue)} rows queued, expected {rows}")


def deadline(seconds=5.0):
    return time.monotonic() + seconds


def test_collate_pads_and_split_trims():
    batch = collate([row([1, 2, 3]), row([4])], INPUTS)
    assert batch["x"].tolist() == [[1, 2, 3], [4, 0, 0]]
    rows = split({"y": batch["x"] * 2, "total": batch["x"].sum(1)}, [3, 1], OUTPUTS)
    assert rows[1]["y"].tolist() == [8] and rows[0]["total"] == 6


async def test_concurrent_requests_share_batches_and_get_their_own_results(make):
    backend = FakeBackend(delay=0.02)
    batcher = await make(backend, max_batch_size=16, max_queue_delay_ms=20)
    requests = [[row([i] * (1 + i % 5))] for i in range(40)]
    results = await asyncio.gather(*(batcher.submit(r, deadline()) for r in requests))
    for i, (out,) in enumerate(results):
        assert out["y"].tolist() == [2 * i] * (1 + i % 5)
        assert out["total"] == i * (1 + i % 5)
    assert len(backend.batches) < 40 / 2  # merged, not one call per request
    assert max(shape[0] for shape in backend.batches) > 1


async def test_rows_of_one_request_come_back_in_order(make):
    batcher = await make(FakeBackend(), max_batch_size=3)
    out = await batcher.submit([row([k] * (10 - k)) for k in range(10)], deadline())
    assert [int(o["total"]) for o in out] == [k * (10 - k) for k in range(10)]


async def test_batch_closes_on_token_budget_and_groups_by_length(make):
    backend = FakeBackend()
    backend.gate.clear()  # hold the worker so the queue fills up first
    batcher = await make(backend, max_batch_size=64, max_batch_tokens=40, max_queue_delay_ms=0)
    blocker = asyncio.create_task(batcher.submit([row([1])], deadline()))
    await worker_blocked(backend)
    lengths = [2, 20, 3, 19, 2, 20, 3, 18]
    pending = asyncio.gather(*(batcher.submit([row([1] * n)], deadline()) for n in lengths))
    await queued(batcher, len(lengths))
    backend.gate.set()
    await pending
    await blocker
    for n_rows, width in backend.batches[1:]:
        assert n_rows * width <= 40
    widths = sorted(width for _, width in backend.batches[1:])
    assert widths[0] <= 3 and widths[-1] >= 18  # short rows were not padded to the long ones


async def test_deadline_raises_and_drops_queued_rows(make):
    backend = FakeBackend()
    backend.gate.clear()
    batcher = await make(backend, max_queue_delay_ms=0)
    first = asyncio.create_task(batcher.submit([row([1])], deadline(5)))
    await worker_blocked(backend)
    with pytest.raises(DeadlineExceeded):
        await batcher.submit([row([2]), row([3])], deadline(0.1))
    backend.gate.set()
    assert (await first)[0]["total"] == 1
    assert (await batcher.submit([row([4])], deadline()))[0]["total"] == 4  # runs after anything queued before it
    assert backend.batches == [(1, 1), (1, 1)]  # the expired rows never ran
    dropped = batcher.metrics.registry.get_sample_value("zhserve_rows_dropped_total",
                                                        {"model": "fake", "reason": "deadline"})
    assert dropped == 2


async def test_a_failing_row_fails_only_its_own_request(make):
    backend = FakeBackend(delay=0.01)
    batcher = await make(backend, max_batch_size=8, max_queue_delay_ms=30)
    good = [batcher.submit([row([i, i])], deadline()) for i in range(5)]
    bad = batcher.submit([row([-1, 3])], deadline())
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert isinstance(results[-1], BackendError)
    assert [int(r[0]["total"]) for r in results[:-1]] == [0, 2, 4, 6, 8]


async def test_a_lone_request_in_sparse_traffic_does_not_wait_for_the_delay(make):
    backend = FakeBackend()
    batcher = await make(backend, max_queue_delay_ms=500)
    started = time.monotonic()
    await batcher.submit([row([1, 2]), row([3])], deadline())
    assert time.monotonic() - started < 0.25  # ran at once, not after 500 ms
    assert backend.batches == [(2, 2)]  # both rows of the request in one batch
