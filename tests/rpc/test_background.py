"""Background tasks started and stopped one way: once, cancelled from synchronous code,
stopped and waited for, a failure logged."""

from __future__ import annotations

import asyncio
import io
import json

from rpcgate.rpc.background import Background
from rpcgate.rpc.logs import configure_logging


def test_started_once_stopped_and_waited_for() -> None:
    async def scenario() -> tuple[int, bool, bool, bool]:
        runs = 0
        finished = asyncio.Event()

        async def work() -> None:
            nonlocal runs
            runs += 1
            try:
                await asyncio.sleep(3600)
            finally:
                finished.set()

        task = Background("t", work)
        task.start()
        task.start()  # running already: not a second one
        await asyncio.sleep(0)
        running = task.running
        await task.stop()
        return runs, running, task.running, finished.is_set()

    assert asyncio.run(scenario()) == (1, True, False, True)  # stop waited for its end


def test_cancelled_from_synchronous_code_and_started_again() -> None:
    async def scenario() -> list[bool]:
        async def work() -> None:
            await asyncio.sleep(3600)

        task = Background("t", work)
        task.start()
        seen = [task.running]
        task.cancel()  # e.g. the last subscriber leaving
        seen.append(task.running)
        task.start()
        seen.append(task.running)
        await task.stop()
        return seen

    assert asyncio.run(scenario()) == [True, False, True]


def test_a_task_that_fails_is_logged() -> None:
    captured = io.StringIO()
    configure_logging("info", stream=captured, cache=False)
    try:

        async def scenario() -> None:
            async def work() -> None:
                raise RuntimeError("boom")

            task = Background("feed-x", work)
            task.start()
            await asyncio.sleep(0.01)

        asyncio.run(scenario())
    finally:
        configure_logging("info", cache=False)
    events = [json.loads(line) for line in captured.getvalue().splitlines()]
    failed = [e for e in events if e["event"] == "background_task_failed"]
    assert failed and failed[0]["task"] == "feed-x" and "boom" in failed[0]["error"]


def test_stop_does_not_swallow_the_callers_own_cancellation() -> None:
    async def scenario() -> bool:
        async def stubborn() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(3600)  # takes its time to end

        task = Background("t", stubborn)
        task.start()
        await asyncio.sleep(0)
        stopping = asyncio.create_task(task.stop())
        await asyncio.sleep(0.01)
        stopping.cancel()
        try:
            await stopping
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(scenario())
