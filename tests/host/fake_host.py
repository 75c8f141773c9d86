"""A host without Prefect or models: the real `serve` with commands that report how they were run.

`python -m tests.host.fake_host FOLDER KEY IDLE_SECONDS`, started by `tests.host.fake_client` as the
launcher starts the real host: a session of its own, the first caller's environment, nice value,
umask and CPUs. Checks of the socket, the caller's process, exit statuses, signals and the idle
exit then take a second each, not a Prefect start.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from components.host.address import VOLATILE_VARIABLES, HostAddress, environment_digest
from components.host.server import host_lock, serve

# How long a cancelled command takes to unwind: long enough that a caller which did not wait for it
# has exited before it is done.
UNWIND_SECONDS = 1.0


def _affinities() -> dict[str, list[int]]:
    """Each thread's CPUs (Linux keeps them per thread)."""
    return {thread: sorted(os.sched_getaffinity(int(thread))) for thread in os.listdir("/proc/self/task")}


def _report(path: Path) -> int:
    """What a command sees of its process; a thread it starts reports too, as a model's workers would."""
    seen: dict[str, object] = {}
    worker = threading.Thread(target=lambda: seen.update(worker=sorted(os.sched_getaffinity(0))))
    worker.start()
    worker.join()
    made = path.with_suffix(".made")
    made.write_text("made by the command\n")
    report = {
        "umask": os.umask(0o022),
        "made_mode": made.stat().st_mode & 0o777,
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "affinity": sorted(os.sched_getaffinity(0)),
        "threads": _affinities(),
        "worker": seen["worker"],
        "variables": {name: os.environ.get(name) for name in sorted(VOLATILE_VARIABLES)},
        "streams": {name: getattr(sys, name) is None for name in ("stdin", "stdout", "stderr")},
    }
    os.umask(report["umask"])  # type: ignore[arg-type]
    path.write_text(json.dumps(report))
    return 0


def _print(stream_name: str, text: str) -> int:
    """Print as a command does (click.echo): to the stream Python gives it, nothing when there is none."""
    stream = getattr(sys, stream_name)
    if stream is not None:
        print(text, file=stream, flush=True)
    return 0


def _wait(marker: Path) -> int:
    """Run until interrupted, then unwind (slowly) and say so on stderr."""
    marker.touch()
    try:
        while True:
            time.sleep(0.05)
    except KeyboardInterrupt:
        time.sleep(UNWIND_SECONDS)
        print("unwound", file=sys.stderr, flush=True)
        return 130


def run_command(argv: list[str]) -> int:
    match argv:
        case ["report", path]:
            return _report(Path(path))
        case ["print", stream_name, text]:
            return _print(stream_name, text)
        case ["exit", status]:
            return int(status)
        case ["wait", marker]:
            return _wait(Path(marker))
        case ["die"]:
            os._exit(9)  # the host dies mid-command (the OOM killer, a crash in native code)
    print(f"fake host: unknown command {argv}", file=sys.stderr)
    return 2


def main(folder: Path, key: str, idle_seconds: float) -> int:
    address = HostAddress(folder, key)
    with host_lock(address) as held:
        if not held:
            return 0
        environment = environment_digest(sys.executable, os.environ, Path.cwd(), os.getpriority(os.PRIO_PROCESS, 0))
        # A thread from before any command, as torch's pool or Prefect's workers are in the real host.
        threading.Thread(target=lambda: time.sleep(3600), name="warm-pool", daemon=True).start()
        serve(address, run_command, idle_seconds, environment)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])))
