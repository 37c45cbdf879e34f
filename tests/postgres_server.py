"""A real PostgreSQL server for tests, started from the server binaries in a temporary directory.

``initdb`` and ``postgres`` refuse to run as root, and the tests run as root on CI machines, so the
server then runs as the system's ``postgres`` user, in a directory it owns. It listens on
127.0.0.1 only, trusts local connections, and is stopped (and its directory removed) on exit.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))  # Debian keeps them off PATH
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, database: str = "dagster"):
        self.database = database
        self.initdb, self.pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            raise RuntimeError("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.root: Path | None = None
        self.port = 0

    @property
    def url(self) -> str:
        # psycopg2 named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3.
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self.as_user, *argv], cwd=self.root, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}"
                               + (f"\n{log.read_text()[-2000:]}" if log.exists() else ""))

    def __enter__(self) -> "PostgresServer":
        self.root = Path(tempfile.mkdtemp(prefix="crv-pg-"))
        if self.as_user:
            shutil.chown(self.root, "postgres", "postgres")
        data = self.root / "data"
        self._run(self.initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.port = _free_port()
        self._run(self.pg_ctl, "-D", str(data), "-l", str(self.root / "server.log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            conn.close()
        return self

    def query(self, sql: str) -> list[tuple]:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=self.database)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall()
        finally:
            conn.close()

    def __exit__(self, *exc) -> None:
        try:
            self._run(self.pg_ctl, "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
