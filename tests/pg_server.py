"""A real PostgreSQL server for the study-log tests, on a free local port in a temporary folder (never a shared
one). Debian's postgresql (installed by .ci/run) provides initdb and pg_ctl; as root they run as the `postgres`
user, which the server requires. Without them the tests that need it are skipped, with the reason."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def binaries() -> tuple[str, str] | None:
    """initdb and pg_ctl: on the PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = [shutil.which("initdb"), shutil.which("pg_ctl")]
    if all(found):
        return found[0], found[1]  # type: ignore[return-value]
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        initdb, pg_ctl = Path(folder, "initdb"), Path(folder, "pg_ctl")
        if initdb.exists() and pg_ctl.exists():
            return str(initdb), str(pg_ctl)
    return None


def why_not() -> str | None:
    """Why no server can be started here (None: it can)."""
    if binaries() is None:
        return "needs PostgreSQL's initdb and pg_ctl (.ci/run installs Debian's postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no postgres user to run the server as"
    return None


def _run(command: list[str], owner: str | None) -> None:
    prefix = ["runuser", "-u", owner, "--"] if owner else []
    subprocess.run([*prefix, *command], check=True, capture_output=True, text=True, timeout=120)


@contextmanager
def server(tmp: Path) -> Iterator[str]:
    """Start a server; yield the URL of an empty database on it; stop it."""
    initdb, pg_ctl = binaries()  # type: ignore[misc]
    owner = "postgres" if os.geteuid() == 0 else None
    data = tmp / "pgdata"
    data.mkdir(parents=True)
    if owner:
        shutil.chown(tmp, owner)
        shutil.chown(data, owner)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _run([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"], owner)
    _run([pg_ctl, "-D", str(data), "-l", str(tmp / "server.log"), "-w", "-o",
          f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1", "start"], owner)
    try:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as admin:
            admin.execute("CREATE DATABASE study")
        yield f"postgresql://postgres@127.0.0.1:{port}/study"
    finally:
        _run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], owner)
