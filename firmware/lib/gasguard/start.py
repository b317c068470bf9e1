# Boot sequence: validate the config first, free the validator, then load the firmware proper.
# Loading order matters on a 110 KB heap: the config checker is only needed for a moment.
import gc
import sys
from time import sleep_ms, ticks_ms


class Values:
    """The validated configuration values (see config.Config.plain): a class that stays when the
    validator is dropped."""

    def digest_hex(self):
        return self.digest


def _forget(package, name):
    # drop a submodule entirely: from sys.modules and from its parent package's attributes
    sys.modules.pop(package.__name__ + "." + name, None)
    if name in package.__dict__:
        delattr(package, name)


def load_config(config_path, key_path):
    """Validated config values (raises config.ConfigError); the validator is freed afterwards."""
    import gasguard
    import gasguard.protocol
    from gasguard import config

    try:
        return config.load(config_path, key_path)
    finally:
        _forget(gasguard, "config")
        _forget(gasguard.protocol, "profile_parse")
        gc.collect()


def main(make_board, root, config_path, key_path):
    try:
        cfg = load_config(config_path, key_path)
    except ValueError as e:  # config.ConfigError
        # bad or missing config: valve closed, yellow on, say which field and why; no loop
        print("CONFIG ERROR %s: %s" % (getattr(e, "field", "config"), getattr(e, "reason", e)))
        board = make_board(None)
        board.valve.value(0)
        board.yellow.value(1)
        try:
            while True:
                board.wdt.feed()  # a deliberate safe state, not a hang
                board.service(ticks_ms())
                sleep_ms(100)
        except KeyboardInterrupt:  # the installer is here to fix the config: give them the REPL
            print("STOPPED from the console: valve closed; reset the board to resume")
            board.maintenance()
            return
    board = make_board(cfg)
    from gasguard import app

    app.run(board, cfg, root)
