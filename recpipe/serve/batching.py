"""Adaptive micro-batching of concurrent requests inside one asyncio event loop.

Scoring B session requests together costs far less than B separate calls (one matrix
product and one top-k instead of B; on two cores about 0.17 ms against 1 ms per query
over 100k items). :class:`MicroBatcher` collects the requests that arrive while the
previous batch is being scored and scores them as the next batch, in a worker thread so
that the event loop keeps accepting requests:

- idle: a request is scored at once, alone (no added latency by default);
- loaded: batches grow with the arrival rate, up to ``max_batch_size``.

``max_wait_ms`` > 0 additionally waits that long for company before scoring a batch
that is not full (a latency-for-throughput trade that rarely pays off on small CPUs).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

__all__ = ["MicroBatcher"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Score concurrent requests in batches with one function.

    Parameters
    ----------
    fn : callable
        ``fn(items) -> results``: one result per item, in order. It runs in a worker
        thread, one batch at a time. If it raises, every request of that batch gets
        the exception, so validate requests before :meth:`submit`.
    max_batch_size : int, default 64
        Most requests per call of ``fn``.
    max_wait_ms : float, default 0.0
        How long a batch that is not full waits for more requests.

    Examples
    --------
    >>> batcher = MicroBatcher(lambda xs: [x * 2 for x in xs])
    >>> async def main():
    ...     return await asyncio.gather(*(batcher.submit(i) for i in range(3)))
    >>> asyncio.run(main())
    [0, 2, 4]
    >>> batcher.close()
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 0.0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.fn = fn
        self.max_batch_size = int(max_batch_size)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recpipe-batch")
        #: Sizes of the batches scored so far (count per size), for monitoring and tests.
        self.batch_sizes: dict[int, int] = {}

    async def submit(self, item: T) -> R:
        """Queue one request; return its result once its batch is scored."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            if self.max_wait_s and len(self._queue) < self.max_batch_size:
                await asyncio.sleep(self.max_wait_s)
            batch = [
                self._queue.popleft() for _ in range(min(self.max_batch_size, len(self._queue)))
            ]
            batch = [(item, fut) for item, fut in batch if not fut.done()]  # skip cancelled
            if not batch:
                continue
            self.batch_sizes[len(batch)] = self.batch_sizes.get(len(batch), 0) + 1
            try:
                results = await loop.run_in_executor(
                    self._executor, self.fn, [item for item, _ in batch]
                )
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"batch function returned {len(results)} results for {len(batch)} items"
                    )
            except Exception as exc:  # handed to every waiting request, never lost
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    def close(self) -> None:
        """Stop the worker thread (pending requests are not scored)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
