"""The local transport: the worker's inbox is a file on this machine.

For the demo, the tests and a one-machine fleet. It calls the same protocol
handler the remote `control queue rpc` runs, in-process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from control import rpc
from control.errors import SuperagentError
from control.inventory import Worker
from control.queue import Queue
from control.transport.base import InboxCalls, PollResult, local_queue_path, poll_result, unwrap


class LocalTransport(InboxCalls):
    name = "local"

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._queues: dict[str, Queue] = {}
        self._clock = clock  # the worker's clock: a test can drive it

    def _queue(self, worker: Worker) -> Queue:
        if worker.name not in self._queues:
            self._queues[worker.name] = Queue(
                local_queue_path(worker), create=False, clock=self._clock
            )
        return self._queues[worker.name]

    def call(self, worker: Worker, request: dict[str, Any]) -> dict[str, Any]:
        return unwrap(worker.name, rpc.handle(self._queue(worker), request))

    def poll_request(
        self, workers: Sequence[Worker], request: dict[str, Any]
    ) -> dict[str, PollResult]:
        results = {}
        for worker in workers:
            try:
                answer = self.call(worker, request)
            except SuperagentError as exc:
                results[worker.name] = PollResult(worker.name, False, error=str(exc))
            else:
                results[worker.name] = poll_result(worker.name, answer)
        return results

    def close(self) -> None:
        for queue in self._queues.values():
            queue.close()
        self._queues.clear()
