"""The worker inbox: one SQLite file per machine that never loses or doubles a task.

The orchestrator enqueues (idempotent by key), the worker claims under a lease
and a fence token, renews while it works and completes; the orchestrator reads
the responses and acknowledges them in a separate step. This is the only queue
implementation: the worker, the CLI, the transports and the benchmarks use it.
"""

from control.queue.producer import content_hash
from control.queue.queue import Queue
from control.queue.records import Claimed, Enqueued, Message
from control.queue.schema import FINISHED_STATES, MIGRATIONS, STATES

SCHEMA_VERSION = len(MIGRATIONS)

__all__ = [
    "FINISHED_STATES",
    "SCHEMA_VERSION",
    "STATES",
    "Claimed",
    "Enqueued",
    "Message",
    "Queue",
    "content_hash",
]
