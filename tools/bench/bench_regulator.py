"""`gasguard bench regulator`: the regulator's ingest at a city's scale, into PostgreSQL.

The real pieces: mosquitto, a PostgreSQL server of the bench's own (a temporary directory), the
registry imported from a generated CSV (`registry.import_file`, as a district would), and
`gasguard regulator ingest` as its own process with 1, 2 and 4 workers. The load is pre-encoded:
CloudEvents built by protocol/cloudevents.py as the gateway builds them (one template per kind,
its ids, sequence numbers and times filled in by string substitution), framed as MQTT packets
before any clock starts and written by tools/bench/mqtt_flood.py in a process of its own.

Phases (one database throughout; each backlog's events carry a sequence number of their own,
so they are all new; the boards stay in their first boot):
- events_per_s: per worker count, a backlog of one board event per device published as fast as
  the broker takes it (faster than ingest drains it), timed from the first to the last event's
  commit (`pg_xact_commit_timestamp`: the server runs with track_commit_timestamp on).
- state_per_s: every device's retained state (the heartbeat the gateway publishes each minute),
  published as fast as the broker takes it; worker 0 alone reads retained state, by design.
- the storm: 4 workers; for `storm_s` seconds the city's heartbeats go on at devices/60 per
  second while `storm` high alarms arrive, one per device across as many units. Each alarm's
  latency runs from the 10 ms tick the publisher sent it in to the commit of the transaction
  that wrote its incident (both this machine's clock).
- overview_query_ms: regulator/views.overview (what /api/overview serves) over the whole city,
  the ingest stopped; the median of 5.
lost: what was published and acknowledged by the broker minus what the store holds;
duplicates: incidents beyond one per alarmed device (each got exactly one alarm).

PostgreSQL runs with fsync on (as in production) unless --no-fsync, which the output states as
"postgres_fsync": false. synchronous_commit stays on either way: ingest acknowledges a message
to the broker only after the batch holding it committed.
"""

from __future__ import annotations

import bisect
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gasguard.gateway.publisher import dumps
from gasguard.protocol import cloudevents
from gasguard.tools import human
from gasguard.tools.bench import mqtt_flood
from gasguard.tools.sim.brokers import Mosquitto
from gasguard.tools.sim.postgres import PostgresServer

T0 = 1_780_000_000  # a sentinel time in the templates; the load carries the time it is made
# (a live city: old times would make every device "not heard since" in compliance)
DISTRICTS = 16
STREETS = 8  # per district
GRIDS = 8  # per street
GROUP = "bench"
STORM_RATE = 200.0  # alarms a second during the storm: 2,000 within 10 s
TARGETS = {"events_per_s_4": 5000, "scaling_2": 1.3, "alarm_p99_ms": 500, "overview_ms": 200}


# --- the city ----------------------------------------------------------------------------------


def site_of(u: int) -> str:
    return "s%05d" % u


def device_of(u: int, k: int) -> str:
    return "s%05d-d%d" % (u, k)


def instance_of(n: int) -> str:
    return "%016x" % (n + 1)


