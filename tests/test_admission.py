"""Admission at the door and cancellation, on batchers with a fake backend: a burst far beyond capacity gets
only successes and immediate refusals, follow-up stages are never refused, a cancelled caller's rows never run."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from app.runtime.admission import Admission
from app.runtime.batcher import Batcher, BatchLimits
from app.runtime.errors import DeadlineExceeded, Overloaded
from app.runtime.metrics import Metrics
from tests.test_batcher import INPUTS, OUTPUTS, FakeBackend, queued, row, worker_blocked


@pytest.fixture
async def model():
    """Two stages on one fake backend (10 ms a batch), their admission, and the metrics."""
    backend, metrics = FakeBackend(delay=0.01), Metrics()
    stages = {name: Batcher(name, backend, INPUTS, OUTPUTS, BatchLimits(max_batch_size=8, max_queue_delay_ms=1),
                            metrics) for name in ("first", "second")}
    for stage in stages.values():
        stage.start()
    yield backend, stages, Admission("fake", stages, max_rows=400), metrics
    for stage in stages.values():
        await stage.stop()


async def two_stage_request(stages, admission, deadline: float) -> str:
    """4 rows in the first stage, then 8 in the second (twice the estimate: a follow-up is never refused)."""
    try:
        async with admission.permit({"first": 4, "second": 4}, deadline) as permit:
            await stages["first"].submit([row([1, 2])] * 4, deadline, permit)
            await stages["second"].submit([row([3])] * 8, deadline, permit)
        return "ok"
    except Overloaded:
        return "refused"
    except DeadlineExceeded:
        return "timed out"


async def test_a_burst_beyond_capacity_gets_successes_and_refusals_only(model):
    _, stages, admission, _ = model
    for stage in stages.values():  # measured costs, as the repository's warm-up gives them
        await stage.submit([row([1])], time.monotonic() + 5)
    deadline = time.monotonic() + 1.0
    outcomes = await asyncio.gather(*(two_stage_request(stages, admission, deadline) for _ in range(300)))
    assert "timed out" not in outcomes
    assert 0 < outcomes.count("ok") < 300 and outcomes.count("refused") > 0
    assert not admission.permits  # every permit was given back


async def test_the_row_bound_refuses_at_once_with_retry_after(model):
    _, _, admission, _ = model
    deadline = time.monotonic() + 60
    async with admission.permit({"first": 300}, deadline):
        with pytest.raises(Overloaded) as info:
            async with admission.permit({"first": 200}, deadline):
                pass
        assert info.value.retry_after >= 1
        async with admission.permit({"second": 100}, deadline):  # what fits is admitted
            pass


async def test_work_that_cannot_finish_in_time_is_refused_at_once(model):
    _, stages, admission, _ = model
    stages["first"].seconds_per_row = 0.01
    with pytest.raises(Overloaded, match="in time"):
        async with admission.permit({"first": 300}, time.monotonic() + 1):
            pass


async def test_a_cancelled_caller_has_its_queued_rows_dropped_and_counted(model):
    backend, stages, _, metrics = model
    batcher = stages["first"]
    backend.gate.clear()
    running = asyncio.create_task(batcher.submit([row([1])], time.monotonic() + 5))
    await worker_blocked(backend)
    gone = asyncio.create_task(batcher.submit([row([7, 7])] * 3, time.monotonic() + 5))
    await queued(batcher, 3)
    gone.cancel()  # what CancelOnDisconnect does when the client hangs up
    with pytest.raises(asyncio.CancelledError):
        await gone
    backend.gate.set()
    await running
    assert (await batcher.submit([row([2])], time.monotonic() + 5))[0]["total"] == 2
    assert not any(np.array_equal(shape, (3, 2)) for shape in backend.batches)  # the cancelled rows never ran
    labels = {"model": "first", "reason": "client_gone"}
    assert metrics.registry.get_sample_value("zhserve_rows_dropped_total", labels) == 3
