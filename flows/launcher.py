"""`cropsearch`, the console command: flow commands go to a warm host, everything else runs here.

This module imports nothing heavy: a command that a warm host serves costs this process a Python
start-up, a few stat calls and a socket round trip. `cropsearch --no-host ...` (or no Unix-socket
file-descriptor passing on this platform) runs every command in this process, as before.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from components.host.address import HostUnavailable, code_fingerprint, host_address, hosts_folder, private_folder

HOSTED_COMMANDS = frozenset({"index", "query", "eval", "demo"})
# Imports, the Prefect API and the first command's models; a host slower than this is not used.
HOST_START_SECONDS = 180.0


def _package_folders() -> list[Path]:
    import components
    import flows
    import schemas

    return [Path(package.__file__).parent for package in (components, flows, schemas)]  # type: ignore[arg-type]


def _settings_files(environment: Mapping[str, str], working_dir: Path) -> list[Path]:
    """Files Prefect reads its settings from at start-up; a host started before they changed is stale."""
    prefect_home = Path(environment.get("PREFECT_HOME", "~/.prefect")).expanduser()
    profiles = Path(environment.get("PREFECT_PROFILES_PATH", prefect_home / "profiles.toml")).expanduser()
    return [profiles, working_dir / "prefect.toml", working_dir / ".env", working_dir / "pyproject.toml"]


def _hosted(argv: list[str]) -> bool:
    if not argv or argv[0] not in HOSTED_COMMANDS or "-h" in argv or "--help" in argv:
        return False
    return hasattr(socket, "send_fds") and hasattr(socket, "AF_UNIX") and hasattr(socket, "SO_PEERCRED")


def _start_host(folder: Path, key: str, log: Path) -> subprocess.Popen[bytes]:
    with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as output:
        return subprocess.Popen(
            # -P: `-m` would put the working folder first on sys.path; the console script does not.
            [sys.executable, "-P", "-m", "flows.host", str(folder), key],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in this terminal's process group: its Ctrl-C is ours to forward
            close_fds=True,
        )


def run_hosted(argv: list[str]) -> int | None:
    """The command's exit status from a warm host, or None when it must run in this process."""
    from components.host.client import run_on_host

    try:
        folder = private_folder(hosts_folder(os.environ))
    except (HostUnavailable, OSError):
        return None
    working_dir = Path.cwd()
    code = code_fingerprint(_package_folders(), _settings_files(os.environ, working_dir))
    nice = os.getpriority(os.PRIO_PROCESS, 0)  # the host is started from here, so it runs at this nice value
    address = host_address(folder, sys.executable, code, os.environ, working_dir, nice)
    start = lambda: _start_host(folder, address.key, address.log)  # noqa: E731
    return run_on_host(address, argv, os.environ, start, HOST_START_SECONDS)


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] != ["--no-host"] and _hosted(argv):
        status = run_hosted(argv)
        if status is not None:
            sys.exit(status)
    from flows.cli import main as cli

    cli(argv, prog_name="cropsearch")


if __name__ == "__main__":
    main()
