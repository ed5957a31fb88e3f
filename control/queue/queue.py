"""The inbox as one object: every side of it over one connection."""

from __future__ import annotations

from control.queue.drain import Draining
from control.queue.leases import Leases
from control.queue.producer import Producer
from control.queue.reading import Reading


class Queue(Producer, Leases, Draining, Reading):
    """One worker inbox (`queue.db`). Safe to share between threads of one process.

    `sync` sets the durability of the commits that must survive a power cut
    (enqueue, complete, fail, cancel, ack): "full" (the default) or "normal".
    Claims, renewals and heartbeats always commit with NORMAL: losing one to a
    power cut only makes the work run again, and the fence keeps that safe.
    """
