"""Real servers for the scale-out tests: a PostgreSQL server in a temp data directory on a free
localhost port, started and stopped by the test session (Debian's ``postgresql`` package;
``make test`` installs it where it is missing)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"  # initdb refuses to run as root: a root test run starts the server as this user


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin() -> Path | None:
    """The newest installed server's bin folder (initdb, pg_ctl, createdb), or None."""
    versions = sorted((p for p in PG_ROOT.glob("*/bin") if (p / "initdb").is_file()), key=lambda p: int(p.parent.name))
    if versions:
        return versions[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def missing_reason() -> str | None:
    """Why no server can start here (None: it can)."""
    if postgres_bin() is None:
        return "PostgreSQL is not installed (`make test` installs Debian's postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no '{SERVER_USER}' user to run the server as"
    return None


def _run(command: list[str], log: Path) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        server_log = log.read_text()[-2000:] if log.is_file() else ""
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}{server_log}")


@contextmanager
def postgres_server() -> Iterator[str]:
    """A running server with an empty database ``optuna``; yields its URL
    ``postgresql://trade@127.0.0.1:<port>/optuna`` (trust auth on loopback only)."""
    bindir = postgres_bin()
    assert bindir is not None, missing_reason()
    base = Path(tempfile.mkdtemp(prefix="ta-pg-"))  # under /tmp: the server user can reach it
    as_user: list[str] = []
    if os.geteuid() == 0:
        record = pwd.getpwnam(SERVER_USER)
        os.chown(base, record.pw_uid, record.pw_gid)
        as_user = ["runuser", "-u", SERVER_USER, "--"]
    data, log, port = base / "data", base / "server.log", free_port()
    _run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "trade", "--auth=trust", "--no-sync", "-E", "UTF8"],
        log,
    )
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    _run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start"],
        log,
    )
    try:
        _run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "trade", "optuna"], log)
        yield f"postgresql://trade@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)
