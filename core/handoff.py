"""Items passed from one thread to another with little room between them.

Validation hands each tenant's prints to read-back, which runs on its own connection while
the next tenant is compared. With at most `room` items waiting the producer waits for the
consumer, so memory holds a few tenants' prints, never a whole component's.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

from core import interrupts

T = TypeVar("T")
_POLL = 0.2  # seconds between looks at a stop request while waiting


class Handoff(Generic[T]):
    """One producer `put`s, one consumer iterates; `close` ends the items, `cancel` drops
    them (either side may cancel: a consumer that failed frees a producer waiting on it)."""

    def __init__(self, room: int = 2):
        self.room = room
        self._items: deque[T] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._cancelled = False

    @property
    def waiting(self) -> int:
        """Items handed over and not yet taken."""
        with self._changed:
            return len(self._items)

    def put(self, item: T) -> None:
        """Hand `item` over, waiting while `room` items wait; dropped once cancelled."""
        with self._changed:
            while len(self._items) >= self.room and not self._cancelled:
                self._changed.wait(_POLL)
                interrupts.check()
            if self._cancelled:
                return
            self._items.append(item)
            self._changed.notify_all()

    def close(self) -> None:
        """No more items: the consumer ends once it took the waiting ones."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def cancel(self) -> None:
        """Stop both sides now: waiting items are dropped, the consumer ends."""
        with self._changed:
            self._cancelled = True
            self._items.clear()
            self._changed.notify_all()

    def __iter__(self) -> Iterator[T]:
        while True:
            with self._changed:
                while not self._items and not self._closed and not self._cancelled:
                    self._changed.wait(_POLL)
                if self._cancelled or not self._items:
                    return
                item = self._items.popleft()
                self._changed.notify_all()
            yield item
