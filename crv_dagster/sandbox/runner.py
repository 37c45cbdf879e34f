"""Running an untrusted program: one child process per run, fenced in by the kernel.

Every run gets a fresh directory, an empty environment, stdin from the caller, capped stdout and
stderr, resource limits (CPU time, address space, file size, open files, processes) and a
wall-clock timeout that kills everything it started. Where bubblewrap can be used (``bwrap`` on
PATH, run as root), the program also runs in its own namespaces:

- no network (a new network namespace with only a down loopback);
- its own process tree (a PID namespace: it sees and can signal only its own processes, and all
  of them die with the sandbox);
- a read-only view of the filesystem, writable only in ``/tmp``, a fresh size-limited tmpfs that
  holds its working directory;
- an unprivileged uid of its own per concurrent slot, so the process limit is enforced (the kernel
  does not apply ``RLIMIT_NPROC`` to root) and concurrent runs do not share it.

Without bubblewrap (``isolation="limits"``) only the limits, the empty environment, the fresh
directory, the process-group kill and (as root) the uid of its own apply: the program can read
what that uid may read, write where it may write (world-writable places such as ``/tmp``), see
and signal other processes of its uid, and reach the network. ``isolation="auto"`` picks bubblewrap when it works and
says so in every result.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

Isolation = Literal["auto", "namespaces", "limits"]
# What became of a run: it exited 0, exited non-zero (an exception), was killed by a signal, or ran
# past its CPU or wall-clock limit.
RunStatus = Literal["ok", "runtime_error", "crash", "timeout"]

SANDBOX_DIR = "/tmp/sandbox"  # inside the sandbox: on its own size-limited tmpfs, /tmp
FIRST_UID = 61000  # slot k runs as uid FIRST_UID + k: unprivileged, and its own process count
STDERR_TAIL = 2000


@dataclass(frozen=True)
class Limits:
    """Per run. ``processes`` counts every process and thread of the run's uid."""

    cpu_seconds: int = 10
    wall_seconds: float = 20.0
    memory_mb: int = 1024
    file_size_mb: int = 16
    open_files: int = 64
    processes: int = 32
    disk_mb: int = 64
    output_bytes: int = 1 << 20


@dataclass(frozen=True)
class RunResult:
    status: RunStatus
    returncode: int | None
    stdout: str
    stderr_tail: str
    wall_s: float
    isolation: str
    output_truncated: bool = False

    @property
    def detail(self) -> str:
        if self.status == "timeout":
            return "ran past its time limit"
        if self.status == "crash":
            name = _signal_name(-self.returncode) if self.returncode is not None else "?"
            return f"killed by {name}" + (f": {self.stderr_tail.strip().splitlines()[-1]}" if self.stderr_tail.strip() else "")
        if self.status == "runtime_error":
            lines = self.stderr_tail.strip().splitlines()
            return lines[-1] if lines else f"exit code {self.returncode}"
        return ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _can_drop_privileges() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


@lru_cache(maxsize=1)
def namespaces_available() -> bool:
    """Whether bubblewrap can run a program here in its own namespaces (needs root for the uid drop)."""
    if shutil.which("bwrap") is None or shutil.which("setpriv") is None or os.geteuid() != 0:
        return False
    try:
        probe = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "--", "true"],
                               capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


