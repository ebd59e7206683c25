"""The project's own local PostgreSQL + PostGIS cluster.

Used when no external database is configured: ``make run`` and the tests start a
cluster in a directory of the project (``.data/pg`` by default), listening only on
127.0.0.1, and reuse it on the next run.  PostgreSQL refuses to run as root, so when
this process is root the server binaries run as the ``postgres`` system user (created
by Debian's ``postgresql-common``) and the data directory is handed to it.

Nothing here reads the environment: paths, port and binaries are arguments.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from layers.errors import ClusterError

DEFAULT_BINDIR = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"


def _run_as() -> str | None:
    """The system user that runs the server binaries, or None for 'this user'."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:  # pragma: no cover - Debian's package always creates it
        raise ClusterError(
            "running as root and no 'postgres' system user exists to run PostgreSQL; "
            "install postgresql-common or run as an ordinary user"
        ) from exc
    return "postgres"


@dataclass(frozen=True)
class LocalCluster:
    """A PostgreSQL cluster in ``datadir`` on 127.0.0.1:``port``."""

    datadir: Path
    port: int
    bindir: Path = DEFAULT_BINDIR

    # -- paths ------------------------------------------------------------------
    @property
    def password_file(self) -> Path:
        """The superuser's and application role's generated password (mode 0600)."""
        return self.datadir.parent / f"{self.datadir.name}.password"

    @property
    def logfile(self) -> Path:
        return self.datadir.parent / f"{self.datadir.name}.log"

    @property
    def password(self) -> str:
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError as exc:
            raise ClusterError(f"cluster at {self.datadir} has no password file") from exc

    def url(self, database: str, user: str = SUPERUSER) -> str:
        """A libpq URL for ``database`` on this cluster."""
        return f"postgresql://{user}:{self.password}@127.0.0.1:{self.port}/{database}"

    # -- state ------------------------------------------------------------------
    @property
    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialised:
            return False
        res = self._pg_ctl("status", check=False)
        return res.returncode == 0

    def accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    # -- actions ----------------------------------------------------------------
    def _cmd(self, argv: list[str]) -> list[str]:
        user = _run_as()
        if user is None:
            return argv
        return ["runuser", "-u", user, "--", *argv]

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = self._cmd([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args])
        res = subprocess.run(argv, capture_output=True, text=True)
        if check and res.returncode != 0:
            raise ClusterError(
                f"pg_ctl {' '.join(args)} failed: {res.stderr.strip() or res.stdout.strip()}"
                f" (log: {self.logfile})"
            )
        return res

    def init(self) -> bool:
        """Create the cluster if it does not exist. Returns True when it was created."""
        if self.initialised:
            return False
        if not (self.bindir / "initdb").exists():
            raise ClusterError(
                f"PostgreSQL server binaries not found in {self.bindir}; "
                "install postgresql-15 and postgresql-15-postgis-3"
            )
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        if self.datadir.exists() and any(self.datadir.iterdir()):
            raise ClusterError(f"{self.datadir} exists, is not empty and holds no cluster")
        self.datadir.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        os.chmod(self.password_file, 0o600)
        user = _run_as()
        pwfile = self.datadir.parent / f".{self.datadir.name}.initpw"
        shutil.copyfile(self.password_file, pwfile)
        if user is not None:
            pw = pwd.getpwnam(user)
            os.chown(self.datadir, pw.pw_uid, pw.pw_gid)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
            os.chmod(self.datadir, 0o700)
            self.logfile.touch()
            os.chown(self.logfile, pw.pw_uid, pw.pw_gid)
        try:
            argv = self._cmd(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            )
            res = subprocess.run(argv, capture_output=True, text=True)
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            raise ClusterError(f"initdb failed: {res.stderr.strip()}")
        conf = self.datadir / "postgresql.auto.conf"
        with conf.open("a") as fh:
            fh.write(
                "\n# written by gridgov\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.datadir}'\n"
                "shared_buffers = '512MB'\n"
                "work_mem = '32MB'\n"
                "maintenance_work_mem = '256MB'\n"
                "max_connections = 200\n"
                "fsync = on\n"
                "logging_collector = off\n"
            )
        return True

    def start(self, timeout: float = 60.0) -> bool:
        """Start the cluster if it is not running. Returns True when it was started."""
        if self.running():
            return False
        if self.accepting():
            raise ClusterError(
                f"port {self.port} on 127.0.0.1 is taken by another server; "
                "set GRIDGOV_PG_PORT to a free port"
            )
        self._pg_ctl("start", "-w", "-t", str(int(timeout)), "-l", str(self.logfile))
        deadline = time.monotonic() + timeout
        while not self.accepting():
            if time.monotonic() > deadline:
                raise ClusterError(f"cluster did not accept connections (log: {self.logfile})")
            time.sleep(0.1)
        return True

    def stop(self, mode: str = "fast") -> bool:
        """Stop the cluster if it runs. Returns True when it was stopped."""
        if not self.running():
            return False
        self._pg_ctl("stop", "-m", mode, "-w")
        return True

    def standby(self, datadir: Path, port: int, timeout: float = 120.0) -> LocalCluster:
        """A streaming-replication standby of this running cluster, in ``datadir`` on
        ``port``: ``pg_basebackup -R`` (which writes ``primary_conninfo`` and
        ``standby.signal``), then its own port and socket directory.  It shares this
        cluster's passwords (its password file is a copy).  Not started."""
        replica = LocalCluster(datadir=datadir, port=port, bindir=self.bindir)
        if replica.initialised:
            raise ClusterError(f"{datadir} already holds a cluster")
        datadir.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.password_file, replica.password_file)
        os.chmod(replica.password_file, 0o600)
        datadir.mkdir(parents=True, exist_ok=True)
        os.chmod(datadir, 0o700)
        user = _run_as()
        if user is not None:
            pw = pwd.getpwnam(user)
            os.chown(datadir, pw.pw_uid, pw.pw_gid)
            replica.logfile.touch()
            os.chown(replica.logfile, pw.pw_uid, pw.pw_gid)
        argv = self._cmd([str(self.bindir / "pg_basebackup"), "-D", str(datadir), "-R",
                          "-X", "stream", "-c", "fast", "-h", "127.0.0.1", "-p", str(self.port),
                          "-U", SUPERUSER, "-w"])
        env = {**os.environ, "PGPASSWORD": self.password}  # never on a command line
        res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
        if res.returncode != 0:
            raise ClusterError(f"pg_basebackup failed: {res.stderr.strip()}")
        with (datadir / "postgresql.auto.conf").open("a") as fh:
            fh.write(
                "\n# the standby's own, written by gridgov\n"
                f"port = {port}\n"
                f"unix_socket_directories = '{datadir}'\n"
                "hot_standby = on\n"
            )
        return replica

    def destroy(self) -> None:
        """Stop and delete the cluster and its password and log files."""
        self.stop(mode="immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)
        self.password_file.unlink(missing_ok=True)
        self.logfile.unlink(missing_ok=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
