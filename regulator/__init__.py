"""The regulator's service: the stream ingested into PostgreSQL or SQLite (docs/regulator.md).

ingest (command.py) runs workers (worker.py); each takes its MQTT session (mqttseam.py), checks
every message at the border (boundary.py) and stores it (store.py), incidents following the
board's own order (incidents.py).
"""
