"""The gateway service: device links -> sessions -> durable outbox -> publisher, plus health.

Data flows one way. A link's bytes go through its LinkSession (auth, the session handshake,
the strict body boundary); events become CloudEvents, checked against the schemas and committed
to the outbox in group commits; only then does the device get its ack. An event the schema
refuses is acknowledged too and goes to the dead-letter topic with its raw body. The link
reader never waits on the disk: batches are handed to the committer in arrival order, which is
also the order rows are published in.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import sqlite3
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from gasguard.gateway.session import REFUSED, DeviceState, LinkSession
from gasguard.protocol import VERSION, cloudevents
from gasguard.protocol.auth import Signer

from . import identity, limits, schemas, statedir, statusjson
from .committer import Committer
from .config import GatewayConfig
from .exits import EX_CANTCREAT, EX_OSERR, EX_SOFTWARE, RESTART_WINDOW_S, RESTARTS, Fatal
from .health import Health
from .http import StatusServer
from .ingest import Ingest
from .linkproto import LinkProtocol, serial_link
from .links import LinkTable
from .logs import RateLimited
from .outbox import Item, OutboxWorker, Row
from .publisher import Publisher, dumps
from .records import open_for_gateway

log = logging.getLogger("gasguard.gateway")

STATE_REFRESH_S = 60.0  # every online device's retained state is published again this often
HEALTH_EVERY_MAX_S = 1.0  # devices are checked for going offline at least this often
RESTART_PAUSE_S = 0.5  # a failed task waits this long for each recent failure,
RESTART_PAUSE_MAX_S = 10.0  # at most this
RETENTION_EVERY_S = 30.0
GIL_SWITCH_S = 0.0002
REJECT_LOG_EVERY_S = 60.0
STOP_PUBLISH_S = 2.0  # at shutdown, for the broker to acknowledge the "offline" status
STOP_TASKS_S = 5.0  # for the tasks to end once cancelled
RECORDS_POLL_S = 1.0  # how soon a record `gasguard gateway record add` committed is published
RECORDS_RETRY_S = 60.0  # records.sqlite unreadable: read (and say so in the log) this often


class Gateway:
    def __init__(self, cfg: GatewayConfig, clock: Callable[[], float] = time.time) -> None:
        """clock: the wall clock, for the times the gateway publishes; every duration and
        deadline is on time.monotonic (a clock stepped by NTP moves neither)."""
        self.cfg = cfg
        self.clock = clock
        statedir.prepare(cfg.state_dir)  # Fatal(73) naming the path if it is not usable
        try:
            ident = identity.next_boot(cfg.state_dir)
        except OSError as e:
            raise Fatal(
                EX_CANTCREAT, "gateway identity in %s: %s" % (cfg.state_dir, e.strerror)
            ) from None
        self.outbox, self.data_lost = statedir.open_outbox(
            cfg.state_dir, cfg.outbox_max_events, cfg.outbox_max_age_s
        )
        self.boot, self.instance = ident.boot, ident.instance
        # one Signer per device for every link (each link building its own was most of a
        # link's memory: ~250 KB a link with a site's keys)
        self.signers = {d: Signer(k) for d, k in cfg.keys.items()}
        self.worker = OutboxWorker(self.outbox)
        self.devices: dict[str, DeviceState] = {}
        self.frames: Counter[str] = Counter()  # by result, over every link
        self.health = Health(cfg.site, cfg.offline_after_s, clock)
        self._dirty: set[str] = set()
        self.committer = Committer(self.worker, self._committed)
        self.publisher = Publisher(
            cfg.mqtt,
            site=cfg.site,
            gateway_id=cfg.gateway_id,
            version=VERSION,
            outbox=self.worker,
            states=self._take_states,
            figures=self._figures,
        )
        # a board with a wrong or missing key, or events the schema refuses: by device, not
        # a line per frame
        self.rejected_log = RateLimited(log, REJECT_LOG_EVERY_S)
        self.ingest = Ingest(
            cfg,
            clock=clock,
            health=self.health,
            committer=self.committer,
            devices=self.devices,
            frames=self.frames,
            rejected_log=self.rejected_log,
            mark=self._mark,
            gateway_event=self._gateway_event,
        )
        self.handle = self.ingest.handle  # a link's messages (LinkProtocol calls it per read)
        self.committer.after = self.ingest.send_acks  # acks once their commits have ended
        self.dropped_by_retention = 0
        self.links_up: dict[str, bool] = {}
        self.started = time.monotonic()
        self.tcp_port: int | None = None
        self.status_port: int | None = None
        self.publisher.identity = (self.instance, self.boot)
        try:  # commissioning records, added by `gasguard gateway record add` (another process)
            self.records = open_for_gateway(cfg.state_dir, log)
        except sqlite3.Error as e:
            msg = "commissioning records in %s: %s" % (cfg.state_dir, e)
            raise Fatal(EX_CANTCREAT, msg) from None
        self.publisher.on_record_delivered = self._record_delivered
        self.http = StatusServer(self)
        self.links = LinkTable(cfg.tcp.max_links if cfg.tcp is not None else 1)
        self._tasks: list[asyncio.Task] = []
        self.task_failures: Counter[str] = Counter()
        self._switch_interval = sys.getswitchinterval()

    # --- sessions ------------------------------------------------------------------------------

    def session(self) -> LinkSession:
        s = LinkSession(
            self.signers, gateway_boot=self.boot, devices=self.devices, wall=self.clock
        )
        s.counts = self.frames  # one set of counters for the status page
        s.on_reject = self._rejected_board
        return s

    def _rejected_board(self, reason: str, device: str) -> None:
        """A frame intact on the line but from a device we hold no key for, or whose tag does
        not verify with its key: the installer needs the device id to find the board."""
        why = {"auth": "wrong key (the frame's tag does not verify)",
               "unknown-device": "no key for this device id"}.get(reason, reason)  # fmt: skip
        self.rejected_log.warn(
            (device, reason), "board rejected", device=device, reason=reason, detail=why
        )

    def _committed(self, rows: list[Row]) -> None:
        self.publisher.committed(rows)

    def _take_states(self, everything: bool) -> dict[str, bytes]:
        devs = set(self.health.devices) if everything else self._dirty
        self._dirty = set()
        out = {}
        for d in devs:
            try:
                out[d] = dumps(schemas.check(self.health.state_event(d)))
            except schemas.SchemaError as e:
                log.error("state not published", extra={"device": d, "error": str(e)})
        return out

    def _figures(self) -> dict[str, int]:
        """The retained status's counts (the publisher adds its dead letters)."""
        frames = self.frames
        return {"devices_online": self.health.online_count(), "outbox": self.outbox.depth(),
                "refused": sum(frames[k] for k in REFUSED)}  # fmt: skip

    def _mark(self, device: str) -> None:
        self._dirty.add(device)
        self.publisher.wake.set()

    def _gateway_event(self, device: str, kind: str, detail: str) -> Item:
        now = self.clock()
        # unique for ever: this gateway's instance and boot, and the time in microseconds
        ce_id = "%s:%s:%s:%d:%d" % (
            device, kind.split(".")[-1], self.instance, self.boot, int(now * 1e6)
        )  # fmt: skip
        ce = schemas.check(
            cloudevents.gateway_event(self.cfg.site, device, kind, ce_id, now, detail)
        )
        topic = cloudevents.topic_events(self.cfg.site, device)
        return Item(ce_id=ce_id, device=device, topic=topic, payload=dumps(ce))

    # --- commissioning records -----------------------------------------------------------------

    async def _watch_records(self) -> None:
        """Each device's newest record to the publisher: at start, then whenever another
        process committed one (PRAGMA data_version, a cheap read)."""
        offered: dict[str, str] = {}  # device -> digest (a row id begins again in a new file)
        while True:
            try:
                await self._offer_records(offered)
            except sqlite3.Error as e:
                # a file damaged under the running gateway: failing the task five times a
                # minute stopped the whole gateway (exit 70) for the paperwork; the next start
                # moves the file aside (records.open_for_gateway)
                log.error("commissioning records unreadable",
                          extra={"error": repr(e), "retry_s": RECORDS_RETRY_S})  # fmt: skip
                self.records._version = None  # all of it again, once it reads
                await asyncio.sleep(RECORDS_RETRY_S)
            await asyncio.sleep(RECORDS_POLL_S)

    async def _offer_records(self, offered: dict[str, str]) -> None:
        """Each device's newest record not yet offered, when another process committed one."""
        if await asyncio.to_thread(self.records.changed):
            for dev, h in (await asyncio.to_thread(self.records.newest, False)).items():
                if offered.get(dev) == h.digest:
                    continue
                offered[dev] = h.digest
                try:
                    ce = cloudevents.commissioning(
                        self.cfg.site, dev, self.cfg.gateway_id, json.loads(h.record),
                        h.digest, h.added_at,
                    )  # fmt: skip
                    payload = dumps(schemas.check(ce))
                except Exception as e:  # noqa: BLE001 - one held row must not end the task
                    # (and every other device's delivery with it); a newer record replaces it
                    log.error("commissioning record not deliverable",
                              extra={"device": dev, "digest": h.digest[:16],
                                     "error": "%s: %s" % (type(e).__name__, e)})  # fmt: skip
                    continue
                self.publisher.offer_record(dev, h.id, payload)
                log.info("commissioning record to deliver",
                         extra={"device": dev, "digest": h.digest[:16]})  # fmt: skip

    def _record_delivered(self, row_id: int) -> None:
        log.info("commissioning record delivered", extra={"row": row_id})
        asyncio.get_running_loop().run_in_executor(None, self.records.delivered, row_id)

    # --- housekeeping --------------------------------------------------------------------------

    async def _watch_health(self) -> None:
        last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(min(HEALTH_EVERY_MAX_S, self.cfg.heartbeat_s / 2))
            items = [
                self._gateway_event(dev, "device.offline", detail)
                for dev, detail in self.health.expire()
            ]
            for it in items:
                log.warning("device offline", extra={"device": it.device})
                self._mark(it.device)
            if items:
                self.committer.submit(items)
            if time.monotonic() - last_refresh > STATE_REFRESH_S:
                last_refresh = time.monotonic()
                for dev, d in self.health.devices.items():
                    if d["online"]:
                        self._mark(dev)

    async def _retention(self) -> None:
        while True:
            dropped = await self.worker.enforce_retention()
            if dropped:
                n = sum(dropped.values())
                self.dropped_by_retention += n
                detail = "outbox retention bound hit: dropped the oldest %d events (%s)" % (
                    n,
                    ", ".join("%s %d" % kv for kv in sorted(dropped.items())),
                )
                log.error("outbox dropped events", extra={"dropped": dict(dropped)})
                self.committer.submit(
                    [self._gateway_event(self.cfg.gateway_id, "outbox.dropped", detail[:200])]
                )
            await asyncio.sleep(RETENTION_EVERY_S)

    def status(self) -> dict[str, Any]:
        return statusjson.status(self)

    # --- run -----------------------------------------------------------------------------------

    async def _supervised(self, name: str, run: Callable[[], Any]) -> None:
        """Run a task for ever: a failure is logged with its cause, counted (status, metrics)
        and the task started again after a pause; RESTARTS failures within RESTART_WINDOW_S
        are a bug that restarting does not mend (exit 70). Fatal passes through."""
        failed: deque[float] = deque(maxlen=RESTARTS)
        while True:
            try:
                await run()
                if self.publisher.closing:
                    return  # stopping
                raise RuntimeError("ended by itself")
            except (asyncio.CancelledError, Fatal):
                raise
            except Exception as e:  # noqa: BLE001 - whatever it was, the gateway goes on
                self.task_failures[name] += 1
                log.exception("task failed: restarting", extra={"task": name, "error": repr(e)})
                now = time.monotonic()
                failed.append(now)
                if len(failed) == RESTARTS and now - failed[0] < RESTART_WINDOW_S:
                    raise Fatal(
                        EX_SOFTWARE, "task %s failed %d times within %.0f s: %r"
                        % (name, RESTARTS, RESTART_WINDOW_S, e)
                    ) from e  # fmt: skip
                await asyncio.sleep(min(RESTART_PAUSE_MAX_S, RESTART_PAUSE_S * len(failed)))

    async def _listen(self, what: str, factory: Callable[[], Any], host: str, port: int, **kw):
        try:
            return await asyncio.get_running_loop().create_server(factory, host, port, **kw)
        except OSError as e:
            msg = "cannot listen for %s on %s:%d: %s" % (what, host, port, e)
            raise Fatal(EX_OSERR, msg) from None

    async def start(self) -> None:
        # the outbox threads hand the GIL back and forth on every SQLite step; at the default
        # 5 ms a busy event loop made each step of a group commit wait that long for it
        sys.setswitchinterval(GIL_SWITCH_S)  # stop() puts back the one found in __init__
        limits.raise_open_files()
        spawn = self._tasks.append

        def supervised(name: str, run: Callable[[], Any]) -> None:
            spawn(asyncio.create_task(self._supervised(name, run), name=name))

        spawn(asyncio.create_task(self.committer.run(), name="committer"))  # fails: Fatal
        supervised("publisher", self.publisher.run)
        supervised("health", self._watch_health)
        supervised("retention", self._retention)
        supervised("records", self._watch_records)
        for link in self.cfg.serial:
            supervised("serial " + link.port, lambda link=link: serial_link(self, link))
        if self.cfg.tcp is not None:
            # a Wi-Fi board heartbeats; a silent connection is dead (half-open after a power cut)
            srv = await self._listen(
                "boards",
                lambda: LinkProtocol(self, "tcp", self.cfg.offline_after_s, self.cfg.tcp.hello_s),
                self.cfg.tcp.host, self.cfg.tcp.port, backlog=self.cfg.tcp.backlog,
            )  # fmt: skip
            self.tcp_port = srv.sockets[0].getsockname()[1]
            supervised("tcp", srv.serve_forever)
        if self.cfg.status is not None:
            self.status_port = await self.http.start(self.cfg.status.host, self.cfg.status.port)
        if self.data_lost:
            self.committer.submit(
                # the schema's 200 characters (the log line has it whole)
                [self._gateway_event(self.cfg.gateway_id, "gateway.data_lost",
                                     self.data_lost[:200])]  # fmt: skip
            )
        # what start made lives as long as the gateway: out of the collector's generations, so
        # a full collection under load scans only what came since
        gc.freeze()
        log.info(
            "gateway started",
            extra={"boot": self.boot, "instance": self.instance, "tcp_port": self.tcp_port,
                   "status_port": self.status_port, "outbox_depth": self.outbox.depth(),
                   "broker": self.cfg.mqtt.url},
        )  # fmt: skip

    async def stop(self) -> None:
        try:  # say offline ourselves, if the broker answers soon; the will says it otherwise
            await asyncio.wait_for(self.publisher.stop(), STOP_PUBLISH_S)
        except TimeoutError:
            pass
        await self.http.stop()
        self.publisher.closing = True  # a cancel that lands in a connect may be taken for an
        for t in self._tasks:  # MQTT error by aiomqtt: the flag ends its reconnect loop anyway
            t.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_TASKS_S)
            for t in stuck:
                log.error("task did not stop", extra={"task": t.get_name()})
        for t in self._tasks:
            if t.done() and not t.cancelled():
                t.exception()  # retrieved: reported by run_until_signalled, not by asyncio
        self.worker.close()
        self.records.close()
        sys.setswitchinterval(self._switch_interval)

    async def run_until_signalled(self, ready: Callable[[Gateway], None] | None = None) -> None:
        """Until SIGTERM or SIGINT; raises Fatal when something cannot be survived."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # before anyone is told we are up
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        if ready:
            ready(self)
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        fatal = None
        for t in self._tasks:
            if t.done() and not t.cancelled():
                e = t.exception()
                fatal = e if isinstance(e, Fatal) else Fatal(
                    EX_SOFTWARE, "task %s ended: %r" % (t.get_name(), e)
                )  # fmt: skip
        await self.stop()
        if fatal is not None:
            raise fatal
