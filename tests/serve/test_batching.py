"""Micro-batching: concurrent requests share batches, answers keep their order, errors reach
every waiting request."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from recpipe.serve.batching import MicroBatcher


def test_requests_that_queue_while_a_batch_runs_form_the_next_batch():
    release = threading.Event()
    seen: list[list[int]] = []

    def slow(items: list[int]) -> list[int]:
        seen.append(list(items))
        if len(seen) == 1:
            release.wait(5)  # hold the first batch until the others have queued
        return [i * 10 for i in items]

    batcher = MicroBatcher(slow, max_batch_size=4)

    async def main() -> list[int]:
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 7)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(first, *rest)

    assert asyncio.run(main()) == [0, 10, 20, 30, 40, 50, 60]
    assert seen == [[0], [1, 2, 3, 4], [5, 6]]
    assert batcher.batch_sizes == {1: 1, 4: 1, 2: 1}
    batcher.close()


def test_a_failing_batch_fails_its_requests_and_the_next_batch_still_runs():
    calls = []

    def flaky(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return items

    batcher = MicroBatcher(flaky)

    async def main():
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(1)
        return await batcher.submit(2)

    assert asyncio.run(main()) == 2
    batcher.close()


def test_wrong_result_count_is_an_error_and_wait_collects_requests():
    batcher = MicroBatcher(lambda items: items[:1], max_wait_ms=20)

    async def main():
        return await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)

    start = time.perf_counter()
    results = asyncio.run(main())
    assert time.perf_counter() - start >= 0.015
    assert all(isinstance(r, RuntimeError) for r in results)
    assert batcher.batch_sizes == {2: 1}
    batcher.close()
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(lambda x: x, max_batch_size=0)
