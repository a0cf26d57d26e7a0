"""One inference worker: a thread that owns the engine, fed by a bounded queue. A full queue refuses at once
(the caller answers 503 with Retry-After) instead of piling requests up; a job whose client has gone is
skipped before it starts, or stopped before its next encoder or decoder pass when it is under way
(``serve.stoppable``)."""
from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

DISCONNECT_POLL_S = 0.25  # how often a waiting request looks whether its client is still there (an encoder pass: ~0.3 s)


class Busy(Exception):
    """The queue is full: try again later."""


class ClientGone(Exception):
    """The client of a request closed its connection before the reply: its job was skipped or stopped."""


class InferenceWorker:
    def __init__(self, queue_size: int) -> None:
        self._jobs: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._stop_current = threading.Event()  # the stop flag of the job under way (each job has its own)
        self._thread = threading.Thread(target=self._run, name="medsam-lite-inference", daemon=True)
        self._thread.start()
        self.done = 0
        self.running = 0  # jobs under way: 0 or 1
        self.stopped = 0  # jobs stopped under way because their client had gone

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args, stop = job
            if not future.set_running_or_notify_cancel():  # cancelled while waiting: the client left
                continue
            self._stop_current, self.running = stop, 1
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the request that asked
                self.stopped += isinstance(exc, ClientGone)
                future.set_exception(exc)
            self.done, self.running = self.done + 1, 0

    def check(self) -> None:
        """On the worker, before each engine pass: raise ClientGone when the job under way lost its client."""
        if self._stop_current.is_set():
            raise ClientGone("the client left; the job was stopped")

    def submit(self, fn: Callable[..., Any], *args: Any, stop: threading.Event | None = None) -> Future:
        """Queue ``fn(*args)``; ``stop``: the job's flag, set to stop it at its next ``check``."""
        future: Future = Future()
        try:
            self._jobs.put_nowait((future, fn, args, stop or threading.Event()))
        except queue.Full:
            raise Busy(f"the inference queue is full ({self._jobs.maxsize} waiting)") from None
        return future

    async def run(self, fn: Callable[..., Any], *args: Any, client) -> Any:
        """Run ``fn(*args)`` on the worker. ``client``: the request asking (a Starlette ``Request``); when its
        connection closes before the reply, a job not started is skipped and one under way stops before its next
        engine pass (a 3D Slicer user who cancels, a page closed during a propagation or a whole case), and
        ClientGone is raised here."""
        stop = threading.Event()
        waiting = asyncio.wrap_future(self.submit(fn, *args, stop=stop))
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
            if done:
                return waiting.result()
            if await client.is_disconnected():
                stop.set()  # under way: it stops at its next check (a job that has ended never reads it)
                waiting.cancel()  # waiting: it is skipped
                raise ClientGone("the client left before the reply")

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    def close(self) -> None:
        try:
            self._jobs.put_nowait(None)
        except queue.Full:
            pass
