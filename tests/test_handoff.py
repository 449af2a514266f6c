"""The hand-off between validation's comparison and read-back (`core.handoff`): bounded,
ordered, and neither side can leave the other waiting for ever. Pure threads, no server."""

from __future__ import annotations

import threading

from core.handoff import Handoff


def test_items_arrive_in_order_and_the_producer_waits_for_room():
    feed: Handoff[int] = Handoff(room=2)
    taken: list[int] = []
    release = threading.Event()

    def consume() -> None:
        release.wait(10)
        for item in feed:
            taken.append(item)

    worker = threading.Thread(target=consume)
    worker.start()
    put = threading.Thread(target=lambda: [feed.put(i) for i in range(10)] and feed.close())
    put.start()
    put.join(0.5)
    assert put.is_alive() and feed.waiting == 2  # the third put waits for room
    release.set()
    put.join(10)
    worker.join(10)
    assert taken == list(range(10))


def test_a_consumer_that_stops_frees_a_producer_waiting_on_it():
    feed: Handoff[int] = Handoff(room=1)
    feed.put(0)
    done = threading.Event()

    def produce() -> None:
        feed.put(1)  # no room: waits until the consumer cancels
        feed.put(2)  # dropped at once
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    assert not done.wait(0.3)
    feed.cancel()  # e.g. read-back failed
    assert done.wait(5)
    assert list(feed) == []


def test_close_ends_the_consumer_after_the_waiting_items():
    feed: Handoff[str] = Handoff(room=3)
    feed.put("a")
    feed.put("b")
    feed.close()
    assert list(feed) == ["a", "b"]
