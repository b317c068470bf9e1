"""A throwaway PostgreSQL server: initdb + pg_ctl on a free port, its socket and data in a
temporary directory, run as the `postgres` user when we are root (PostgreSQL refuses root).
The regulator's tests and `gasguard bench regulator` start one each."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from .brokers import free_port


def pg_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not dirs:
        raise RuntimeError("PostgreSQL is not installed: scripts/setup.sh installs postgresql-15")
    return Path(dirs[-1])


class PostgresServer:
    """fsync off by default (a test server: its durability is not what is tested, and it starts
    in about a second); settings: extra `-c name=value` server options."""

    def __init__(self, fsync: bool = False, settings: dict[str, str] | None = None) -> None:
        self.bin = pg_bin()
        self.port = free_port()
        self.fsync = fsync
        self.settings = settings or {}
        self.dir = Path(tempfile.mkdtemp(prefix="gasguard-pg-"))
        self.data = self.dir / "data"
        self.as_user: dict = {}
        if os.geteuid() == 0:  # CI runs as root; PostgreSQL will not
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _run(self, *argv: str) -> None:
        proc = subprocess.run(
            argv, cwd=self.dir, capture_output=True, text=True, timeout=60, **self.as_user
        )
        if proc.returncode:
            log = self.dir / "log"
            raise RuntimeError(
                "%s failed: %s%s\n%s"
                % (argv[0], proc.stdout, proc.stderr, log.read_text() if log.exists() else "")
            )

    def start(self) -> PostgresServer:
        if not self.data.exists():
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                      "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")  # fmt: skip
        opts = "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=%s -c max_connections=60" % (
            self.port, self.dir, "on" if self.fsync else "off")  # fmt: skip
        opts += "".join(" -c %s=%s" % kv for kv in self.settings.items())
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                  str(self.dir / "log"), "-w", "-t", "60", "start")  # fmt: skip
        return self

    def halt(self) -> None:
        """Stop the server as a crash would (its data stays: start() brings it back)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                  "stop")  # fmt: skip

    def url(self, db: str = "postgres") -> str:
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, db)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute("CREATE DATABASE %s" % name)
        return self.url(name)

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.halt()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
