"""The deliverer (`gasguard regulator notify`): escalation ticks and the outbox sent, asyncio.

One loop: every tick_s the escalation engine fires what is due (regulator/notify/escalate.py);
whenever rows are due it claims up to `concurrency` of them (regulator/notify/outbox.claim: a
lease, so several deliverers share the outbox and a dead one's rows come back) and sends each
through its channel's adapter. Every attempt is a row in notify_attempts. A failure is retried
with exponential backoff (backoff_s doubling, capped at backoff_cap_s, jittered down to 80 %
so a city's worth of retries does not arrive at a recovered receiver in one instant) until
`attempts` or `give_up_after_s`; then the row is failed, audited and counted, never silently
dropped. A receiver's 4xx (other than 408/425/429) is refused for good: failed at once.

Wake-up: PostgreSQL tells us at the commit that enqueued (LISTEN/NOTIFY, outbox.WAKE), so the
first message leaves within milliseconds of the ingest's commit; SQLite has no such thing, so
the outbox is looked at every poll_s (a read; the write lock only when something is due).

The store (sqlite3 and psycopg are blocking, and a sqlite3 connection belongs to its thread)
lives in one thread of its own; the loop hands it work and never blocks on the database.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import escalate, outbox
from .channels import Adapter, Failed, Outgoing, build
from .config import Config

REPORT_EVERY_S = 60.0
STATUS_EVERY_S = 10.0


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def backoff(cfg: Config, attempts: int) -> float:
    d = cfg.delivery
    return min(d.backoff_cap_s, d.backoff_s * 2 ** max(0, attempts - 1)) * random.uniform(0.8, 1)


class Deliverer:
    def __init__(self, opener: Callable[[], Any], cfg: Config, *,
                 adapters: dict[str, Adapter] | None = None, log: Callable[[str], None] = print,
                 providers: list[escalate.Provider] | None = None,
                 clock: Callable[[], datetime.datetime] = utcnow,
                 postgres_url: str | None = None) -> None:  # fmt: skip
        self.opener, self.cfg, self.log, self.clock = opener, cfg, log, clock
        self.providers = providers
        self.adapters = adapters
        self.postgres_url = postgres_url
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="notify-db")
        self.store: Any = None
        self.inflight: set[asyncio.Task] = set()
        self.busy: collections.Counter[str] = collections.Counter()  # in flight per channel
        self.figures = {"sent": 0, "retried": 0, "failed": 0, "escalations": 0}
        self._stop_listen = threading.Event()

    async def db(self, fn: Callable[..., Any], *args: Any) -> Any:
        def call() -> Any:
            if self.store is None:
                self.store = self.opener()
            try:
                return fn(self.store, *args)
            except Exception as e:
                from ..store import transient

                if transient(e):  # lost or busy: a new connection next time
                    try:
                        self.store.close()
                    finally:
                        self.store = None
                raise

        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    def _listen(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        import psycopg

        while not self._stop_listen.is_set():
            try:
                with psycopg.connect(self.postgres_url, autocommit=True,
                                     connect_timeout=5) as conn:  # fmt: skip
                    conn.execute("LISTEN " + outbox.WAKE)
                    loop.call_soon_threadsafe(wake.set)  # whatever came while we were away
                    while not self._stop_listen.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            loop.call_soon_threadsafe(wake.set)
            except psycopg.Error as e:
                self.log("notify: LISTEN lost (%s); polling until it is back" % e)
                self._stop_listen.wait(1.0)

    async def run(self, stop: asyncio.Event) -> None:
        import aiohttp

        d = self.cfg.delivery
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None),
            connector=aiohttp.TCPConnector(limit=d.concurrency),
        )
        if self.adapters is None:
            self.adapters = {n: build(c, http) for n, c in self.cfg.channels.items()}
        listener = None
        if self.postgres_url:
            listener = threading.Thread(target=self._listen, args=(loop, wake), daemon=True)
            listener.start()
        poll = d.tick_s if listener else d.poll_s
        try:
            for c in await self.db(escalate.unplaced, self.cfg):
                self.log(
                    "notify: WARNING contact %s %s via %s: node %r is not in the registry; "
                    "nobody there is told" % (c.role, c.name or c.to, c.channel, c.node)
                )
        except Exception as e:  # the database away: the loop below says so and retries
            self.log("notify: contacts not checked against the registry: %s" % e)
        next_tick = next_report = next_status = 0.0
        reports: asyncio.Task | None = None
        try:
            while not stop.is_set():
                mono = time.monotonic()
                try:
                    if mono >= next_tick:
                        next_tick = mono + d.tick_s
                        self.figures["escalations"] += await self.db(
                            escalate.tick, self.cfg, self.clock(), self.providers
                        )
                    if mono >= next_report and self.cfg.report_recipients:
                        next_report = mono + REPORT_EVERY_S
                        if reports is None or reports.done():  # never in the loop's way
                            reports = asyncio.create_task(self._reports())
                    free = d.concurrency - len(self.inflight)
                    rows = []
                    if free > 0:
                        # one channel gets half the slots at most: a receiver that hangs to
                        # its timeout must not hold the owner's SMS back behind its queue
                        share = max(1, d.concurrency // 2)
                        room = {ch: share - self.busy[ch] for ch in self.cfg.channels}
                        rows = await self.db(
                            outbox.claim,
                            self.clock(),
                            free,
                            d.lease_s,
                            room,
                            d.lease_s + d.backoff_cap_s + 60,
                        )
                    for r in rows:
                        self.busy[r["channel"]] += 1
                        t = asyncio.create_task(self._one(r))
                        self.inflight.add(t)
                        t.add_done_callback(self.inflight.discard)
                        t.add_done_callback(lambda _, ch=r["channel"]: self.busy.subtract([ch]))
                except Exception as e:  # the database away: say so, try again shortly
                    self.log("notify: %s: %s" % (type(e).__name__, str(e)[:200]))
                    rows = []
                    await asyncio.sleep(1.0)
                if mono >= next_status:
                    next_status = mono + STATUS_EVERY_S
                    self.log(
                        "notify: sent %(sent)d, retried %(retried)d, failed %(failed)d, "
                        "escalation messages %(escalations)d" % self.figures
                    )
                if rows and len(rows) == free:
                    await asyncio.sleep(0)  # more may be due: claim again at once
                    continue
                await self._wait(wake, stop, min(poll, max(0.0, next_tick - time.monotonic())))
        finally:
            self._stop_listen.set()
            if reports is not None:
                reports.cancel()
            if self.inflight:
                await asyncio.wait(self.inflight, timeout=d.timeout_s + 1)
            for t in list(self.inflight):  # still sending: its row comes back after the lease
                t.cancel()
            await asyncio.gather(*self.inflight, return_exceptions=True)
            for a in self.adapters.values():
                await a.close()
            await http.close()
            await self.db(lambda s: s.close())
            self.pool.shutdown(wait=True)

    async def _wait(self, wake: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
        waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        wake.clear()

    async def _one(self, r: dict[str, Any]) -> None:
        msg = Outgoing(r["key"], r["message_id"], r["channel"], r["recipient"], r["kind"],
                       r["site"], r["body"], r["attempts"])  # fmt: skip
        adapter = (self.adapters or {}).get(r["channel"])
        try:
            if adapter is None:
                raise Failed("no channel %r in the config" % r["channel"], retry=False)
            spec = self.cfg.channels.get(r["channel"])  # its own timeout_s, or the delivery's
            limit = spec.options["timeout_s"] if spec else self.cfg.delivery.timeout_s
            detail = await asyncio.wait_for(adapter.send(msg), limit + 5)
        except Failed as e:
            await self._failed(r, e.detail, e.retry)
            return
        except Exception as e:  # an adapter's own bug or a library's surprise: retried, said
            await self._failed(r, "%s: %s" % (type(e).__name__, str(e)[:200]), True)
            return
        await self.db(outbox.sent, r["key"], self.clock(), detail)
        self.figures["sent"] += 1

    async def _failed(self, r: dict[str, Any], detail: str, retry: bool) -> None:
        d, now = self.cfg.delivery, self.clock()
        age = (now - escalate.parse_time(r["created_at"])).total_seconds()
        if not retry or r["attempts"] >= d.attempts or age >= d.give_up_after_s:
            await self.db(outbox.give_up, r["key"], now, detail)
            self.figures["failed"] += 1
            self.log(
                "notify: GAVE UP on %s to %s (%s) after %d attempt(s): %s"
                % (r["kind"], r["channel"], r["subject"], r["attempts"], detail)
            )
            return
        due = now + datetime.timedelta(seconds=backoff(self.cfg, r["attempts"]))
        await self.db(outbox.retry, r["key"], now, due, detail)
        self.figures["retried"] += 1

    async def _reports(self) -> None:
        """The weekly reports' seam (regulator/reports/schedule.enqueue_due). On a connection
        and thread of its own: printing takes Chromium seconds, which alarms must not wait."""
        from ..reports import schedule

        cfg = self.cfg

        def once() -> list[str]:
            store = self.opener()
            try:
                return schedule.enqueue_due(
                    store,
                    self.clock(),
                    list(cfg.report_recipients),
                    Path(cfg.report_dir or "reports"),
                    console_url=cfg.base_url,
                )
            finally:
                store.close()

        try:
            keys = await asyncio.to_thread(once)
        except Exception as e:  # no Chromium, a full disk: said, tried again next time
            self.log("notify: weekly reports not made: %s: %s" % (type(e).__name__, e))
            return
        if keys:
            self.log("notify: %d weekly report message(s) enqueued" % len(keys))