def devices_of(units: int, devices: int) -> list[tuple[str, str, str]]:
    """(site, device, instance) for every device, spread evenly over the units."""
    return [
        (site_of(n % units), device_of(n % units, n // units), instance_of(n))
        for n in range(devices)
    ]


def write_registry_csv(path: Path, units: int, devs: list[tuple[str, str, str]]) -> None:
    """The district's table, one row per detector (each device has one), as the import reads it."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["site", "name", "address", "gas", "responsible", "phone", "city", "district",
                    "street", "grid", "device", "detector_address", "detector_gas",
                    "mount_height_m", "ceiling_m", "distance_m", "above_appliance"])  # fmt: skip
        for site, device, _ in devs:
            u = int(site[1:])
            d, s, g = u % DISTRICTS, (u // DISTRICTS) % STREETS, (u // 128) % GRIDS
            w.writerow([site, "饭店%d" % u, "路%d号" % u, "天然气", "张%d" % u,
                        "021-5555%04d" % (u % 10000), "上海市", "区%02d" % d, "街道%d" % s,
                        "网格%d" % g, device, 1, "甲烷",
                        2.7, 3.0, 2.0, "否"])  # fmt: skip


# --- payloads: one template per kind, filled in by substitution ---------------------------------


def _template(ce: dict[str, Any], marks: dict[str, str]) -> str:
    """The CloudEvent as the gateway encodes it (compact JSON), with each sentinel value turned
    into a {name} field for str.format."""
    text = dumps(ce).decode().replace("{", "{{").replace("}", "}}")
    for value, name in marks.items():
        assert value in text, value
        text = text.replace(value, "{%s}" % name)
    return text


def event_template(kind: str) -> str:
    body = {"id": [777001, 777002], "kind": kind, "up": 777003, "time": T0}
    if kind.startswith("alarm"):
        body.update(det=0, lel=62.5)
    ce = cloudevents.device_event("SITEX", "DEVX", "ffffffffffffff00", body, T0 + 1)
    t, r = cloudevents.rfc3339(T0), cloudevents.rfc3339(T0 + 1)
    return _template(ce, {"SITEX": "site", "DEVX": "device", "ffffffffffffff00": "inst",
                          "777001": "boot", "777002": "seq", "777003": "up", t: "time",
                          r: "received"})  # fmt: skip


def state_template() -> str:
    state = {"online": True, "last_seen": T0, "instance": "ffffffffffffff00", "boot": 777001,
             "fw": "1.4.0", "valve": "open", "alarm": "none", "uptime_s": 777003}  # fmt: skip
    ce = cloudevents.device_state("SITEX", "DEVX", state, T0 + 1)
    t, r = cloudevents.rfc3339(T0), cloudevents.rfc3339(T0 + 1)
    marks = {"SITEX": "site", "DEVX": "device", "ffffffffffffff00": "inst", "777001": "boot",
             "777003": "up", t: "last_seen", r: "time"}  # fmt: skip
    return _template(ce, marks)


class Times:
    """rfc3339 per whole second, computed once."""

    def __init__(self) -> None:
        self.cache: dict[int, str] = {}

    def __call__(self, t: int) -> str:
        s = self.cache.get(t)
        if s is None:
            s = self.cache[t] = cloudevents.rfc3339(t)
        return s


def events(tpl: str, devs, seq: int, t: int, times: Times):
    """One event a device, of its boards' first boot."""
    for site, device, inst in devs:
        topic = ("gasguard/v1/%s/%s/events" % (site, device)).encode()
        text = tpl.format(site=site, device=device, inst=inst, boot=1, seq=seq, up=60,
                          time=times(t), received=times(t + 1))  # fmt: skip
        yield topic, text.encode()


def states(tpl: str, devs, boot: int, t: int, times: Times):
    for site, device, inst in devs:
        topic = ("gasguard/v1/%s/%s/state" % (site, device)).encode()
        text = tpl.format(site=site, device=device, inst=inst, boot=boot, up=60,
                          last_seen=times(t), time=times(t + 1))  # fmt: skip
        yield topic, text.encode()


# --- the running parts -------------------------------------------------------------------------


class Ingest:
    """`python -m gasguard.regulator ingest` with N workers; its output in a file."""

    def __init__(self, broker: str, db: str, workers: int, log: Path) -> None:
        self.workers, self.log = workers, log
        argv = [sys.executable, "-m", "gasguard.regulator", "ingest", "--broker", broker,
                "--db", db, "--workers", str(workers), "--group", GROUP,
                "--node", "bench"]  # fmt: skip
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while self.log.read_text(errors="replace").count(": subscribed as ") < workers:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("ingest did not start:\n" + log.read_text(errors="replace"))
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Load:
    """Messages framed into packets on disk, ready for mqtt_flood."""

    def __init__(self, tmp: Path, name: str, messages, retain: bool = False) -> None:
        self.packets, self.offsets = tmp / (name + ".mqtt"), tmp / (name + ".idx")
        self.count = mqtt_flood.encode(messages, self.packets, self.offsets, retain)

    def publish(self, port: int, rate: float | None = None, ticks: Path | None = None):
        argv = [sys.executable, "-m", "gasguard.tools.bench.mqtt_flood", str(port),
                str(self.packets), str(self.offsets)]  # fmt: skip
        if rate:
            argv += ["--rate", str(rate), "--ticks", str(ticks)]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def _finish(pub: subprocess.Popen) -> float:
    """Wait for the publisher; the seconds it took to have everything at the broker."""
    out, _ = pub.communicate(timeout=1800)
    if pub.returncode:
        raise RuntimeError("the load generator failed (exit %d)" % pub.returncode)
    return float(out.split()[1])


def _wait_count(db, sql: str, params, want: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    last, still = -1, time.monotonic()
    while True:
        n = db.x(sql, params).fetchone()[0]
        if n >= want:
            return n
        if n != last:
            last, still = n, time.monotonic()
        if time.monotonic() > deadline or time.monotonic() - still > 60:  # nothing for a minute
            return n
        time.sleep(0.25)


def _span_rate(db, table: str, where: str, params) -> float | None:
    row = db.x(
        "SELECT count(*), extract(epoch FROM max(pg_xact_commit_timestamp(xmin)) - "
        "min(pg_xact_commit_timestamp(xmin))) FROM %s WHERE %s" % (table, where),
        params,
    ).fetchone()
    n, span = row[0], float(row[1] or 0)
    return round(n / span) if n and span > 0 else None


def _pct(xs: list[float], q: float) -> float | None:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * q))], 1) if xs else None


