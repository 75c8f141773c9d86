"""`python -m tests.host.fake_client FOLDER KEY IDLE_SECONDS ARGV...`: the launcher's part, for the fake host.

It exits with the command's status, or `NOT_HOSTED` when no host ran the command (the launcher
would then run it itself).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from components.host.address import HostAddress
from components.host.client import run_on_host

NOT_HOSTED = 99


def main(folder: Path, key: str, idle: str, argv: list[str]) -> int:
    address = HostAddress(folder, key)

    def start() -> subprocess.Popen[bytes]:
        with open(os.open(address.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "tests.host.fake_host", str(folder), key, idle],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )

    status = run_on_host(address, argv, os.environ, start, 30.0)
    return NOT_HOSTED if status is None else status


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]))
