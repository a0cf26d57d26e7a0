"""One inference worker: a thread that owns the engine, fed by a bounded queue. A full queue refuses at once
(the caller answers 503 with Retry-After) instead of piling requests up; a job whose client has gone is
skipped before it starts."""
from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable


class Busy(Exception):
    """The queue is full: try again later."""


class InferenceWorker:
    def __init__(self, queue_size: int) -> None:
        self._jobs: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._thread = threading.Thread(target=self._run, name="medsam-lite-inference", daemon=True)
        self._thread.start()
        self.done = 0

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():  # cancelled while waiting: the client left
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the request that asked
                future.set_exception(exc)
            self.done += 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            self._jobs.put_nowait((future, fn, args))
        except queue.Full:
            raise Busy(f"the inference queue is full ({self._jobs.maxsize} waiting)") from None
        return future

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the worker; cancelling the awaiting task cancels a job that has not started."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    def close(self) -> None:
        try:
            self._jobs.put_nowait(None)
        except queue.Full:
            pass
