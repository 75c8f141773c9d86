"""Ending the host's helper processes with it: `python -m components.host.reaper HOST_PID PID [PID ...]`.

The host starts a temporary Prefect API as a child process and stops it when it exits. A host
killed outright (SIGKILL, the OOM killer) runs no exit code, and its API would run on, orphaned,
for good. The host therefore starts this watcher beside it: a plain Python process, with nothing
imported, that waits for its parent (the host) to go and then ends the processes it was given.
It exits as soon as those processes are gone on their own (the host stopped them itself).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

POLL_SECONDS = 0.5
# How long a process has to stop after SIGTERM before it is killed.
TERMINATE_GRACE_SECONDS = 5.0


def start_reaper(pids: Sequence[int]) -> subprocess.Popen[bytes] | None:
    """Watch this process and end `pids` when it dies without stopping them (None: nothing to watch)."""
    if not pids:
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "components.host.reaper", str(os.getpid()), *map(str, pids)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
        close_fds=True,
    )


def children_running(parent: int, command_part: str) -> list[int]:
    """The live child processes of `parent` whose command line contains `command_part` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name in field 2 may hold spaces and parentheses: fields after the last ")" are fixed.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and fields[0] != "Z" and command_part in _command_line(int(entry.name)):
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # exited while being read
    return found


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def watch(host: int, pids: Sequence[int], poll_seconds: float = POLL_SECONDS) -> None:
    """Wait while `host` is this process's parent; once it is not, end whichever of `pids` still run.

    Each process is known by its command line as first read: a pid reused by another program after
    its process ended is left alone.
    """
    command_of = {pid: line for pid in pids if (line := _command_line(pid))}

    def still_running() -> list[int]:
        return [pid for pid, line in command_of.items() if _command_line(pid) == line]

    while os.getppid() == host:
        if not still_running():
            return  # the host stopped them itself
        time.sleep(poll_seconds)
    _signal_all(still_running(), signal.SIGTERM)
    deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
    while time.monotonic() < deadline and still_running():
        time.sleep(0.1)
    _signal_all(still_running(), signal.SIGKILL)


def _signal_all(pids: Sequence[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


if __name__ == "__main__":
    watch(int(sys.argv[1]), [int(pid) for pid in sys.argv[2:]])
