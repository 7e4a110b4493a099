"""The in-process adaptive batcher: grouping, ordering, limits, failures, cancellations."""

import asyncio
import threading

import numpy as np
import pytest

from catsdogs.batching import AdaptiveBatcher, BatchStats, OverloadedError


class GatedModel:
    """Doubles its input; each call waits until the test opens the gate, so requests pile up
    while the model is 'busy'."""

    def __init__(self):
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(batch))
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("model exploded")
        return batch * 2


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


async def wait_until(condition):
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def test_a_lone_request_runs_at_once_in_a_batch_of_one():
    model, stats = GatedModel(), []
    batcher = AdaptiveBatcher(model, max_batch_size=8, max_queue=16, on_batch=stats.append)
    output = run(batcher.submit(np.array([3])))
    assert output.tolist() == [6]
    assert model.batch_sizes == [1]
    assert len(stats) == 1 and isinstance(stats[0], BatchStats) and stats[0].size == 1


def test_requests_arriving_while_the_model_is_busy_share_the_next_call():
    model = GatedModel()
    batcher = AdaptiveBatcher(model, max_batch_size=4, max_queue=64)

    async def scenario():
        model.gate.clear()
        first = asyncio.ensure_future(batcher.submit(np.array([100])))
        await wait_until(lambda: model.batch_sizes == [1])  # the model is now busy
        rest = [asyncio.ensure_future(batcher.submit(np.array([i]))) for i in range(10)]
        await wait_until(lambda: batcher.queue_depth == 10)
        model.gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = run(scenario())
    assert first.tolist() == [200]
    assert [output.tolist() for output in rest] == [[2 * i] for i in range(10)]  # in order
    assert model.batch_sizes == [1, 4, 4, 2]  # grouped, never above max_batch_size


def test_a_full_queue_refuses_new_requests_instead_of_growing():
    model = GatedModel()
    batcher = AdaptiveBatcher(model, max_batch_size=2, max_queue=3)

    async def scenario():
        model.gate.clear()
        running = asyncio.ensure_future(batcher.submit(np.array([0])))
        await wait_until(lambda: model.batch_sizes == [1])
        queued = [asyncio.ensure_future(batcher.submit(np.array([i]))) for i in range(3)]
        await wait_until(lambda: batcher.queue_depth == 3)
        with pytest.raises(OverloadedError, match="3 images are waiting"):
            await batcher.submit(np.array([9]))
        model.gate.set()
        return await asyncio.gather(running, *queued)

    assert len(run(scenario())) == 4


def test_a_model_failure_reaches_every_caller_of_that_batch_and_the_next_batch_works():
    model = GatedModel()
    batcher = AdaptiveBatcher(model, max_batch_size=8, max_queue=16)

    async def scenario():
        model.fail = True
        results = await asyncio.gather(
            *(batcher.submit(np.array([i])) for i in range(3)), return_exceptions=True
        )
        model.fail = False
        return results, await batcher.submit(np.array([5]))

    failed, after = run(scenario())
    assert all(isinstance(result, RuntimeError) for result in failed)
    assert after.tolist() == [10]


def test_requests_whose_client_has_gone_are_not_computed():
    model = GatedModel()
    batcher = AdaptiveBatcher(model, max_batch_size=8, max_queue=16)

    async def scenario():
        model.gate.clear()
        running = asyncio.ensure_future(batcher.submit(np.array([0])))
        await wait_until(lambda: model.batch_sizes == [1])
        gone = asyncio.ensure_future(batcher.submit(np.array([1])))
        kept = asyncio.ensure_future(batcher.submit(np.array([2])))
        await wait_until(lambda: batcher.queue_depth == 2)
        gone.cancel()
        model.gate.set()
        return await running, await kept

    _, kept = run(scenario())
    assert kept.tolist() == [4]
    assert model.batch_sizes == [1, 1]  # the cancelled request never reached the model


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        AdaptiveBatcher(GatedModel(), max_batch_size=0, max_queue=1)
