"""Notification core (issue 25): channels against real local receivers, durable delivery,
escalation with shortened timers, forwarding; SQLite and PostgreSQL (db_url)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
import urllib.parse
from pathlib import Path

import pytest

from gasguard.regulator import acks, boundary
from gasguard.regulator.notify import config, escalate, forward, outbox
from gasguard.regulator.notify.channels import dingtalk, feishu
from gasguard.regulator.store import open_store

from .conftest import board_event
from .notify_fixture import Receiver, Running, Server, Smtp, wait

SITE, DEV = "s1", "d1"
NODE = "徐州市/云龙区/彭城街道/网格1"
HOSTILE = "老王饭店\n# 已处理 [点我](http://evil.example) <b>x</b>"
SECRET = "SECxyz-robot-secret"


def toml(urls: dict[str, str], smtp_port: int = 2525, chain: str = "", extra: str = "") -> str:
    chain = chain or '[escalation.high]\nsteps = [{after = "0s", roles = ["owner", "grid"]}]\n'
    return f"""
base_url = "https://console.example.gov.cn"
[delivery]
backoff_s = 0.2
backoff_cap_s = 1.0
attempts = 200
timeout_s = 2
lease_s = 5
[channels.wecom]
type = "wecom"
url = "{urls["wecom"]}"
key_env = "T_WECOM_KEY"
[channels.ding]
type = "dingtalk"
url = "{urls["ding"]}"
secret_env = "T_ROBOT_SECRET"
[channels.feishu]
type = "feishu"
url = "{urls["feishu"]}"
secret_env = "T_ROBOT_SECRET"
[channels.sms]
type = "sms"
url = "{urls["sms"]}"
token_env = "T_SMS_TOKEN"
[channels.voice]
type = "voice"
url = "{urls["sms"]}"
[channels.mail]
type = "smtp"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
sender = "gasguard@example.gov.cn"
[channels.city]
type = "forward"
url = "{urls["forward"]}"
hmac_secret_env = "T_FWD_SECRET"
[owner]
channels = ["sms", "voice"]
[[contacts]]
node = "徐州市/云龙区/彭城街道/网格1"
channel = "wecom"
[[contacts]]
node = "徐州市/云龙区/彭城街道/网格1"
channel = "ding"
[[contacts]]
node = "徐州市/云龙区/彭城街道/网格1"
channel = "feishu"
[[contacts]]
node = "徐州市/云龙区/彭城街道/网格1"
channel = "mail"
to = "grid@example.gov.cn"
[[contacts]]
node = "徐州市/云龙区/彭城街道"
channel = "sms"
to = "+8613900000002"
name = "街道值班"
[[contacts]]
node = "徐州市/云龙区"
channel = "sms"
to = "+8613900000003"
language = "en"
[forward]
channels = ["city"]
{chain}
{extra}
"""


@pytest.fixture(autouse=True)
def secrets(monkeypatch):
    monkeypatch.setenv("T_WECOM_KEY", "wecomkey123")
    monkeypatch.setenv("T_ROBOT_SECRET", SECRET)
    monkeypatch.setenv("T_SMS_TOKEN", "smstoken")
    monkeypatch.setenv("T_FWD_SECRET", "fwdsecret")


def make_store(db_url: str, name: str = "老王饭店"):
    store = open_store(db_url, create=True)
    with store.transaction():
        parts = NODE.split("/")
        for i, level in enumerate(("city", "district", "street", "grid")):
            store.x(
                "INSERT INTO nodes VALUES (?,?,?,?)",
                ("/".join(parts[: i + 1]), "/".join(parts[:i]) or None, level, parts[i]),
            )
        store.x(
            "INSERT INTO units (site, name, address, gas, responsible, phone, node) "
            "VALUES (?,?,?,?,?,?,?)",
            (SITE, name, "解放路1号", "天然气", "王老板", "+8613900000001", NODE),
        )
    return store


def alarm(store, seq: int = 1, device: str = DEV, lel: float = 62.5) -> None:
    store.write([boundary.check(*board_event(SITE, device, "alarm.high", 1, seq, lel=lel))])


def hooked(store, cfg):
    store.incident_hooks.append(escalate.opened_hook(cfg))
    return store


class Receivers:
    def __init__(self):
        self.servers = {
            n: Server(Receiver()) for n in ("wecom", "ding", "feishu", "sms", "forward")
        }

    def __enter__(self):
        self.r = {n: s.__enter__() for n, s in self.servers.items()}
        return self.r

    def __exit__(self, *a):
        for s in self.servers.values():
            s.__exit__(*a)


def urls(r) -> dict[str, str]:
    return {n: x.url("/" + n) for n, x in r.items()}


# --- config: hostile input at the boundary -------------------------------------------------


def test_config_errors_name_their_lines(tmp_path: Path, monkeypatch):
    good = toml(
        {n: "http://127.0.0.1:9/" + n for n in ("wecom", "ding", "feishu", "sms", "forward")}
    )
    cfg = config.parse(good)
    assert cfg.chains["high"][0].roles == ("owner", "grid")
    assert SECRET not in repr(cfg)  # secrets never printed
    with pytest.raises(config.ConfigError, match=r"line 3"):
        config.parse('base_url = "https://x"\n[delivery]\nattempts = = 3\n')
    bad = good.replace('type = "dingtalk"', 'type = "dingtalk"\nsecrett = "x"')
    with pytest.raises(config.ConfigError) as e:
        config.parse(bad)
    line = next(i for i, s in enumerate(bad.splitlines(), 1) if s.startswith("secrett"))
    assert "line %d:" % line in str(e.value) and "'secrett'" in str(e.value)
    for old, new, what in [
        ('url = "http://127.0.0.1:9/ding"', 'url = "http://robot.example.com/x"', "loopback"),
        ('url = "http://127.0.0.1:9/sms"', 'url = "https://u:p@sms.example.com/"', "credent"),
        ('url = "http://127.0.0.1:9/sms"', 'url = "ftp://sms.example.com/"', "want https"),
        ('url = "http://127.0.0.1:9/sms"', 'url = "https://x.cn/a\\nb"', "not a URL"),
        ('hmac_secret_env = "T_FWD_SECRET"', 'hmac_secret_env = "T_NOT_SET"', "T_NOT_SET is"),
        ('roles = ["owner", "grid"]', 'roles = ["owner", "mayor"]', "no contact"),
        ('channel = "mail"\nto = "grid@example.gov.cn"', 'channel = "mail"', "to: needed"),
        ('to = "+8613900000002"', 'to = "+86139\\n00"', "one phone"),
        ("backoff_s = 0.2", "backoff_s = -1", "backoff_s"),
        ('channels = ["sms", "voice"]', 'channels = ["sms", "mail"]', "not an sms or voice"),
        ('base_url = "https://console.example.gov.cn"', "base_url = 3", "base_url"),
    ]:
        assert old in good, old
        with pytest.raises(config.ConfigError, match=what):
            config.parse(good.replace(old, new, 1))
    monkeypatch.setenv("T_FWD_SECRET", "")
    with pytest.raises(config.ConfigError, match="T_FWD_SECRET is not set"):
        config.parse(good)
    monkeypatch.setenv("T_FWD_SECRET", "fwdsecret")
    with pytest.raises(config.ConfigError, match="more than"):
        config.parse(good + "#" * (1 << 20))
    chain = (
        '[escalation.high]\nsteps = [{after = "5m", roles = ["grid"]}, '
        '{after = "1m", roles = ["street"]}]\n'
    )
    with pytest.raises(config.ConfigError, match="grow"):
        config.parse(good.split("[escalation.high]")[0] + chain)
    # the command line: exit 2, the problem's line said, the secret's value never
    import argparse

    from gasguard.regulator.notify.command import main_notify

    def run(*argv: str) -> int:
        return main_notify(
            argparse.Namespace(db=argv[3], config=argv[5], counts="--counts" in argv)
        )

    p = tmp_path / "notify.toml"
    p.write_text(bad)
    db = str(tmp_path / "r.db")
    open_store(db, create=True).close()
    assert run("regulator", "notify", "--db", db, "--config", str(p)) == 2
    p.write_text(good)
    assert run("regulator", "notify", "--db", db, "--config", str(p), "--counts") == 0


# --- every channel, from the ingest's transaction to the receiver ---------------------------


def test_alarm_reaches_every_channel_signed_and_escaped(db_url, capsys):
    with Receivers() as r, Smtp() as (box, port):
        cfg = config.parse(toml(urls(r), port))
        store = hooked(make_store(db_url, HOSTILE), cfg)
        alarm(store)
        # decided in the batch's transaction: the rows exist before any deliverer runs
        n = store.x("SELECT count(*) FROM notify_outbox WHERE kind = 'alarm'").fetchone()[0]
        assert n == 6  # owner sms + voice, 3 robots, mail (grid); the street is not in step 0
        with Running(db_url, cfg):
            wait(
                lambda: (
                    all(len(r[n].got) for n in ("wecom", "ding", "feishu"))
                    and box.got
                    and len(r["sms"].got) == 2
                )
            )
            time.sleep(0.3)
        # WeCom: the key in the URL; markdown with the hostile name escaped on one line
        w = r["wecom"].got[0]
        assert w.query["key"] == "wecomkey123"
        md = w.json["markdown"]["content"]
        assert "＃ 已处理 ［点我］（http://evil.example） ＜b＞x＜/b＞" in md
        assert "\n# " not in md and "<b>" not in md
        for word in (
            "解放路1号",
            "62.5 %LEL",
            "高报警",
            "https://console.example.gov.cn/units/s1",
        ):
            assert word in md, word
        # DingTalk: timestamp + sign query parameters, HMAC-SHA256 of "ts\nsecret"
        d = r["ding"].got[0]
        ts = int(d.query["timestamp"])
        assert abs(ts / 1000 - time.time()) < 60
        mac = hmac.new(SECRET.encode(), b"%d\n%s" % (ts, SECRET.encode()), hashlib.sha256)
        assert d.query["sign"] == base64.b64encode(mac.digest()).decode()
        assert d.json["msgtype"] == "markdown"
        # Feishu: timestamp + sign in the body, HMAC keyed by "ts\nsecret" over nothing
        f = r["feishu"].got[0].json
        key = ("%s\n%s" % (f["timestamp"], SECRET)).encode()
        assert f["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
        assert "老王饭店" in f["content"]["text"]
        # SMS and voice: the documented request shape, the owner's phone from the registry
        sms = {g.json["kind"]: g for g in r["sms"].got}
        assert sms["sms"].json["to"] == "+8613900000001"
        assert sms["sms"].headers["Authorization"] == "Bearer smstoken"
        assert sms["sms"].headers["Idempotency-Key"] == sms["sms"].json["message_id"]
        assert "Authorization" not in sms["voice"].headers
        assert "\n" not in sms["sms"].json["text"].split("\n")[0]
        # e-mail: to the grid's address, Chinese, the link
        ((to, mail),) = box.got
        assert to == ["grid@example.gov.cn"] and "高报警" in mail["Subject"]
        assert "/units/s1" in mail.get_content()
        # each sent once, each attempt recorded, nothing pending
        assert outbox.counts(store) == {"pending": 0, "sent": 6, "failed": 0, "untold": 0}
        assert store.x("SELECT count(*) FROM notify_attempts WHERE ok = 1").fetchone()[0] == 6
        steps = store.rows("SELECT * FROM audit WHERE action = 'notify.escalate'")
        assert (
            len(steps) == 1
            and steps[0]["target"]
            == "incident:s1/" + store.x("SELECT open_event FROM incidents").fetchone()[0]
        )
        assert SECRET not in capsys.readouterr().err
        store.close()


# --- durable delivery: outages, refusals, restarts, two deliverers ----------------------------


def test_receiver_down_30s_gets_every_message_once(tmp_path):
    db = str(tmp_path / "r.db")
    with Receivers() as r, Smtp() as (_, port):
        cfg = config.parse(toml(urls(r), port))
        store = hooked(make_store(db), cfg)
        r["ding"].mode = "fail"
        with Running(db, cfg):
            for i in range(10):
                alarm(store, device="d%d" % i)
            t_back = time.monotonic() + 30
            while time.monotonic() < t_back:
                alarm(store, device="d%d" % (10 + int(30 - (t_back - time.monotonic()))))
                time.sleep(1)
            assert not r["ding"].dedup() or all(g.headers for g in r["ding"].got)
            failed_while_down = len(r["ding"].got)
            r["ding"].got.clear()
            r["ding"].mode = "ok"
            n = store.x("SELECT count(*) FROM notify_outbox WHERE channel = 'ding'").fetchone()[0]
            wait(lambda: len(r["ding"].got) >= n, timeout=15)
            time.sleep(2)
        assert failed_while_down > n  # retried while down
        assert n >= 40
        assert len(r["ding"].dedup()) == n and len(r["ding"].got) == n  # every one, none twice
        assert outbox.counts(store)["failed"] == 0
        once = store.x(
            "SELECT key FROM notify_attempts WHERE ok = 1 GROUP BY key HAVING count(*) > 1"
        ).fetchall()
        assert once == []
        store.close()


def test_refusals_give_up_audited_and_errcodes_retry(db_url):
    with Receivers() as r, Smtp() as (_, port):
        cfg = config.parse(toml(urls(r), port, extra=""))
        store = hooked(make_store(db_url), cfg)
        r["wecom"].mode = "errcode"  # a 200 with errcode != 0: not delivered
        r["ding"].mode = "redirect"
        r["feishu"].mode = "huge"
        r["sms"].mode = "refuse"  # a 400: refused for good
        alarm(store)
        with Running(db_url, cfg):
            wait(lambda: outbox.counts(store)["failed"] == 2)  # sms and voice
            wait(
                lambda: (
                    store.x(
                        "SELECT count(*) FROM notify_attempts WHERE key LIKE ?", ("%:wecom:%",)
                    ).fetchone()[0]
                    >= 3
                )
            )
            r["wecom"].mode = r["ding"].mode = r["feishu"].mode = "ok"
            wait(lambda: outbox.counts(store)["sent"] == 4, timeout=20)
        audit = store.rows("SELECT * FROM audit WHERE action = 'notify.failed'")
        assert len(audit) == 2 and "HTTP 400" in audit[0]["after"]
        errs = {row[0] for row in store.x("SELECT detail FROM notify_attempts WHERE ok = 0")}
        assert any("errcode 310000" in e for e in errs)
        assert any("redirect" in e for e in errs)
        assert any("without JSON" in e for e in errs)  # 8 MB read only 64 KB, then refused
        store.close()


def test_slow_loris_times_out_and_is_retried(tmp_path):
    db = str(tmp_path / "r.db")
    with Receivers() as r, Smtp() as (_, port):
        cfg = config.parse(toml(urls(r), port))
        store = hooked(make_store(db), cfg)
        r["feishu"].mode = "slow"
        alarm(store)
        with Running(db, cfg):
            wait(
                lambda: (
                    store.x(
                        "SELECT count(*) FROM notify_attempts WHERE detail LIKE ?", ("timeout%",)
                    ).fetchone()[0]
                    >= 1
                ),
                timeout=10,
            )
            r["feishu"].mode = "ok"
            wait(lambda: len(r["feishu"].got) == 1, timeout=10)
        store.close()


def test_restart_mid_delivery_and_two_deliverers(db_url, tmp_path):
    """The deliverer killed (-9) while a receiver holds a message it has taken: the row comes
    back after its lease and is sent again with the same message id (the receiver's
    deduplicated view has it once); then two deliverers share the outbox, nothing twice."""
    import os
    import signal
    import subprocess
    import sys

    with Receivers() as r, Smtp() as (_, port):
        # a lease of 5 s: with 1 s, a loaded machine's database took longer than the lease to
        # mark a sent row, and the other deliverer sent it again (CI: 38 posts for 32; the
        # lease is not renewed while a row is in hand: docs/regulator.md, "Notify")
        text = toml(urls(r), port).replace("timeout_s = 2", "timeout_s = 0.5")
        (tmp_path / "notify.toml").write_text(text)
        cfg = config.parse(text)
        store = hooked(make_store(db_url), cfg)
        r["ding"].mode, r["ding"].hold_s = "hold", 60.0  # takes it, never answers in time
        alarm(store)
        proc = subprocess.Popen([sys.executable, "-m", "gasguard.tools.cli", "regulator",
                                 "notify", "--db", db_url, "--config",
                                 str(tmp_path / "notify.toml")],
                                stderr=subprocess.PIPE, env=dict(os.environ))  # fmt: skip
        try:
            wait(lambda: r["ding"].got, timeout=30)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        (key,) = store.x("SELECT key FROM notify_outbox WHERE channel = 'ding'").fetchone()
        assert (
            store.x("SELECT status FROM notify_outbox WHERE key = ?", (key,)).fetchone()[0]
            == "pending"
        )
        r["ding"].mode = "ok"
        for i in range(30):
            alarm(store, device="x%d" % i)
        with Running(db_url, cfg), Running(db_url, cfg):
            n = store.x("SELECT count(*) FROM notify_outbox").fetchone()[0]
            wait(lambda: outbox.counts(store)["sent"] == n, timeout=60)
        got = r["ding"].got
        assert len(r["ding"].dedup()) == 31
        assert len(got) == 32  # the one the receiver took before the crash, once more
        assert got[0].headers["X-GasGuard-Message-Id"] == outbox.message_id(key)
        assert [g.headers["X-GasGuard-Message-Id"] for g in got].count(outbox.message_id(key)) == 2
        assert store.x("SELECT count(*) FROM notify_attempts WHERE ok = 1").fetchone()[0] == n
        store.close()


# --- escalation: shortened timers --------------------------------------------------------------

CHAIN = """[escalation.high]
steps = [{after = "0s", roles = ["owner"]}, {after = "2s", roles = ["street"]},
         {after = "4s", roles = ["district"]}]
