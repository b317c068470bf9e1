"""Worker 0's minute sweep of every unit runs apart from its loop, on a connection of its own:
at a city's size it takes seconds, and the worker's share of the events (alarms too) waited."""

from __future__ import annotations

import time

from gasguard.regulator.compliance import Driver
from gasguard.regulator.store import open_store


def test_the_sweep_runs_in_a_thread_of_its_own_and_never_raises(db_url):
    open_store(db_url, create=True).close()
    opened, logged = [], []

    def opener():
        time.sleep(0.5)  # a long sweep
        s = open_store(db_url)
        opened.append(s)
        return s

    d = Driver(sweep=True, log=logged.append, opener=opener)
    store = open_store(db_url)
    t = time.monotonic()
    assert d.run_due(store) is None
    assert time.monotonic() - t < 0.3  # the loop goes on
    d.run_due(store)  # within the minute: no second sweep
    d.sweeper.join(10)
    assert len(opened) == 1 and not logged

    def broken():
        raise OSError("database gone")

    d = Driver(sweep=True, log=logged.append, opener=broken)
    d.run_due(store)
    d.sweeper.join(10)
    assert logged and "database gone" in logged[0]
    store.close()
