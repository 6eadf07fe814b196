"""A real PostgreSQL server (Debian's postgresql package) on a free loopback port, in a temporary directory."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.broker import free_port

PASSWORD = "pg-test-secret"


def _bin(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, else the newest /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return versions[-1] if versions else None


class PortTaken(RuntimeError):
    """Someone else took the port between choosing it and the server binding it."""


class Postgres:
    """initdb into a fresh directory and run `postgres` on 127.0.0.1:port, as user postgres when we are root."""

    def __init__(self, durable: bool = False) -> None:
        """`durable=False` skips fsync: faster tests, and a crash of this throwaway server loses nothing we keep."""
        self.durable = durable
        self.initdb, self.server = _bin("initdb"), _bin("postgres")
        if not self.initdb or not self.server:
            raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql)")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise FileNotFoundError('psycopg is not installed (pip install -e ".[postgres]")') from None
        self.port = free_port()
        # Root may not run postgres; the directory is made under /tmp (not pytest's private tmp) for its user.
        self.dir = Path(tempfile.mkdtemp(prefix="edge-fer-pg-"))
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            try:
                entry = pwd.getpwnam(self.user)
            except KeyError:
                raise FileNotFoundError("running as root and there is no postgres user to run the server") from None
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "server.log"

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        """A connection URL for the superuser."""
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> Postgres:
        """initdb (password auth) and run."""
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.user:
            os.chown(pwfile, pwd.getpwnam(self.user).pw_uid, -1)
        subprocess.run([self.initdb, "-D", str(self.dir / "data"), "-U", "postgres", "--auth=scram-sha-256",
                        f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8", "--locale=C"], user=self.user,
                       check=True, capture_output=True, timeout=120)
        for _ in range(3):
            try:
                return self.run()
            except PortTaken:  # a free port can be taken by any outgoing connection before the server binds it
                self.port = free_port()
        return self.run()

    def run(self) -> Postgres:
        """Start the server on the initialized directory; wait until it accepts a connection."""
        import psycopg

        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([self.server, "-D", str(self.dir / "data"), "-p", str(self.port),
                                          "-k", str(self.dir),
                                          "-c", "listen_addresses=127.0.0.1",
                                          "-c", f"fsync={'on' if self.durable else 'off'}"],
                                         user=self.user, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "Address already in use" in self.log.read_text():
                    self.log.write_text("")
                    raise PortTaken(self.port)
                raise RuntimeError(f"postgres exited: {self.log.read_text()[-1000:]}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError(f"postgres did not start on port {self.port}")

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, remove: bool = True) -> None:
        """Stop the server (a fast shutdown: open connections are cut) and, unless `remove=False`, its directory."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)


def started_server() -> Postgres:
    """A running server of its own, or the test is skipped with the reason."""
    try:
        server = Postgres()
    except FileNotFoundError as e:
        pytest.skip(f"PostgreSQL cannot run here: {e}")
    try:
        return server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        server.stop()
        pytest.skip(f"PostgreSQL cannot run here: {e}")


@pytest.fixture(scope="session")
def postgres_server():
    """One server for the test session."""
    server = started_server()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: Postgres, request: pytest.FixtureRequest) -> str:
    """A fresh database for one test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:55]
    return postgres_server.create_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A test runs on a SQLite file, and again on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "events.db")
    return request.getfixturevalue("postgres_url")
