# Device side of the gateway link. Runs only in the loop's slack and never waits: every transport
# call is non-blocking, and anything not sent now is sent on a later cycle.
#   - birth at boot, again after a reconnect or a gateway restart, and with every heartbeat
#     until the gateway answers it with a time sync
#   - heartbeat with health every heartbeat_s
#   - events from the flash log, oldest first, `window` in flight, re-sent every resend_ms until
#     acknowledged; acknowledgements are stored in flash, so after a reboot only unacknowledged
#     events are sent again
#   - time sync and the three harmless commands; nothing received can open the valve
from time import ticks_add, ticks_diff

from gasguard.protocol import catalogue as cat
from gasguard.protocol import cbor, frame
from gasguard.protocol.auth import Signer


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
        return isinstance(b.get("time"), int) and isinstance(b.get("boot"), int)
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
        self.need_birth = True
        self.gw_seen = False
        self.was_up = False
        self.last_hb = None  # none sent yet: the first goes out at once
        self.gw_boot = -1
        self.gw_seq = -1
        self.time_base = None  # (unix seconds, uptime ms) once the gateway told us the time
        self.rejected = 0  # well-framed, signed frames refused: reflected, replayed or bad body

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

    # --- receiving -------------------------------------------------------------------------------

    def _handle(self, f, up_ms):
        if f.mtype < 0x80:  # a device message reflected back at us
            self.rejected += 1
            return
        # replay window: the gateway's (boot, seq) must move forward
        if f.boot < self.gw_boot or (f.boot == self.gw_boot and f.seq <= self.gw_seq):
            self.rejected += 1
            return
        try:
            body = cbor.loads(f.body)
        except cbor.CBORError:
            body = None
        if not _valid_from_gateway(f.mtype, body):
            self.rejected += 1
            return
        if f.boot != self.gw_boot and self.gw_boot:
            self.need_birth = True  # the gateway restarted and forgot us: introduce ourselves
        self.gw_boot = f.boot
        self.gw_seq = f.seq
        if f.mtype == cat.ACK:
            for boot, seq in body["ids"]:
                entry = self.inflight.pop((boot, seq), None)
                if entry is not None:
                    self.log.ack(entry[0])
        elif f.mtype == cat.TIME:
            if body["boot"] == self.boot:  # a time sync replayed from another boot is ignored
                self.time_base = (body["time"], up_ms)
                self.gw_seen = True  # time sync is the answer to our birth: stop repeating it
        elif f.mtype == cat.COMMAND:
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
            self.need_birth = True  # (re)connected: introduce ourselves and resend in flight
            back = -self.cfg.link["resend_ms"]
            for e in self.inflight.values():
                e[1] = ticks_add(now_ms, back)
        self.was_up = up
        if not up:
            return
        n = t.read_into(self.rx)
        if n:
            for r in self.dec.feed(self.rxv[:n]):
                if isinstance(r, frame.Frame):
                    self._handle(r, up_ms)
        if self.need_birth:  # cleared only once queued: a MemoryError here retries it later
            self._queue(cat.BIRTH, self.dev.birth_body())
            self.need_birth = False
        last = self.last_hb
        if last is None or ticks_diff(now_ms, last) >= self.cfg.heartbeat_s * 1000:
            if not self.gw_seen and last is not None:
                self._queue(cat.BIRTH, self.dev.birth_body())
            self._queue(cat.HEARTBEAT, self.dev.health())
            self.last_hb = now_ms  # only once queued: a MemoryError above retries it next slack
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
