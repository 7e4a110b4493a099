"""Adaptive batching inside the serving process: concurrent requests share one model call.

The batch is whatever arrived while the model was busy with the previous one (up to
max_batch_size). There is no timer: a lone request runs at once (no added latency at low
load), and under load the batch grows with the queue, so throughput rises to the model's
batched rate. Requests are pixel arrays already validated and decoded by their own request,
so a bad upload never reaches (or fails) a batch of other clients' images.

Running in the same process as the HTTP handler avoids a second process and the
serialisation of every image between the two, which cost about 70% of the throughput on a
2-core machine (the notes of issue 5 hold the measurements).
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


class OverloadedError(RuntimeError):
    """More images are waiting than max_queue: the caller should retry later (503)."""


@dataclass(frozen=True)
class BatchStats:
    size: int
    queue_wait_s: float  # of the oldest image in the batch
    inference_s: float


@dataclass
class _Pending:
    pixels: np.ndarray
    future: asyncio.Future
    enqueued: float


class AdaptiveBatcher:
    """Runs infer(batch) on one dedicated thread, one batch at a time.

    infer: (N, ...) uint8 images -> (N, ...) outputs, called with 1..max_batch_size images.
    on_batch: called on the event loop after every batch (metrics).
    """

    def __init__(
        self,
        infer: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_queue: int,
        on_batch: Callable[[BatchStats], None] | None = None,
    ):
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be at least 1")
        self.infer = infer
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        # The model's own threads do the parallel work; one caller thread keeps calls in order.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="batcher")

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    async def submit(self, pixels: np.ndarray) -> np.ndarray:
        """The model's output for one image (pixels without a batch axis)."""
        if len(self._queue) >= self.max_queue:
            raise OverloadedError(f"{len(self._queue)} images are waiting; retry shortly")
        self._start()
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(pixels, future, time.perf_counter()))
        self._wake.set()
        return await future

    def _start(self) -> None:
        # Made on first use: the asyncio objects belong to the loop that serves requests.
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            batch = self._take_batch()
            if not self._queue:
                self._wake.clear()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(
                    self._executor, self.infer, np.stack([item.pixels for item in batch])
                )
            except Exception as error:  # the model failed: every caller in the batch hears it
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            finished = time.perf_counter()
            for item, output in zip(batch, outputs, strict=True):
                if not item.future.done():
                    item.future.set_result(output)
            if self.on_batch is not None:
                waited = started - batch[0].enqueued
                self.on_batch(BatchStats(len(batch), waited, finished - started))

    def _take_batch(self) -> list[_Pending]:
        batch = []
        while self._queue and len(batch) < self.max_batch_size:
            item = self._queue.popleft()
            if not item.future.done():  # skip requests whose client has gone
                batch.append(item)
        return batch
