"""One ingest worker (a process): its MQTT session in, checked messages stored a batch at a time,
each batch acknowledged to the broker only after it committed.

Workers share the event stream and the gateways' dead letters through MQTT 5 shared
subscriptions. Retained device state, gateway status and commissioning records cannot be
shared (brokers give retained messages only to plain subscriptions), and they must be applied
in the order the broker keeps per topic: a gateway's last will carries the time it connected,
older than the "online" it published after, so only arrival order tells which came last. So one
reader takes them: worker 0, unless this ingest was started with --no-retained (another
machine's ingest reads them).
"""

from __future__ import annotations

import os
import signal
import ssl
import sys
import time
from dataclasses import dataclass

from . import boundary, compliance
from .mqttseam import BrokerUnreachable, Inbox, Received, SessionTakenOver
from .store import (
    NotOurDatabase,
    Rejection,
    Store,
    StoreUnreachable,
    Written,
    open_store,
    transient,
)

BATCH_MAX = 500  # messages in one transaction: what is waiting, up to this
IDLE_WAIT_S = 0.2  # how long take() waits for a first message (and how soon a stop is seen)
REPORT_EVERY_S = 10.0
DRAIN_IDLE_S = 2.0  # a drained session that has given nothing for this long is empty
EVENTS = "gasguard/v1/+/+/events"
DEAD_LETTERS = "gasguard/v1/+/gateway/+/rejected"
STATES = "gasguard/v1/+/+/state"
GATEWAYS = "gasguard/v1/+/gateway/+/status"
RECORDS = "gasguard/v1/+/+/commissioning"  # retained, like state: worker 0 reads them

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    tls: bool
    db: str
    group: str
    node: str
    workers: int
    retained: bool = True
    ca_file: str | None = None
    username: str | None = None
    password: str | None = None
    notify: str | None = None  # notify.toml: incidents' first messages decided in the batch

    def client_id(self, index: int) -> str:
        """Stable per worker, so its session (and what queued in it) is found again after a
        restart; unique per group and machine, so two ingests never take each other's."""
        return "gasguard-ingest-%s-%s-%d" % (self.group, self.node, index)

    def topics(self, index: int) -> list[str]:
        shared = ["$share/%s/%s" % (self.group, t) for t in (EVENTS, DEAD_LETTERS)]
        return shared + ([STATES, GATEWAYS, RECORDS] if index == 0 and self.retained else [])


def classify(r: Received) -> boundary.Message | Rejection:
    if r.topic is None:
        return Rejection("(not UTF-8)", "topic: not UTF-8", r.payload)
    try:
        return boundary.check(r.topic, r.payload)
    except boundary.Refused as e:
        return Rejection(r.topic, str(e), r.payload)
    except Exception as e:  # noqa: BLE001 - a check's own bug must not stop ingest either
        return Rejection(r.topic, "check failed: %s: %s" % (type(e).__name__, e), r.payload)


class Stopped(Exception):
    """Asked to stop while the database was away: the batch stays unacknowledged (re-sent)."""


