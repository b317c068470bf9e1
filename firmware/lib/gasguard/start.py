# Boot sequence: validate the config first, free the validator, then load the firmware proper.
# Loading order matters on a 110 KB heap: the config checker is only needed for a moment.
import gc
import sys
from time import sleep_ms, ticks_ms


def main(make_board, root, config_path, key_path):
    from gasguard import config

    try:
        cfg = config.load(config_path, key_path)
    except config.ConfigError as e:
        # bad or missing config: valve closed, yellow on, say which field and why; no loop
        print("CONFIG ERROR %s: %s" % (e.field, e.reason))
        board = make_board(None)
        board.valve.value(0)
        board.yellow.value(1)
        while True:
            board.wdt.feed()  # a deliberate safe state, not a hang: keep the REPL reachable
            board.service(ticks_ms())
            sleep_ms(100)
    del config
    for name in ("gasguard.config", "gasguard.protocol.profile_parse", "json"):
        sys.modules.pop(name, None)
    gc.collect()
    board = make_board(cfg)
    print("heap after config", gc.mem_free())
    from gasguard import app

    gc.collect()
    print("heap after firmware load", gc.mem_free())

    app.run(board, cfg, root)
