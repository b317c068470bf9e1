# Device side of the gateway link. Runs only in the loop's slack and never waits: every transport
# call is non-blocking, and anything not sent now is sent on a later cycle.
#   - a session with the gateway first (docs/protocol.md, "Sessions"): births with a fresh random
#     nonce, once a second, until a time frame echoes it; only then heartbeats and events. A
#     gateway challenge (gn) is answered with a birth that echoes it. Nothing from outside the
#     confirmed session is acted on, so a recorded frame cannot be played back into a new one.
#   - heartbeat with health every heartbeat_s
#   - events from the flash log, oldest first, `window` in flight, re-sent every resend_ms until
#     acknowledged; acknowledgements are stored in flash, so after a reboot only unacknowledged
#     events are sent again
#   - time sync and the three harmless commands; nothing received can open the valve
from os import urandom
from time import ticks_add, ticks_diff

from micropython import const

from gasguard.protocol import catalogue as cat
from gasguard.protocol import cbor, frame
from gasguard.protocol.auth import Signer

_BIRTH_EVERY_MS = const(1000)  # births while no gateway session is confirmed
_BIRTH_GAP_MS = const(250)  # at most this often, whatever asks for one


def _nonce(v):
    return v is None or (isinstance(v, bytes) and len(v) == cat.NONCE_LEN)


def _valid_from_gateway(mtype, b):
    # The device-side subset of messages.validate (which is too big to keep loaded here): the
    # three gateway messages the device acts on. Nothing in them can open the valve.
    if not isinstance(b, dict):
        return False
    if mtype == cat.ACK:
        ids = b.get("ids")
        if not isinstance(ids, list) or not 0 < len(ids) <= cat.MAX_ACKS:
            return False
        for p in ids:
            if not (
                isinstance(p, list)
                and len(p) == 2
                and isinstance(p[0], int)
                and isinstance(p[1], int)
            ):
                return False
        return True
    if mtype == cat.TIME:
        return (
            isinstance(b.get("time"), int)
            and isinstance(b.get("boot"), int)
            and _nonce(b.get("nonce"))
            and _nonce(b.get("gn"))
        )
    return mtype == cat.COMMAND and b.get("cmd") in cat.COMMANDS


