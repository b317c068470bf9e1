"""The regulator's service: the stream ingested into PostgreSQL or SQLite (docs/regulator.md).

ingest (command.py) runs workers (worker.py); each takes its MQTT session (mqttseam.py), checks
every message at the border (boundary.py) and stores it (store.py), incidents following the
board's own order (incidents.py). The registry of units (registry.py, reading a district's CSV
or XLSX with sheet.py) and the compliance findings per unit (compliance.py), which the workers
keep up to date.
"""
