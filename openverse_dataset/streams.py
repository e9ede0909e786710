"""Hand-offs between a producer thread and its consumer that never leave either side blocked for good."""

from __future__ import annotations

import queue
import threading


def put_unless_stopped(q: queue.Queue, item: object, stop: threading.Event, poll: float = 0.2) -> bool:
    """Put `item` on a bounded queue, giving up once `stop` is set; True when it was put.

    A plain blocking `put` hangs the producer (and whoever joins it) when the consumer stops reading.
    """
    while not stop.is_set():
        try:
            q.put(item, timeout=poll)
            return True
        except queue.Full:
            continue
    return False