# --- the bench ---------------------------------------------------------------------------------


def run(
    json_path: str | None,
    units: int = 50_000,
    devices: int = 100_000,
    workers: tuple[int, ...] = (1, 2, 4),
    storm: int = 2000,
    repeats: int = 1,
    fsync: bool = True,
    log=lambda s: print(s, flush=True),
) -> dict[str, Any]:
    from gasguard.regulator import compliance, registry, views
    from gasguard.regulator.store import open_store

    devs = devices_of(units, devices)
    storm = min(storm, units)
    out: dict[str, Any] = {"units": units, "devices": devices, "cores": os.cpu_count()}
    lost = 0
    with tempfile.TemporaryDirectory(prefix="gasguard-bench-reg-") as d, Mosquitto() as broker, \
            PostgresServer(fsync=fsync, settings={"track_commit_timestamp": "on",
                                                  "max_wal_size": "2GB"}) as pg:  # fmt: skip
        tmp = Path(d)
        url = pg.create_database("regulator")
        store = open_store(url, create=True)
        t = time.monotonic()
        write_registry_csv(tmp / "units.csv", units, devs)
        counts, _ = registry.import_file(store, tmp / "units.csv")
        out["registry_import_s"] = round(time.monotonic() - t, 1)
        log("registry: %d units, %d devices imported in %.1f s"
            % (counts["units"], counts["devices"], out["registry_import_s"]))  # fmt: skip
        # the findings as a running city has them (the first evaluation writes them all), then
        # the sweep worker 0 makes each minute, timed: it takes that worker from ingest
        for name in ("compliance_first_s", "compliance_sweep_s"):
            t = time.monotonic()
            compliance.evaluate(store)
            out[name] = round(time.monotonic() - t, 1)
        log("compliance: first evaluation %.1f s, a sweep %.1f s"
            % (out["compliance_first_s"], out["compliance_sweep_s"]))  # fmt: skip

        times = Times()
        ev_tpl, st_tpl, alarm_tpl = (
            event_template("selftest"),
            state_template(),
            event_template("alarm.high"),
        )
        rates: dict[str, list[int]] = {}
        publish_rates: list[float] = []
        seq = 0  # each backlog's events: a sequence number of their own (the boards' boot 1)
        ingest = Ingest(broker.url, url, workers[0], tmp / "ingest-state.log")
        try:
            # first every device's retained state, as a live city has it (worker 0's alone)
            t_state = int(time.time())
            load = Load(tmp, "state", states(st_tpl, devs, 1, t_state, times), True)
            _finish(load.publish(broker.port))
            since = (times(t_state + 1).replace("Z", ".000Z"),)
            got = _wait_count(store, "SELECT count(*) FROM devices WHERE state_time >= %s", since,
                              load.count, 600)  # fmt: skip
            lost += load.count - got
            out["state_per_s"] = _span_rate(store, "devices", "state_time >= %s", since)
            log("retained state: %d devices, %s states/s" % (got, out["state_per_s"]))
        finally:
            ingest.stop()
        replay: dict[str, float] = {}
        for w in workers:
            t_start = time.time()
            ingest = Ingest(broker.url, url, w, tmp / ("ingest-%d.log" % w))
            try:
                # a (re)started worker 0 is sent every retained state again at its subscribe
                # and applies it (the broker's rule): time that, and keep it out of the drain
                _wait_count(store, "SELECT count(*) FROM devices WHERE "
                            "pg_xact_commit_timestamp(xmin) >= to_timestamp(%s)", (t_start,),
                            len(devs), 600)  # fmt: skip
                replay[str(w)] = round(time.time() - t_start, 1)
                for _ in range(repeats):
                    seq += 1
                    load = Load(tmp, "events", events(ev_tpl, devs, seq, int(time.time()), times))
                    pub_s = _finish(load.publish(broker.port))
                    publish_rates.append(load.count / pub_s)
                    got = _wait_count(store, "SELECT count(*) FROM events WHERE seq = %s",
                                      (seq,), load.count, 600)  # fmt: skip
                    lost += load.count - got
                    rate = _span_rate(store, "events", "seq = %s", (seq,))
                    rates.setdefault(str(w), []).append(rate or 0)
                    log("%d worker(s): %d events, %s events/s (published at %d/s)"
                        % (w, got, rate, load.count / pub_s))  # fmt: skip
            finally:
                if w != workers[-1]:
                    ingest.stop()
        out["events_per_s"] = {k: max(v) for k, v in rates.items()}
        if repeats > 1:
            out["events_per_s_repeats"] = rates
            out["noise_pct"] = {
                k: round(100 * (max(v) - min(v)) / max(v), 1) if max(v) else None
                for k, v in rates.items()
            }
        out["publish_per_s_min"] = round(min(publish_rates))
        out["restart_retained_replay_s"] = replay
        try:
            out.update(_storm(tmp, broker.port, store, devs, units, storm, seq + 1, times,
                              st_tpl, alarm_tpl, log))  # fmt: skip
            lost += out.pop("_lost")
        finally:
            ingest.stop()
        reader = views.open_reader(url)
        try:
            for name in ("overview_query", "overview_query_vacuumed"):
                ms = []
                for _ in range(5):
                    t = time.perf_counter()
                    ov = views.overview(reader)
                    ms.append((time.perf_counter() - t) * 1000)
                out[name + "_ms"] = round(statistics.median(ms), 1)
                out[name + "_max_ms"] = round(max(ms), 1)
                if name == "overview_query":  # right after the run every device row has been
                    store.x("VACUUM ANALYZE")  # rewritten a dozen times: again once cleared
            out["overview_districts"] = len(ov["districts"])
            out["overview_units"] = ov["totals"]["units"]
        finally:
            reader.close()
        out["lost"] = lost
        out["duplicates"] = store.x(
            "SELECT count(*) - count(DISTINCT (site, device)) FROM incidents"
        ).fetchone()[0]
        out["rejected"] = store.x("SELECT count(*) FROM rejected").fetchone()[0]
        out["postgres"] = store.x("SHOW server_version").fetchone()[0]
        out["postgres_fsync"] = fsync
        out["synchronous_commit"] = store.x("SHOW synchronous_commit").fetchone()[0]
        out["mosquitto"] = _version(broker.binary)
        store.close()
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=2) + "\n")
    return out


