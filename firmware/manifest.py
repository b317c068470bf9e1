# The device image: every file that goes on a GasGuard board, declared once. Plain data, in the
# spirit of micropython-lib's manifest.py files: host tools read it (tools/image.py: gasguard
# flash, the virtual board, the MicroPython tests' staging, scripts/typecheck-esp32.sh). It never
# goes on the board itself, but compiles with mpy-cross like everything under firmware/.
# Paths are relative to firmware/ (or to protocol/ for PROTOCOL and PROFILES).

# at the board's root, as source: what MicroPython runs first at reset
ROOT_SOURCE = ("boot.py", "main.py")

# at the board's root, as bytecode (outside the installs, as main.py is: docs/firmware.md)
ROOT_BYTECODE = ("rom.py", "fallback.py")

# the firmware package, lib/gasguard/ on the board, as bytecode. hal/unix*.py serve the virtual
# board (the unix port); an ESP32 never imports them.
FIRMWARE = (
    "lib/gasguard/__init__.py",
    "lib/gasguard/app.py",
    "lib/gasguard/bump.py",
    "lib/gasguard/config.py",
    "lib/gasguard/detectors.py",
    "lib/gasguard/eventlog.py",
    "lib/gasguard/events.py",
    "lib/gasguard/hmi.py",
    "lib/gasguard/link.py",
    "lib/gasguard/modbus.py",
    "lib/gasguard/persist.py",
    "lib/gasguard/release.py",
    "lib/gasguard/safe.py",
    "lib/gasguard/safety.py",
    "lib/gasguard/selftest.py",
    "lib/gasguard/start.py",
    "lib/gasguard/valve.py",
    "lib/gasguard/hal/__init__.py",
    "lib/gasguard/hal/esp32.py",
    "lib/gasguard/hal/unix.py",
    "lib/gasguard/hal/unix_pty.py",
    "lib/gasguard/hal/unix_tcp.py",
)

# the device subset of protocol/, lib/gasguard/protocol/ on the board, as bytecode. Host-only
# modules stay off the board: messages.py, cloudevents.py, record.py, strictjson.py, schemas/.
PROTOCOL = (
    "__init__.py",
    "auth.py",
    "catalogue.py",
    "cbor.py",
    "cobs.py",
    "frame.py",
    "profile.py",
    "profile_parse.py",
)

# detector profiles, lib/gasguard/protocol/profiles/ on the board, as JSON
PROFILES = "profiles/*.json"
