"""Runs a server command so that stopping it stops every process it started.

    python -m crv_dagster.supervise [--grace S] -- mlflow ui ...

`mlflow ui` runs uvicorn, its workers and a job runner. Ctrl-C in a terminal reaches all of them at
once: uvicorn, signalled twice (by the terminal and by mlflow, which forwards it), quits without
waiting for its workers, and `make` returns while they still run. Here the command runs in a
session of its own, so that only this process sees the terminal's signals; it asks the command's
whole process group to stop (SIGTERM), waits ``--grace`` seconds, kills what is left, and returns
only when the group is gone. The same happens when the command ends by itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM to the process group of ``proc`` (its leader), then SIGKILL after ``grace_s``."""
    pgid = proc.pid
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if not _group_alive(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, else its zombie keeps the group alive
            if not _group_alive(pgid):
                return
            time.sleep(0.1)
    proc.poll()


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop(signum)


def run(command: list[str], grace_s: float = 10.0) -> int:
    proc = subprocess.Popen(command, start_new_session=True)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    code = 130
    try:
        code = proc.wait()
    except _Stop:
        pass
    finally:
        # Not interruptible by a second Ctrl-C: the group is stopped in full either way.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stop_group(proc, grace_s)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grace", type=float, default=10.0, help="seconds the group gets to stop before SIGKILL")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    return run(command, args.grace)


if __name__ == "__main__":
    sys.exit(main())
