"""`gasguard regulator watch` and `gasguard regulator export`: the regulator's console.

It subscribes to every site's stream (docs/design.md §2.4), checks each payload against the
protocol/ schemas (a payload that fails is counted and shown with the field and the rule, never
stored), keeps each event once by its CloudEvents id and feeds the hazard ledger (tools/ledger.py).

On MQTT 5 the event stream is taken through a shared subscription ($share/GROUP/...), so several
consoles in one group split the work; the retained device state and gateway status are read with a
plain subscription (brokers do not send retained messages to shared subscriptions). The session is
persistent (a stable client id, QoS 1), so events published while the console was away arrive
when it comes back.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gasguard.gateway.config import is_loopback, split_broker_url
from gasguard.tools import exitcodes, human
from gasguard.tools.ledger import Ledger, render

if TYPE_CHECKING:  # aiomqtt and the schemas load when the console runs, not for --help
    import aiomqtt

EVENTS = "gasguard/v1/+/+/events"
STATES = "gasguard/v1/+/+/state"
GATEWAYS = "gasguard/v1/+/gateway/+/status"
REJECTED = "gasguard/v1/+/gateway/+/rejected"  # dead letters (cloudevents.topic_rejected)


class BrokerUrl:
    def __init__(self, url: str, insecure_plaintext: bool = False) -> None:
        try:
            self.tls, self.host, self.port = split_broker_url(url)
        except ValueError as e:
            raise ValueError("--broker %s" % e) from None
        if not self.tls and not is_loopback(self.host) and not insecure_plaintext:
            raise ValueError(
                "--broker: plaintext MQTT to a broker that is not on loopback; use mqtts:// "
                "(or --insecure-plaintext on a closed network)"
            )


class Watcher:
    """One console: MQTT in, ledger out. on_line gets one line per thing a person should see."""

    def __init__(
        self,
        broker: BrokerUrl,
        ledger: Ledger,
        *,
        mqtt: str = "5",
        group: str = "gasguard-regulators",
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
        on_line: Callable[[str], None] = print,
    ) -> None:
        self.broker = broker
        self.ledger = ledger
        self.mqtt = mqtt
        self.group = group
        self.client_id = client_id or "gasguard-regulator-%s" % socket.gethostname()[:32]
        self.username = username
        self.password = password
        self.ca_file = ca_file
        self.on_line = on_line
        self.received = 0
        self.invalid = 0
        self.connected = asyncio.Event()
        self.reached = False  # subscribed at least once: else the run ends with exit 3
        self.gateways: dict[str, bool] = {}

    def _client(self) -> aiomqtt.Client:
        import aiomqtt

        ctx = None
        if self.broker.tls:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        v5 = self.mqtt == "5"
        kw: dict[str, Any] = {}
        if v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 7 * 24 * 3600  # keep our queue for a week away
            kw = {"clean_start": False, "properties": props}
        else:
            kw = {"clean_session": False}
        return aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=self.client_id,
            username=self.username,
            password=self.password,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            tls_context=ctx,
            timeout=10,
            **kw,
        )

    async def run(self) -> None:
        import aiomqtt

        backoff = 0.5
        while True:
            try:
                async with self._client() as client:
                    backoff = 0.5
                    events = EVENTS if self.mqtt != "5" else "$share/%s/%s" % (self.group, EVENTS)
                    await client.subscribe(events, qos=1)
                    await client.subscribe(STATES, qos=1)
                    await client.subscribe(GATEWAYS, qos=1)
                    await client.subscribe(REJECTED, qos=1)
                    self.connected.set()
                    self.reached = True
                    self.on_line(
                        "watching %s:%d (MQTT %s): %s, %s, %s"
                        % (self.broker.host, self.broker.port, self.mqtt, events, STATES, GATEWAYS)
                    )
                    async for msg in client.messages:
                        self.handle(str(msg.topic), msg.payload)
            except aiomqtt.MqttError as e:
                self.connected.clear()
                self.on_line(
                    "broker %s:%d: %s; retrying" % (self.broker.host, self.broker.port, e)
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    def handle(self, topic: str, raw: Any) -> None:
        from gasguard.gateway import schemas

        self.received += 1
        try:
            payload = json.loads(raw)
            if not isinstance(payload, dict):
                raise schemas.SchemaError("payload", "not a JSON object")
            schemas.check(payload)
            src = "gasguard://%s/%s" % (payload["data"]["site"], self._subject(payload))
            if payload["source"] != src:
                raise schemas.SchemaError("source", "does not match data.site and data.device")
            if topic.split("/")[2] != payload["data"]["site"]:
                raise schemas.SchemaError("data.site", "differs from the site in the topic")
        except (ValueError, schemas.SchemaError) as e:
            self.invalid += 1
            self.on_line("REJECTED %s: %s" % (topic, e))
            return
        d = payload["data"]
        if topic.endswith("/events"):
            what = self.ledger.add_event(payload)
            if what is None:
                return  # a duplicate (a retry after a lost PUBACK): already in the ledger
            extra = ""
            if d.get("lel") is not None:
                extra = " %s %.1f %%LEL" % (human.detector(d.get("detector")), d["lel"])
            elif "lel_invalid" in d:  # the board sent a reading nobody can use: say so
                extra = " %s READING INVALID (%s)" % (
                    human.detector(d.get("detector")),
                    d["lel_invalid"],
                )
            if d.get("over_range"):
                extra += " OVER RANGE"
            if d["kind"] == "events.lost":
                extra += " %s events lost on the board" % d.get("count", "?")
            if "device_time_invalid" in d:
                extra += " (device clock invalid: %s)" % d["device_time_invalid"]
            self.on_line(
                "%s %s/%s %s%s%s"
                % (human.local_time(payload["time"]), d["site"], d["device"], d["kind"], extra,
                   " -> " + what if what else "")
            )  # fmt: skip
        elif topic.endswith("/state"):
            self.ledger.set_state(payload)
        elif topic.endswith("/rejected"):  # a dead letter: the gateway could not publish it
            self.on_line(
                "DEAD LETTER %s/%s via %s: %s"
                % (d["site"], d["device"], d["gateway"], d["reason"])
            )
        else:
            self.gateways["%s/%s" % (d["site"], d["gateway"])] = d["status"] == "online"

    @staticmethod
    def _subject(payload: dict[str, Any]) -> str:
        d = payload["data"]
        if "device" in d and payload.get("type") != "gasguard.gateway.rejected":
            return d["device"]
        return "gateway/%s" % d.get("gateway")


async def watch(
    watcher: Watcher, duration: float | None, table_every_s: float, quiet_table: bool
) -> None:
    task = asyncio.create_task(watcher.run())
    start = time.monotonic()
    last = ""
    try:
        while duration is None or time.monotonic() - start < duration:
            await asyncio.sleep(min(table_every_s, 0.5))
            table = render(watcher.ledger)
            if not quiet_table and table != last and time.monotonic() - start >= 0:
                watcher.on_line(table)
                last = table
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


def main_watch(args: Any) -> int:
    try:
        broker = BrokerUrl(args.broker, args.insecure_plaintext)
    except ValueError as e:
        print("gasguard regulator watch: %s" % e, file=sys.stderr)
        return exitcodes.BAD_INPUT
    password = None
    if args.password_file:
        password = Path(args.password_file).read_text().strip()
    ledger = Ledger(args.ledger or ":memory:")
    w = Watcher(
        broker,
        ledger,
        mqtt=args.mqtt,
        group=args.group,
        client_id=args.client_id,
        username=args.username,
        password=password,
        ca_file=Path(args.ca_file) if args.ca_file else None,
        on_line=lambda s: print(s, flush=True),
    )
    try:
        asyncio.run(watch(w, args.duration, 2.0, args.no_table))
    except KeyboardInterrupt:
        pass
    print(
        "received %d, invalid %d, duplicates %d, events in ledger %d, incidents %d"
        % (
            w.received,
            w.invalid,
            ledger.duplicates,
            ledger.event_count(),
            len(ledger.incidents()),
        )
    )
    ledger.close()
    if not w.reached:
        print(
            "gasguard regulator watch: never reached the broker at %s:%d"
            % (broker.host, broker.port),
            file=sys.stderr,
        )
        return exitcodes.UNREACHABLE
    return exitcodes.OK


def main_export(args: Any) -> int:
    if not Path(args.ledger).exists():
        print("gasguard regulator export: %s: no such ledger" % args.ledger, file=sys.stderr)
        return exitcodes.BAD_INPUT
    ledger = Ledger(args.ledger)
    try:
        if args.out:
            with open(args.out, "w", newline="") as f:
                n = ledger.export_csv(f)
            print("%d incidents written to %s" % (n, args.out), file=sys.stderr)
        else:
            ledger.export_csv(sys.stdout)
    finally:
        ledger.close()
    return 0


def register(sub: Any) -> None:
    r = sub.add_parser("regulator", help="the regulator's console: live alarms and hazard ledger")
    rs = r.add_subparsers(dest="action", required=True)
    from gasguard.regulator.command import register_ingest  # loads no client or driver

    register_ingest(rs)
    w = rs.add_parser(
        "watch",
        help="subscribe to the alarm stream and keep the hazard ledger",
        epilog="here:\n  3  the broker was never reached (it is retried until --duration or ^C)\n"
        "times are shown in this machine's local time, with its offset from UTC",
    )
    w.add_argument("--broker", required=True, help="mqtts://HOST[:PORT] (mqtt:// on loopback)")
    w.add_argument("--ledger", help="SQLite file for the hazard ledger (default: in memory)")
    w.add_argument("--mqtt", choices=["5", "3.1.1"], default="5", help="protocol version")
    w.add_argument("--group", default="gasguard-regulators", help="MQTT 5 shared group")
    w.add_argument("--client-id", help="stable id for a persistent session")
    w.add_argument("--username")
    w.add_argument("--password-file", help="file holding the MQTT password")
    w.add_argument("--ca-file", help="CA bundle that signed the broker's certificate")
    w.add_argument("--insecure-plaintext", action="store_true", help="allow mqtt:// off loopback")
    w.add_argument("--duration", type=float, help="stop after this many seconds")
    w.add_argument("--no-table", action="store_true", help="event lines only, no table")
    e = rs.add_parser("export", help="write the ledger's incidents as CSV")
    e.add_argument("--ledger", required=True, help="SQLite ledger written by watch")
    e.add_argument("--out", help="CSV file (default: stdout)")
    r.set_defaults(run=main)


def main(args: Any) -> int:
    return main_watch(args) if args.action == "watch" else main_export(args)