class Sandbox:
    """Runs programs under ``limits``, at most ``concurrency`` at a time (see ``run_many``)."""

    def __init__(self, limits: Limits = Limits(), isolation: Isolation = "auto", concurrency: int = 4,
                 python: str | None = None):
        if isolation == "auto":
            isolation = "namespaces" if namespaces_available() else "limits"
        elif isolation == "namespaces" and not namespaces_available():
            raise RuntimeError("namespace isolation needs bubblewrap (`apt-get install bubblewrap`), setpriv and "
                               "root; isolation='limits' runs with resource limits only")
        self.limits = limits
        self.isolation = isolation
        self.concurrency = max(1, concurrency)
        self.python = python or sys.executable
        self._slots = list(range(self.concurrency))
        self._slot_lock = threading.Condition()

    # -- one run ---------------------------------------------------------------

    def run(self, files: dict[str, str], argv: list[str], stdin: str = "") -> RunResult:
        """Runs ``argv`` (``python`` as its first word means this interpreter) in a fresh directory
        holding ``files`` (name -> text)."""
        slot = self._take_slot()
        try:
            with tempfile.TemporaryDirectory(prefix="crv-sandbox-") as scratch:
                source = Path(scratch) / "files"
                source.mkdir()
                for name, text in files.items():
                    (source / name).write_text(text)
                return self._run(source, argv, stdin, slot)
        finally:
            self._give_slot(slot)

    def run_python(self, program: str, stdin: str = "", extra_files: dict[str, str] | None = None,
                   entry: str = "program.py") -> RunResult:
        return self.run({entry: program, **(extra_files or {})}, ["python", entry], stdin)

    def _command(self, source: Path, argv: list[str], uid: int) -> tuple[list[str], str]:
        lim = self.limits
        python = os.path.realpath(self.python)
        argv = [python if a == "python" else a for a in argv]
        # -I: isolated mode (no user site, no PYTHON* variables, no script dir on sys.path beyond
        # its own); -B: no bytecode files.
        if argv and argv[0] == python:
            argv = [python, "-I", "-B", *argv[1:]]
        # Soft CPU limit first (SIGXCPU: reported as a timeout), the hard one a second later.
        rlimits = ["prlimit", f"--cpu={lim.cpu_seconds}:{lim.cpu_seconds + 1}", f"--as={lim.memory_mb << 20}",
                   f"--fsize={lim.file_size_mb << 20}", f"--nofile={lim.open_files}",
                   f"--nproc={lim.processes}", "--core=0", "--"]
        drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
                "--inh-caps=-all", "--bounding-set=-all"]
        if self.isolation == "limits":
            if not _can_drop_privileges():
                return [*rlimits, *argv], str(source)
            os.chmod(source.parent, 0o711)  # the run's uid must reach its directory, and only that
            os.chown(source, uid, uid)
            return [*rlimits, *drop, *argv], str(source)
        mounts = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                  "--size", str(lim.disk_mb << 20), "--tmpfs", "/tmp", "--dir", SANDBOX_DIR]
        for item in source.iterdir():
            mounts += ["--ro-bind", str(item), f"{SANDBOX_DIR}/{item.name}"]
        namespaces = ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                      "--die-with-parent", "--new-session", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
                      "--setenv", "HOME", SANDBOX_DIR, "--chdir", SANDBOX_DIR]
        # The tmpfs mounts belong to root: make the working directory the run's own before dropping.
        inner = " ".join([f"chown {uid}:{uid} {SANDBOX_DIR} /tmp && exec",
                          *(shlex.quote(a) for a in [*rlimits, *drop, *argv])])
        return ["bwrap", *mounts, *namespaces, "--", "/bin/sh", "-c", inner], "/"

    def _run(self, source: Path, argv: list[str], stdin: str, slot: int) -> RunResult:
        lim = self.limits
        command, cwd = self._command(source, argv, FIRST_UID + slot)
        env = {"PATH": "/usr/bin:/bin"} if self.isolation == "limits" else {}
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        out, err = _CappedReader(proc.stdout, lim.output_bytes), _CappedReader(proc.stderr, lim.output_bytes)
        feeder = threading.Thread(target=_feed, args=(proc.stdin, stdin.encode()), daemon=True)
        feeder.start()
        timed_out = False
        try:
            proc.wait(timeout=lim.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc)  # whatever the program left running (the namespace's init takes the rest)
            proc.wait()
        wall = time.perf_counter() - started
        out.join(), err.join()
        code = proc.returncode
        stderr = err.text()
        if timed_out or code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            status: RunStatus = "timeout"
        elif code is not None and (code < 0 or code > 128 and self.isolation == "namespaces"):
            status = "crash"
            code = -(code - 128) if code > 128 else code
        elif code != 0:
            status = "runtime_error"
        else:
            status = "ok"
        return RunResult(status, code, out.text(), stderr[-STDERR_TAIL:], wall, self.isolation,
                         out.truncated or err.truncated)

    # -- slots -----------------------------------------------------------------

    def _take_slot(self) -> int:
        with self._slot_lock:
            while not self._slots:
                self._slot_lock.wait()
            return self._slots.pop()

    def _give_slot(self, slot: int) -> None:
        with self._slot_lock:
            self._slots.append(slot)
            self._slot_lock.notify()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except (BrokenPipeError, OSError):  # the program exited without reading all of it
        pass


class _CappedReader:
    """Reads a pipe to its end on a thread, keeping at most ``cap`` bytes (so a chatty program can
    neither fill memory nor block on a full pipe)."""

    def __init__(self, pipe, cap: int):
        self.pipe, self.cap = pipe, cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while chunk := self.pipe.read1(65536):
            room = self.cap - self.size
            if room > 0:
                self.chunks.append(chunk[:room])
                self.size += min(len(chunk), room)
            if len(chunk) > max(room, 0):
                self.truncated = True
        self.pipe.close()

    def join(self) -> None:
        self.thread.join()

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")
