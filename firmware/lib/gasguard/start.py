# Boot sequence, after the safe core has closed the valve: validate the config first, free the
# validator, then build the board. Loading order matters on a 110 KB heap: the config checker is
# only needed for a moment, and main.py drops this module too before the loop starts.
import gc

from gasguard import Values, forget  # noqa: F401 - Values: config.plain() makes one from here


def load_config(config_path, key_path):
    """Validated config values (raises config.ConfigError); the validator is freed afterwards."""
    import gasguard
    import gasguard.protocol
    from gasguard import config

    try:
        return config.load(config_path, key_path)
    finally:
        forget(gasguard, "config")
        forget(gasguard.protocol, "profile_parse")
        gc.collect()


def keep_pinmap(cfg, path):
    """The safe core's pin map follows the validated config, so the next boot (even into a
    broken config) drives the valve this config describes."""
    import json

    from gasguard.persist import read_bytes, write_atomic
    from gasguard.safe import pinmap

    pm = pinmap(cfg)
    try:
        same = json.loads(read_bytes(path)) == pm  # as flash wrote it, or as we did
    except (TypeError, ValueError):
        same = False
    if not same:
        try:
            write_atomic(path, json.dumps(pm).encode())
        except OSError as e:  # the board runs on: its valve is this config's from here
            print("PIN MAP not written (%s): the next boot's safe core cannot rely on it" % e)


def boot(make_board, config_path, key_path, pinmap_path):
    """(board, config) ready for the loop, or None: a bad config was reported (valve closed)
    and the installer stopped the wait from the console."""
    from gasguard import safe

    try:
        cfg = load_config(config_path, key_path)
    except ValueError as e:  # config.ConfigError
        # bad or missing config: valve closed, fault lamp, say which field and why; no loop
        safe.halt(
            "CONFIG ERROR %s: %s"
            % (getattr(e, "field", "config"), getattr(e, "reason", e)),
            True,
        )
        return None
    keep_pinmap(cfg, pinmap_path)
    return make_board(cfg), cfg
