"""The local PostgreSQL server: starts, answers (with a password, on loopback only), stops."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from schemas import connection
from v1twin.server import LocalServer, find_binaries, has_lz4, ping


@pytest.fixture
def private_server(monkeypatch):
    """A server of its own (own state directory and port), stopped and removed afterwards.

    Its home is under /tmp, not pytest's tmp_path: as root the server runs as the 'postgres'
    account, which cannot enter pytest's private (0700) folders.
    """
    home = Path(tempfile.mkdtemp(prefix="v1twin-test-"))
    home.chmod(0o755)
    monkeypatch.setenv("V1TWIN_HOME", str(home))
    monkeypatch.setenv("V1TWIN_DB_PORT", str(_free_port()))
    server = LocalServer.default()
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_starts_answers_and_stops(private_server):
    creds = private_server.start()
    assert private_server.running()
    assert ping(creds) is None
    assert private_server.start() == creds  # idempotent: same server, same password
    assert private_server.stop() is True
    assert not private_server.running()
    assert ping(creds) is not None
    assert private_server.stop() is False


def test_server_moves_off_a_port_taken_while_it_was_down(private_server, capsys):
    """Another program (another checkout's server) took the stored port while this server was
    stopped: start moves to the next free port, saves it, and the server answers there."""
    creds = private_server.start()
    private_server.stop()
    with socket.socket() as squatter:
        # the stopped server's closed connections may leave the port in TIME_WAIT; a listener
        # still on it would refuse the bind all the same
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", creds.port))
        squatter.listen()
        moved = private_server.start()
        assert moved.port != creds.port and moved.password == creds.password
        assert connection.local_credentials() == moved
        assert ping(moved) is None
    assert f"port {creds.port} is taken" in capsys.readouterr().err


def test_password_is_required_and_kept_private(private_server):
    creds = private_server.start()
    mode = stat.S_IMODE(connection.credentials_file().stat().st_mode)
    assert mode == 0o600
    wrong = connection.Credentials(creds.host, creds.port, creds.user, "not-the-password")
    assert "authentication failed" in ping(wrong)
    assert creds.password not in creds.describe()
    hba = (private_server.data_dir / "pg_hba.conf").read_text().split("\n")
    rules = [line for line in hba if line.strip() and not line.startswith("#")]
    assert rules and all(line.split()[-1] == "scram-sha-256" for line in rules)


def test_server_listens_on_loopback_only(private_server):
    creds = private_server.start()
    addresses = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    outside = sorted(a for a in addresses if not a.startswith("127."))
    for address in outside:
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex((address, creds.port)) != 0, f"server answers on {address}"
    conf = (private_server.data_dir / "postmaster.opts").read_text()
    assert "listen_addresses=127.0.0.1" in conf


def test_external_server_from_environment(monkeypatch):
    monkeypatch.setenv("DJ_HOST", "db.lab.example")
    monkeypatch.setenv("DJ_USER", "alice")
    monkeypatch.setenv("DJ_PASS", "s3cret")
    monkeypatch.setenv("DJ_BACKEND", "mysql")
    creds = connection.credentials()
    assert (creds.host, creds.port, creds.user, creds.backend) == (
        "db.lab.example",
        3306,
        "alice",
        "mysql",
    )
    assert "s3cret" not in creds.describe()
    monkeypatch.delenv("DJ_PASS")
    with pytest.raises(ValueError, match="DJ_PASS"):
        connection.external_credentials()


def test_credentials_file_readable_by_others_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("V1TWIN_HOME", str(tmp_path))
    path = connection.save_local_credentials(connection.Credentials("127.0.0.1", 1, "u", "p"))
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        connection.local_credentials()


def test_unreachable_home_is_named(tmp_path, monkeypatch):
    import os

    if os.geteuid() != 0:
        pytest.skip("only root hands the server to the postgres account")
    tmp_path.chmod(0o700)
    monkeypatch.setenv("V1TWIN_HOME", str(tmp_path / "home"))
    with pytest.raises(PermissionError, match=str(tmp_path)):
        LocalServer.default().init()


def test_closed_checkout_keeps_its_database_in_the_temp_folder(tmp_path, monkeypatch):
    """Without V1TWIN_HOME, a checkout the postgres account cannot enter (a clone in a 0700 temp
    folder) gets a data folder of its own under the system temp folder, reachable and stable."""
    import os

    if os.geteuid() != 0:
        pytest.skip("only root hands the server to the postgres account")
    tmp_path.chmod(0o700)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    monkeypatch.delenv("V1TWIN_HOME", raising=False)
    roots = []
    for name in ("a", "b", "a"):
        monkeypatch.chdir(tmp_path / name)
        roots.append(LocalServer.default().root)
    assert roots[0].parent == Path(tempfile.gettempdir()) and roots[0] == roots[2] != roots[1]
    # a home the user chose is kept (and, when closed, named in an error: the test above)
    monkeypatch.setenv("V1TWIN_HOME", str(tmp_path / "home"))
    assert LocalServer.default().root == tmp_path / "home" / "db"


@pytest.mark.skipif(
    importlib.util.find_spec("pgserver") is None, reason="the pgserver wheel is not installed"
)
def test_server_starts_on_the_pgserver_wheels_binaries(private_server, monkeypatch):
    """pgserver's PostgreSQL is built without lz4, so the lz4 TOAST option must be left out."""
    bin_dir = Path(importlib.util.find_spec("pgserver").origin).parent / "pginstall" / "bin"
    monkeypatch.setenv("V1TWIN_PG_BIN", str(bin_dir))
    assert find_binaries() == bin_dir and not has_lz4(bin_dir)
    creds = private_server.start()
    assert ping(creds) is None


def test_lz4_is_detected_in_debians_server():
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_config"))
    if not debian:
        pytest.skip("no Debian PostgreSQL")
    assert has_lz4(debian[-1].parent)
    assert not has_lz4(Path(tempfile.gettempdir()))  # no pg_config there: no lz4