class Worker:
    def __init__(self, cfg: Config, index: int, log=None, drain: bool = False) -> None:
        self.cfg, self.index, self.drain = cfg, index, drain
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.stopping = False
        self.parent = os.getppid()
        self.total = Written()
        self.store: Store | None = None
        # findings for the sites each batch touched; worker 0 also sweeps for what time changes
        self.compliance = compliance.Driver(
            sweep=index == 0 and not drain, log=self.log, opener=lambda: open_store(cfg.db)
        )

    def _hooked(self, store: Store) -> Store:
        if self.cfg.notify:  # checked by the parent at start (exit 2 there)
            from .notify import config, escalate

            store.incident_hooks.append(escalate.opened_hook(config.load(self.cfg.notify)))
        return store

    def _open(self) -> Store:
        while True:
            try:
                return self._hooked(open_store(self.cfg.db))
            except StoreUnreachable as e:
                if self.stopping:
                    raise Stopped from None
                self.log("worker %d: %s; retrying" % (self.index, e))
                time.sleep(2.0)

    def commit(self, items: list) -> Written:
        """Store the batch; retries a lost database for as long as it takes (nothing is acked
        meanwhile). A batch the database refuses for another reason is split, and a message it
        refuses alone becomes a rejection: no message can stop ingest."""
        backoff = 0.2
        while True:
            try:
                if self.store is None:
                    self.store = self._open()
                try:
                    return self.store.write(items, self.index)
                except Exception as e:  # noqa: BLE001
                    if transient(e):
                        raise
                    return self._one_by_one(items, e)
            except Exception as e:  # noqa: BLE001
                if not transient(e):
                    raise
                self.log("worker %d: database: %s; retrying" % (self.index, str(e)[:200]))
                if self.stopping:
                    raise Stopped from None
                self._drop_store()
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _one_by_one(self, items: list, first: Exception) -> Written:
        if len(items) == 1 and isinstance(items[0], Rejection):
            raise first  # even a rejection row cannot be written: a real fault
        out = Written()
        for it in items:
            try:
                w = self.store.write([it], self.index)  # type: ignore[union-attr]
            except Exception as e:  # noqa: BLE001
                if transient(e):
                    raise
                raw = it.raw if isinstance(it, Rejection) else it.text.encode()
                w = self.store.write(  # type: ignore[union-attr]
                    [Rejection(it.topic, "store: %s: %s" % (type(e).__name__, e), raw)], self.index
                )  # fmt: skip
            out.events += w.events
            out.duplicates += w.duplicates
            out.rejected += w.rejected
            out.sites |= w.sites
        return out

    def _drop_store(self) -> None:
        if self.store is not None:
            try:
                self.store.close()
            except Exception:  # noqa: BLE001 - it is already broken
                pass
            self.store = None

    def run(self) -> int:
        cfg = self.cfg
        try:
            self.store = self._hooked(open_store(cfg.db))
        except StoreUnreachable as e:
            self.log("gasguard regulator ingest: database unreachable: %s" % e)
            return EXIT_UNREACHABLE
        except NotOurDatabase as e:
            self.log("gasguard regulator ingest: %s" % e)
            return EXIT_USAGE
        tls = None
        if cfg.tls:
            tls = ssl.create_default_context(cafile=cfg.ca_file)
        inbox = Inbox(
            cfg.host,
            cfg.port,
            cfg.client_id(self.index),
            cfg.topics(self.index),
            tls=tls,
            username=cfg.username,
            password=cfg.password,
            drain=self.drain,
        )
        try:
            inbox.start()
        except BrokerUnreachable as e:
            self.log("gasguard regulator ingest: broker unreachable: %s" % e)
            return EXIT_UNREACHABLE
        if self.drain:
            print("worker %d: draining %s, a worker no longer run"
                  % (self.index, cfg.client_id(self.index)), flush=True)  # fmt: skip
        else:
            print(
                "worker %d: subscribed as %s to %s"
                % (self.index, cfg.client_id(self.index), ", ".join(cfg.topics(self.index))),
                flush=True,
            )
        drained = False
        try:
            drained = self._loop(inbox)
            return EXIT_OK
        except Stopped:
            return EXIT_OK
        except SessionTakenOver:
            self.log(
                "worker %d: another client connected as %s: stopping (give each ingest its own "
                "--node or --group)" % (self.index, cfg.client_id(self.index))
            )
            return EXIT_FAILED
        finally:
            inbox.close(forget=drained)
            self._drop_store()
            self.log(self._summary())

    def _summary(self) -> str:
        t = self.total
        return "worker %d: stored %d events, %d duplicates, %d rejected" % (
            self.index, t.events, t.duplicates, t.rejected)  # fmt: skip

    def _loop(self, inbox: Inbox) -> bool:
        """Until stopped; a drainer until its session gave nothing for DRAIN_IDLE_S (True)."""
        reported = heard = time.monotonic()
        while not self.stopping:
            if self.drain and time.monotonic() - heard > DRAIN_IDLE_S:
                return True
            if os.getppid() != self.parent:  # the ingest was killed: its lock on our ids is gone
                self.log("worker %d: the ingest process is gone: stopping" % self.index)
                break
            batch = inbox.take(BATCH_MAX, IDLE_WAIT_S)
            if batch:
                heard = time.monotonic()
                items = [classify(m) for m in batch]
                w = self.commit(items)
                inbox.ack(batch)
                self.compliance.touched(w.sites)  # where a finding may have changed
                self.total.events += w.events
                self.total.duplicates += w.duplicates
                self.total.rejected += w.rejected
            if self.store is not None and not self.drain:
                self.compliance.run_due(self.store)
            if time.monotonic() - reported > REPORT_EVERY_S:
                reported = time.monotonic()
                self.log(self._summary() + " so far")
        return False


def main(cfg: Config, index: int, drain: bool = False) -> None:
    """A worker process's entry (multiprocessing target): its exit code is the outcome."""
    w = Worker(cfg, index, drain=drain)

    def stop(signum, frame) -> None:
        w.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.exit(w.run())