def _storm(tmp, port, store, devs, units, storm, seq, times, st_tpl, alarm_tpl, log) -> dict:
    """Heartbeats at the city's rate for the storm's length plus a second each side, the alarms
    (STORM_RATE a second) merged in by time: one stream, paced in 10 ms ticks."""
    storm_s = storm / STORM_RATE
    length = storm_s + 2
    beat_rate = len(devs) / 60.0
    beats = min(len(devs), int(beat_rate * length))
    step = max(1, units // storm)  # alarmed devices spread over the units
    plan = [(j / beat_rate, 1, devs[j]) for j in range(beats)]
    plan += [(1 + i / STORM_RATE, 0, devs[i * step]) for i in range(storm)]
    plan.sort(key=lambda p: p[:2])
    t = int(time.time()) + 2  # after the retained state's time, whole seconds
    alarm_index = {dev[1]: n for n, (_, beat, dev) in enumerate(plan) if not beat}

    def stream():
        for _, beat, dev in plan:
            if beat:  # retained, as the gateway publishes state
                ((topic, payload),) = states(st_tpl, [dev], 1, t, times)
            else:
                ((topic, payload),) = events(alarm_tpl, [dev], seq, t, times)
            yield topic, payload, beat == 1

    load = Load(tmp, "storm", stream())
    ticks = tmp / "storm.ticks"
    _finish(load.publish(port, rate=len(plan) / length, ticks=ticks))
    sent = [line.split() for line in ticks.read_text().splitlines()]
    firsts, at = [int(i) for _, i in sent], [float(s) for s, _ in sent]
    got = _wait_count(store, "SELECT count(*) FROM incidents", (), storm, 300)
    rows = store.x(
        "SELECT device, extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM incidents"
    ).fetchall()
    lat = [
        (float(c) - at[bisect.bisect_right(firsts, alarm_index[dev]) - 1]) * 1000
        for dev, c in rows
        if dev in alarm_index
    ]
    since = (times(t + 1).replace("Z", ".000Z"),)
    beats_got = _wait_count(store, "SELECT count(*) FROM devices WHERE state_time >= %s", since,
                            beats, 120)  # fmt: skip
    log("storm: %d alarms, %d incidents, p99 %s ms" % (storm, got, _pct(lat, 0.99)))
    return {
        "storm_alarms": storm,
        "storm_s": storm_s,
        "storm_heartbeats_per_s": round(beat_rate),
        "alarm_to_ledger_p50_ms": _pct(lat, 0.5),
        "alarm_to_ledger_p99_ms": _pct(lat, 0.99),
        "alarm_to_ledger_max_ms": _pct(lat, 1.0),
        "_lost": (storm - got) + (beats - beats_got),
    }


def _version(binary: str) -> str:
    r = subprocess.run([binary, "-h"], capture_output=True, text=True)
    first = (r.stdout or r.stderr).splitlines()[0] if (r.stdout or r.stderr) else ""
    return first.replace("mosquitto version ", "").strip() or "unknown"


# gasguard bench regulator: the run from the command line, and its targets


def run_args(args: Any) -> dict:
    workers = tuple(int(w) for w in args.workers.split(","))
    out = run(args.json, units=args.units, devices=args.devices or 2 * args.units,
              workers=workers, storm=args.storm, repeats=args.repeats,
              fsync=not args.no_fsync)  # fmt: skip
    print(human.figures(out))
    if not out["postgres_fsync"]:
        print("note: PostgreSQL ran with fsync off (--no-fsync): not a durable server's figures")
    for name, ok in checks(out):
        print("%-40s %s" % (name, "pass" if ok else "MISS"))
    return out


def checks(out: dict) -> list[tuple[str, bool]]:
    eps = out["events_per_s"]
    found = []
    if "4" in eps:
        found.append(("events/s with 4 workers >= 5,000", eps["4"] >= TARGETS["events_per_s_4"]))
    if "1" in eps and "2" in eps:
        found.append(("2 workers > 1.3x one", eps["2"] > TARGETS["scaling_2"] * eps["1"]))
    p99 = out["alarm_to_ledger_p99_ms"]
    found.append(("alarm to ledger p99 <= 500 ms", p99 is not None and p99 <= 500))
    found.append(("overview <= 200 ms", out["overview_query_ms"] <= TARGETS["overview_ms"]))
    found.append(("0 lost", out["lost"] == 0))
    found.append(("0 duplicate incidents", out["duplicates"] == 0))
    return found


def missed(out: dict) -> list[str]:
    return [name for name, ok in checks(out) if not ok]