[escalation.low]
steps = [{after = "0s", roles = ["grid"]}, {after = "1s", roles = ["street"]}]
"""


def test_escalation_fires_on_time_and_ack_stops_it(db_url):
    with Receivers() as r, Smtp() as (_, port):
        cfg = config.parse(toml(urls(r), port, chain=CHAIN))
        store = make_store(db_url)  # no ingest hook: the engine's tick fires step 0 too
        with Running(db_url, cfg):
            alarm(store)
            (oe,) = store.x("SELECT open_event FROM incidents").fetchone()
            wait(lambda: any(g.json["to"] == "+8613900000002" for g in r["sms"].got), timeout=5)
            steps = store.rows("SELECT * FROM notify_steps ORDER BY step")
            assert [s["step"] for s in steps] == [0, 1]
            late = escalate.parse_time(steps[1]["fired_at"]) - escalate.parse_time(
                steps[1]["due_at"]
            )
            assert datetime.timedelta(0) <= late < datetime.timedelta(seconds=1)
            with store.transaction():
                acks.acknowledge(
                    store,
                    SITE,
                    DEV,
                    oe,
                    "duty1",
                    outbox._at(datetime.datetime.now(datetime.UTC)),
                    "console",
                )
            time.sleep(3.5)  # past step 3's deadline
        assert [s["step"] for s in store.rows("SELECT step FROM notify_steps")] == [0, 1]
        assert not any(g.json["to"] == "+8613900000003" for g in r["sms"].got)
        audit = store.rows(
            "SELECT \"after\" FROM audit WHERE action = 'notify.escalate' ORDER BY at"
        )
        assert len(audit) == 2 and '"step": 2' in audit[1]["after"]
        # the street's message is step 2's: it says so
        street = next(g for g in r["sms"].got if g.json["to"] == "+8613900000002")
        assert "第2级通知" in street.json["text"]
        store.close()


def test_a_cleared_alarm_stops_its_chain(tmp_path):
    db = str(tmp_path / "r.db")
    with Receivers() as r, Smtp() as (_, port):
        cfg = config.parse(toml(urls(r), port, chain=CHAIN))
        store = make_store(db)
        store.write([boundary.check(*board_event(SITE, DEV, "alarm.low", 1, 1, lel=20))])
        store.write([boundary.check(*board_event(SITE, DEV, "alarm.clear", 1, 2))])
        with Running(db, cfg):
            time.sleep(2)
        assert store.rows("SELECT * FROM notify_steps") == []  # cleared before any tick
        store.close()


# --- forwarding ---------------------------------------------------------------------------------


def test_forward_signed_schema_valid_and_republished(db_url, broker, tmp_path):
    import jsonschema
    import paho.mqtt.client as paho
    from cryptography.hazmat.primitives.asymmetric import ed25519

    schema = json.loads(
        (Path(__file__).parents[2] / "protocol" / "schemas" / "forward.schema.json").read_text()
    )
    pem = tmp_path / "fwd.pem"
    priv = ed25519.Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization

    pem.write_bytes(
        priv.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    got: list[bytes] = []
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    sub.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("city/alarms/#", qos=1)
    sub.loop_start()
    with Receivers() as r, Smtp() as (_, port):
        extra = (
            f'[channels.bridge]\ntype = "mqtt"\nurl = "mqtt://127.0.0.1:{broker.port}"\n'
            'topic = "city/alarms"\n'
        )
        text = toml(urls(r), port).replace(
            'hmac_secret_env = "T_FWD_SECRET"',
            'hmac_secret_env = "T_FWD_SECRET"\ned25519_key_file = "%s"\nkey_id = "k1"' % pem,
        )
        text = text.replace('channels = ["city"]', 'channels = ["city", "bridge"]')
        cfg = config.parse(text.replace("[owner]", extra + "[owner]"))
        store = make_store(db_url)
        alarm(store)
        (oe,) = store.x("SELECT open_event FROM incidents").fetchone()
        with store.transaction():
            at = "2026-11-30T20:00:00Z"
            keys = forward.forward_alarm(store, cfg, SITE, DEV, oe, "real", at)
            again = forward.forward_alarm(store, cfg, SITE, DEV, oe, "real", at)
        assert len(keys) == 2 and again == []
        with Running(db_url, cfg):
            wait(lambda: r["forward"].got and got, timeout=15)
        sub.loop_stop()
        g = r["forward"].got[0]
        ts = g.headers["X-GasGuard-Timestamp"]
        want = hmac.new(b"fwdsecret", ts.encode() + b"." + g.raw, hashlib.sha256).hexdigest()
        assert g.headers["X-GasGuard-Signature"] == "sha256=" + want
        priv.public_key().verify(
            base64.b64decode(g.headers["X-GasGuard-Signature-Ed25519"]), ts.encode() + b"." + g.raw
        )
        payload = g.json
        jsonschema.validate(payload, schema)
        assert payload["message_id"] == g.headers["X-GasGuard-Message-Id"]
        assert payload["alarm"]["verdict"] == "real" and payload["unit"]["name"] == "老王饭店"
        topic, mq = got[0]
        assert topic == "city/alarms/s1"
        jsonschema.validate(json.loads(mq), schema)
        store.close()


def test_message_text_is_one_line_a_field():
    from gasguard.regulator.notify import messages

    body = messages.alarm(
        "zh",
        "https://c.example",
        {"name": HOSTILE, "address": "a\r\nb"},
        {"site": "s 1/../x", "peak_lel": 55.0, "opened_at": "2026-11-30T12:00:00Z"},
        0,
        "closed",
    )
    lines = body["text"].split("\n")
    assert lines[2] == "地址: a b" and "20:00:00" in body["text"]  # Asia/Shanghai
    assert body["link"] == "https://c.example/units/" + urllib.parse.quote("s 1/../x", safe="")
    assert dingtalk.sign("k", 1) != feishu.sign("k", 1)
    # an independent implementation's vector (the `dingding` crate's signature test)
    assert dingtalk.sign("secret", 1700000000000) == "OuzzJR5+xZ4/EYwqtNt6sMYZQMTa/HEGvc9miJe7XzY="
    en = messages.alarm("en", "https://c.example", {"name": "Hotpot"}, {"site": "s1"}, 1, None)
    assert en["title"] == "[Gas HIGH alarm] Hotpot (escalation step 2)"
    assert "Valve: unknown" in en["text"]


def test_forward_hazard_payload(db_url):
    import jsonschema

    schema = json.loads(
        (Path(__file__).parents[2] / "protocol" / "schemas" / "forward.schema.json").read_text()
    )
    cfg = config.parse(
        toml({n: "http://127.0.0.1:9/" + n for n in ("wecom", "ding", "feishu", "sms", "forward")})
    )
    store = make_store(db_url)
    with store.transaction():
        store.x(
            "INSERT INTO hazards (id, source, site, kind, severity, summary, deadline, opened_at) "
            "VALUES (5, 'finding:s1::no-valve', 's1', 'no-valve', 'normal', '未装切断阀', "
            "'2026-12-07T00:00:00.000Z', '2026-11-30T00:00:00.000Z')"
        )
        (key,) = forward.forward_hazard(store, cfg, 5, "2026-11-30T20:00:00Z")
        assert forward.forward_hazard(store, cfg, 5, "2026-11-30T20:00:00Z") == []
    body = json.loads(
        store.x("SELECT body FROM notify_outbox WHERE key = ?", (key,)).fetchone()[0]
    )
    jsonschema.validate(body["payload"], schema)
    assert body["payload"]["hazard"]["status"] == "open" and body["payload"]["type"] == "hazard"
    assert body["payload"]["message_id"] == outbox.message_id(key)
    store.close()


def test_ingest_refuses_a_bad_notify_config_with_its_line(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "notify.toml"
    bad.write_text('base_url = "https://x.example"\n[escalation.high]\nsteps = 3\n')
    r = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "regulator", "ingest", "--broker",
         "mqtt://127.0.0.1:1", "--db", str(tmp_path / "r.db"), "--notify-config", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "line 3" in r.stderr, r.stderr


def test_a_work_order_provider_escalates_like_an_alarm(db_url):
    """The seam for regulator/workorders.py: any provider of Subjects runs the same engine."""
    now = datetime.datetime.now(datetime.UTC)
    chain = '[escalation.workorder]\nsteps = [{after = "0s", roles = ["grid"]}]\n'
    cfg = config.parse(
        toml(
            {n: "http://127.0.0.1:9/" + n for n in ("wecom", "ding", "feishu", "sms", "forward")},
            chain=chain,
        )
    )
    store = make_store(db_url)
    orders = [
        {
            "id": 7,
            "site": SITE,
            "severity": "high",
            "responsible": "张三",
            "deadline": outbox._at(now - datetime.timedelta(seconds=1)),
            "closed_at": None,
        }
    ]

    def overdue(store, now):  # the shape workorders.overdue returns
        return [
            escalate.Subject(
                "workorder",
                "workorder:%s" % w["id"],
                w["site"],
                "workorder",
                escalate.parse_time(w["deadline"]),
                w["closed_at"] is not None,
                "workorder:%s" % w["id"],
                w,
            )
            for w in orders
        ]

    assert escalate.tick(store, cfg, now, [overdue]) == 4  # three robots and the grid's mail
    assert escalate.tick(store, cfg, now, [overdue]) == 0  # a step fires once
    body = json.loads(
        store.x("SELECT body FROM notify_outbox WHERE channel = 'mail'").fetchone()[0]
    )
    assert "工单逾期" in body["title"] and "工单: 7" in body["text"]
    (row,) = store.rows("SELECT target FROM audit WHERE action = 'notify.escalate'")
    assert row["target"] == "workorder:7"
    store.close()
