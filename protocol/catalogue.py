# The message catalogue's names and numbers, without the validators: small enough for the device
# to keep loaded. messages.py builds on it; gasguard.protocol.messages re-exports every name here.
BIRTH = 0x01
HEARTBEAT = 0x02
EVENT = 0x03
REPLY = 0x04
ACK = 0x81
TIME = 0x82
COMMAND = 0x83

EVENT_KINDS = (
    "alarm.low",
    "alarm.high",
    "alarm.clear",
    "detector.fault",
    "detector.restored",
    "valve.closed",
    "valve.fault",
    "ack",
    "reset",
    "reset.refused",
    "selftest",
    "tamper",
    "boot",
    "events.lost",
)
COMMANDS = ("identify", "selftest", "config_digest")
VALVE_STATES = ("open", "closed", "fault", "unknown")
VALVE_KINDS = ("nc", "latching")
# "overrange": the reading is above the profile's measuring range; a high alarm, never a fault
DETECTOR_STATES = (
    "ok", "warmup", "inhibit", "calibration", "fault", "eol", "noanswer", "overrange"
)  # fmt: skip
ALARM_LEVELS = ("none", "low", "high")
MAX_ACKS = 32  # event ids one ack frame may carry
NONCE_LEN = 8  # bytes of a handshake challenge (birth "nonce", time "gn")
INST_LEN = 16  # hex characters of a board's instance id (64 random bits)
