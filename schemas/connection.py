"""Where v1twin keeps its state and how it reaches its database.

Two ways to reach a database, in this order:

1. **A lab's shared server**: set ``DJ_HOST``, ``DJ_USER``, ``DJ_PASS`` (and ``DJ_BACKEND``:
   ``postgresql`` or ``mysql``; ``DJ_PORT`` if not the default). v1twin then starts nothing.
2. **The local server** that ``v1twin db start`` runs: its credentials live in
   ``$V1TWIN_HOME/credentials.json`` (mode 0600), written when the server is first created.

``V1TWIN_HOME`` defaults to ``./.v1twin`` (git-ignored). Schema names take the prefix
``V1TWIN_SCHEMA_PREFIX`` (default ``v1twin``), so tests run in schemas of their own.
Credentials are never printed or logged: :func:`describe` masks the password.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PREFIX = "v1twin"
DEFAULT_PORT = 55432


def home() -> Path:
    """The state directory (local database, credentials), created on demand."""
    path = Path(os.environ.get("V1TWIN_HOME", ".v1twin")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def schema_prefix() -> str:
    """Prefix of every schema name, e.g. ``v1twin`` -> ``v1twin_recording``."""
    prefix = os.environ.get("V1TWIN_SCHEMA_PREFIX", DEFAULT_PREFIX)
    if not prefix.replace("_", "").isalnum() or not prefix[0].isalpha():
        raise ValueError(f"V1TWIN_SCHEMA_PREFIX={prefix!r}: use letters, digits and '_' only")
    return prefix.lower()


@dataclass(frozen=True)
class Credentials:
    """How to reach one database server."""

    host: str
    port: int
    user: str
    password: str
    backend: str = "postgresql"
    use_tls: bool | None = None  # None: try TLS, fall back; the local server has none

    def describe(self) -> str:
        """One line for logs and ``db status``: never includes the password."""
        return f"{self.backend}://{self.user}@{self.host}:{self.port}"


def credentials_file() -> Path:
    return home() / "credentials.json"


def external_credentials() -> Credentials | None:
    """The lab's server from ``DJ_*`` environment variables, or None where DJ_HOST is unset."""
    host = os.environ.get("DJ_HOST")
    if not host:
        return None
    backend = os.environ.get("DJ_BACKEND", "postgresql")
    if backend not in ("postgresql", "mysql"):
        raise ValueError(f"DJ_BACKEND={backend!r}: expected 'postgresql' or 'mysql'")
    missing = [v for v in ("DJ_USER", "DJ_PASS") if v not in os.environ]
    if missing:
        raise ValueError(f"DJ_HOST is set but {', '.join(missing)} is not")
    default_port = 5432 if backend == "postgresql" else 3306
    return Credentials(
        host=host,
        port=int(os.environ.get("DJ_PORT", default_port)),
        user=os.environ["DJ_USER"],
        password=os.environ["DJ_PASS"],
        backend=backend,
    )


def save_local_credentials(creds: Credentials) -> Path:
    """Write the local server's credentials to a file only its owner can read (0600)."""
    path = credentials_file()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds.__dict__, f)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return path


def local_credentials() -> Credentials | None:
    """The local server's credentials, or None before ``v1twin db start`` created it."""
    path = credentials_file()
    if not path.exists():
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(
            f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
        )
    return Credentials(**json.loads(path.read_text()))


def credentials() -> Credentials:
    """The server to use: the lab's (``DJ_*``) if set, else the local one."""
    creds = external_credentials() or local_credentials()
    if creds is None:
        raise RuntimeError(
            "No database configured: run `v1twin db start`, or set DJ_HOST/DJ_USER/DJ_PASS"
        )
    return creds


def connect(creds: Credentials | None = None):
    """Point DataJoint at the server and return its connection (credentials stay in memory)."""
    import datajoint as dj

    creds = creds or credentials()
    dj.config["database.backend"] = creds.backend
    dj.config["database.host"] = creds.host
    dj.config["database.port"] = creds.port
    dj.config["database.user"] = creds.user
    dj.config["database.password"] = creds.password
    dj.config["database.use_tls"] = creds.use_tls
    dj.config["loglevel"] = "WARNING"
    dj.config["jobs.keep_completed"] = (
        True  # provenance: which host/pid computed each key, how long
    )
    return dj.conn(reset=True)


@contextlib.contextmanager
def exclusive(name: str = "v1twin declarations", timeout_s: int = 600):
    """Hold a server-wide named lock: one holder at a time across every process and host.

    Declaring schemas and tables is not safe to run concurrently (PostgreSQL: two
    ``CREATE TABLE`` of the same name fail with a duplicate ``pg_type`` key), so workers started
    together take turns through their start-up. PostgreSQL advisory lock or MySQL ``GET_LOCK``;
    held by this connection's session and released on exit (or when the session ends).
    """
    import datajoint as dj

    conn = dj.conn()
    if dj.config["database.backend"] == "mysql":
        acquired = conn.query("SELECT GET_LOCK(%s, %s)", args=(name, timeout_s)).fetchone()[0]
        if acquired != 1:
            raise TimeoutError(f"lock {name!r} not acquired within {timeout_s} s")
        release = ("SELECT RELEASE_LOCK(%s)", (name,))
    else:
        key = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)
        conn.query(f"SET lock_timeout = '{int(timeout_s)}s'")
        conn.query("SELECT pg_advisory_lock(%s)", args=(key,))
        conn.query("SET lock_timeout = 0")
        release = ("SELECT pg_advisory_unlock(%s)", (key,))
    try:
        yield
    finally:
        conn.query(release[0], args=release[1])
