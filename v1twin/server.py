"""The local PostgreSQL server behind ``v1twin db start|stop|status``.

It keeps its data directory under ``$V1TWIN_HOME/db`` (as root and without V1TWIN_HOME, in the
system temp folder when the postgres account cannot enter the checkout), listens on 127.0.0.1
only, and requires a password (scram-sha-256; no ``trust`` lines), which is generated once and
kept in the 0600 credentials file (see :mod:`v1twin.settings`).

Server binaries, first found wins: ``$V1TWIN_PG_BIN``; Debian's ``/usr/lib/postgresql/*/bin``
(newest); ``pg_ctl`` on ``PATH``; the ``pgserver`` wheel from PyPI (``pip install
v1twin[pgserver]``) for a laptop without root. ``initdb`` refuses to run as root, so as
root every server command runs as the ``postgres`` system user, which then owns the data
directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from schemas import connection as settings

SUPERUSER = "v1twin"


def find_binaries() -> Path:
    """Directory holding ``initdb`` and ``pg_ctl``; raises with the places it looked."""
    candidates: list[Path] = []
    if os.environ.get("V1TWIN_PG_BIN"):
        candidates.append(Path(os.environ["V1TWIN_PG_BIN"]))
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    candidates.extend(reversed(debian))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    spec = importlib.util.find_spec("pgserver")
    if spec and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    raise FileNotFoundError(
        "No PostgreSQL server binaries found (looked in $V1TWIN_PG_BIN, /usr/lib/postgresql/*/bin, "
        "PATH, and the pgserver package). Install Debian's postgresql, or: pip install "
        "'v1twin[pgserver]'"
    )


def has_lz4(binaries: Path) -> bool:
    """Whether the server in ``binaries`` was built with lz4 (``pg_config --configure`` says
    ``--with-lz4``: Debian's is, the pgserver wheel's is not; a server without it refuses to start
    with ``default_toast_compression=lz4``)."""
    pg_config = binaries / "pg_config"
    if not pg_config.exists():
        return False
    result = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True)
    return "--with-lz4" in result.stdout


def _closed_folder(path: Path) -> Path | None:
    """The first existing folder above ``path`` that other users cannot enter, or None."""
    for folder in reversed(path.parents):
        if folder.exists() and not folder.stat().st_mode & 0o001:
            return folder
    return None


def _default_root() -> Path:
    """``$V1TWIN_HOME/db``; without V1TWIN_HOME, as root, when the postgres account cannot
    enter the checkout (a clone in a 0700 temp folder), a folder of this checkout's own in the
    system temp folder instead (named by a hash of the checkout's path)."""
    root = settings.home() / "db"
    if "V1TWIN_HOME" in os.environ or os.geteuid() != 0 or _closed_folder(root) is None:
        return root
    tag = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"v1twin-db-{tag}"


@dataclass
class LocalServer:
    """A PostgreSQL server owned by this checkout (or by ``$V1TWIN_HOME``)."""

    root: Path
    port: int = settings.DEFAULT_PORT

    @classmethod
    def default(cls) -> LocalServer:
        creds = settings.local_credentials()
        if creds:
            port = creds.port
        elif "V1TWIN_DB_PORT" in os.environ:
            port = int(os.environ["V1TWIN_DB_PORT"])
        else:
            port = free_port(settings.DEFAULT_PORT)
        return cls(root=_default_root(), port=port)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    # -- running commands as the right user ------------------------------------------------
    def _service_user(self) -> pwd.struct_passwd | None:
        """The ``postgres`` account when we are root (initdb refuses root), else None."""
        return pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(find_binaries() / args[0]), *args[1:]]
        user = self._service_user()
        if user is not None:
            cmd = ["runuser", "-u", user.pw_name, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def _check_reachable(self) -> None:
        """As root, the postgres user must be able to enter every folder above the data."""
        if self._service_user() is None:
            return
        folder = _closed_folder(self.root)
        if folder is not None:
            raise PermissionError(
                f"{folder} is closed to other users, so the 'postgres' account cannot reach "
                f"{self.root}; set V1TWIN_HOME to a folder below an open one, or chmod o+x {folder}"
            )

    def _own(self, path: Path) -> None:
        user = self._service_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    # -- lifecycle -----------------------------------------------------------------------
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> settings.Credentials:
        """Create the cluster with a fresh random password; idempotent."""
        creds = settings.local_credentials()
        if self.initialized() and creds is not None:
            return creds
        if self.initialized():
            raise RuntimeError(
                f"{self.data_dir} exists but {settings.credentials_file()} is missing; "
                f"remove {self.root} to start afresh (this deletes the local database)"
            )
        self._check_reachable()
        for path in (self.root, self.data_dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            self._own(path)
        password = secrets.token_urlsafe(24)
        with tempfile.NamedTemporaryFile("w", dir=self.root, delete=False) as pwfile:
            pwfile.write(password)
        try:
            os.chmod(pwfile.name, 0o600)
            self._own(Path(pwfile.name))
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--pwfile",
                pwfile.name,
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            )
        finally:
            os.unlink(pwfile.name)
        creds = settings.Credentials(
            "127.0.0.1", self.port, SUPERUSER, password, "postgresql", use_tls=False
        )
        settings.save_local_credentials(creds)
        return creds

    def running(self) -> bool:
        if not self.initialized():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def start(self) -> settings.Credentials:
        """Initialise if needed and start on 127.0.0.1; a running server is left as it is."""
        creds = self.init()
        if not self.running():
            creds = self._claim_port(creds)
            options = (
                f"-p {creds.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories='{self.socket_dir}' -c max_connections=100"
            )
            if has_lz4(find_binaries()):
                options += " -c default_toast_compression=lz4"  # pglz made bulk import 2x slower
            self.log_file.touch()
            self._own(self.log_file)
            result = self._run(
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                options,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"PostgreSQL did not start (see "
                    f"{self.log_file}):\n{result.stdout}{result.stderr}"
                )
        self.wait_until_answering(creds)
        return creds

    def _claim_port(self, creds: settings.Credentials) -> settings.Credentials:
        """The stored credentials, or, where another program took their port while this server
        was down (e.g. another checkout's server), the same with the next free port, saved."""
        if not _listening(creds.port):
            return creds
        moved = replace(creds, port=free_port(creds.port + 1))
        settings.save_local_credentials(moved)
        print(
            f"port {creds.port} is taken by another program; this database server moves to port "
            f"{moved.port} (saved in {settings.credentials_file()})",
            file=sys.stderr,
        )
        return moved

    def stop(self) -> bool:
        """Stop the server; returns False where it was not running."""
        if not self.running():
            return False
        self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w")
        return True

    def wait_until_answering(self, creds: settings.Credentials, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            error = ping(creds)
            if error is None:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"server at {creds.describe()} does not answer: {error}")
            time.sleep(0.2)


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port(start: int, tries: int = 100) -> int:
    """The first port from ``start`` on which nothing listens on 127.0.0.1."""
    for port in range(start, start + tries):
        if not _listening(port):
            return port
    raise RuntimeError(f"no free port in {start}..{start + tries - 1}; set V1TWIN_DB_PORT")


def pg_connect(creds: settings.Credentials, **kwargs):
    """A psycopg2 connection to the server's maintenance database ``postgres`` as ``creds``."""
    import psycopg2

    return psycopg2.connect(
        host=creds.host,
        port=creds.port,
        user=creds.user,
        password=creds.password,
        dbname="postgres",
        **kwargs,
    )


def ping(creds: settings.Credentials) -> str | None:
    """None where the server answers a query with these credentials, else the reason."""
    try:
        if creds.backend == "postgresql":
            conn = pg_connect(creds, connect_timeout=3)
        else:
            import pymysql

            conn = pymysql.connect(
                host=creds.host,
                port=creds.port,
                user=creds.user,
                password=creds.password,
                connect_timeout=3,
            )
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.close()
        return None
    except Exception as err:  # noqa: BLE001 - any failure means "does not answer"
        return (
            f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        )