class Link:
    def __init__(self, transport, cfg, log, boot, device):
        self.t = transport
        self.cfg = cfg
        self.log = log
        self.boot = boot
        self.dev = device  # the App: health(), birth_body(), on_command()
        self.signer = Signer(cfg.key)
        self.dec = frame.FrameDecoder(self._signer_for)
        self.rx = bytearray(128)
        self.rxv = memoryview(self.rx)
        self.out = []  # frames waiting to be written
        self.out_pos = 0  # bytes of out[0] already written
        self.seq = 0
        self.inflight = {}  # (boot, seq) -> [log index, sent at ms]
        self.was_up = False
        self.last_hb = None  # none sent yet: the first goes out at once
        self.gw_boot = -1  # the confirmed gateway session (its boot), -1: none
        self.gw_seq = -1
        self.nonce = None  # our challenge while we ask for a (new) gateway session
        self.gn = None  # the gateway's challenge, echoed in the next birth
        self.birth_due = True
        self.last_birth = None
        self.time_base = None  # (unix seconds, uptime ms) once the gateway told us the time

    def _signer_for(self, device):
        return self.signer if device == self.cfg.device_id else None

    # --- sending ---------------------------------------------------------------------------------

    def _queue(self, mtype, body):
        self.seq += 1
        self.out.append(
            frame.encode(
                self.signer, mtype, self.boot, self.seq, self.cfg.device_id, cbor.dumps(body)
            )
        )

    def _flush(self):
        while self.out:
            head = self.out[0]
            n = self.t.write(memoryview(head)[self.out_pos :] if self.out_pos else head)
            if not n:
                return
            self.out_pos += n
            if self.out_pos < len(head):
                return
            self.out.pop(0)
            self.out_pos = 0

    def unix_time(self, up_ms):
        if self.time_base is None:
            return None
        t, at = self.time_base
        return t + (up_ms - at) // 1000

    def _ask(self):
        # ask for a (new) gateway session: a birth with a fresh nonce; the confirmed one, if
        # any, stays in use until a time frame echoing the nonce replaces it
        self.nonce = urandom(cat.NONCE_LEN)
        self.birth_due = True

    def _birth(self, now_ms):
        b = self.dev.birth_body()
        if self.nonce is not None:
            b["nonce"] = self.nonce
        if self.gn is not None:
            b["gn"] = self.gn
        self._queue(cat.BIRTH, b)
        self.gn = None  # cleared only once queued: a MemoryError above retries it later
        self.birth_due = False
        self.last_birth = now_ms

    # --- receiving -------------------------------------------------------------------------------

    def _handle(self, f, now_ms, up_ms):
        if f.mtype < 0x80:  # a device message reflected back at us
            return
        try:
            body = cbor.loads(f.body)
        except cbor.CBORError:
            body = None
        if not _valid_from_gateway(f.mtype, body):
            return
        if f.mtype == cat.TIME:
            n = body.get("nonce")
            if n is not None and n == self.nonce and body["boot"] == self.boot:
                # the gateway answered our challenge: its session is fresh, trust it from here
                self.gw_boot = f.boot
                self.gw_seq = f.seq
                self.nonce = None
                self.time_base = (body["time"], up_ms)
                self.last_hb = None  # health at once
                back = -self.cfg.link["resend_ms"]
                for e in self.inflight.values():  # whatever was in flight goes again now
                    e[1] = ticks_add(now_ms, back)
            elif f.boot == self.gw_boot and f.seq > self.gw_seq:
                self.gw_seq = f.seq  # inside our session, moving forward
            elif body.get("gn") is None:
                return  # a replay, or another gateway's: nothing to act on
            else:
                # a challenge from outside our session: another gateway, one restarted (its
                # boot number may even be ours again, after it lost its state) or a recording.
                # Only a fresh handshake tells: ask for a new session; ours stays until then
                self.gn = body["gn"]
                self._ask()
                return
            gn = body.get("gn")
            if gn is not None:
                self.gn = gn  # the gateway asks who we are: a birth that echoes it
                self.birth_due = True
            return
        # acks and commands count only inside the confirmed session, moving forward
        if f.boot != self.gw_boot or f.seq <= self.gw_seq:
            if f.boot != self.gw_boot and self.nonce is None:
                self._ask()  # a gateway we have no session with: introduce ourselves
            return
        self.gw_seq = f.seq
        if f.mtype == cat.ACK:
            for boot, seq in body["ids"]:
                entry = self.inflight.pop((boot, seq), None)
                if entry is not None:
                    self.log.ack(entry[0])
        else:  # COMMAND
            cmd = body["cmd"]
            ok, data = self.dev.on_command(cmd)
            reply = {"cmd": cmd, "ref": f.seq, "ok": ok}
            if data is not None:
                reply["data"] = data
            self._queue(cat.REPLY, reply)

    # --- slack work ------------------------------------------------------------------------------

    def service(self, now_ms, up_ms):
        t = self.t
        t.poll(now_ms)
        up = t.up()
        if up and not self.was_up:
            # (re)connected, maybe to another gateway: no session until one is confirmed
            self.gw_boot = -1
            self._ask()
        self.was_up = up
        if not up:
            return
        n = t.read_into(self.rx)
        if n:
            for r in self.dec.feed(self.rxv[:n]):
                if isinstance(r, frame.Frame):
                    self._handle(r, now_ms, up_ms)
        last = self.last_birth
        if self.nonce is not None and self.gw_boot < 0:
            if last is None or ticks_diff(now_ms, last) >= _BIRTH_EVERY_MS:
                self.birth_due = True
        if self.birth_due and (last is None or ticks_diff(now_ms, last) >= _BIRTH_GAP_MS):
            self._birth(now_ms)
        # heartbeats and events only inside a confirmed session, and never ahead of a birth
        # the gateway asked for (it would drop them until that birth has confirmed us)
        if self.gw_boot >= 0 and self.gn is None:
            last = self.last_hb
            if last is None or ticks_diff(now_ms, last) >= self.cfg.heartbeat_s * 1000:
                self._queue(cat.HEARTBEAT, self.dev.health())
                self.last_hb = now_ms  # only once queued: a MemoryError retries it next slack
            if len(self.out) < 4:
                self._send_events(now_ms)
        self._flush()

    def _send_events(self, now_ms):
        # resend what timed out, then fill the window with the oldest unsent records
        lk = self.cfg.link
        window = lk["window"]
        resend_ms = lk["resend_ms"]
        for e in self.inflight.values():
            if ticks_diff(now_ms, e[1]) >= resend_ms:
                body = self.log.read(e[0])
                if body is None:
                    continue
                e[1] = now_ms
                self._queue(cat.EVENT, body)
                return
        if len(self.inflight) >= window:
            return
        inflight_idx = [e[0] for e in self.inflight.values()]
        for i in self.log.unacked(limit=window + len(inflight_idx)):
            if i in inflight_idx:
                continue
            body = self.log.read(i)
            if body is None:
                continue
            b, s = body["id"]
            self.inflight[(b, s)] = [i, now_ms]
            self._queue(cat.EVENT, body)
            if len(self.inflight) >= window:
                return
