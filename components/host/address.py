"""Where a warm host listens, and which host may serve a command.

A host serves only commands that would behave exactly as a fresh process would: same Python, same
cropsearch code, same installed packages, same environment, same working directory, same nice
value. All of that goes into the host's key, so editing the code, installing a package or
exporting a variable starts a new host instead of reusing a stale one. (The nice value is in the
key, not applied per command, because an unprivileged process can raise its own but never lower
it again; the umask and CPU affinity a host can take on and give back, so it does, per command.)
The folder holding the sockets is the user's alone (0700, checked), and the host checks each
caller's uid as well.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from components.errors import CropsearchError

# Variables a shell or terminal sets per window or per command: left out of the key, so a new
# terminal reuses the host, and put into the host's environment per command instead (server.py).
# A warm host exits after this many idle seconds, or the environment's CROPSEARCH_HOST_IDLE_SECONDS (tests).
IDLE_SECONDS = 15 * 60
IDLE_VARIABLE = "CROPSEARCH_HOST_IDLE_SECONDS"

VOLATILE_VARIABLES = frozenset(
    {"_", "PWD", "OLDPWD", "SHLVL", "COLUMNS", "LINES", "TERM_SESSION_ID", "WINDOWID", "SSH_TTY", "SSH_CLIENT"}
    | {"SSH_CONNECTION", "TMUX_PANE", "STY", "WINDOW", "PS1", "PROMPT_COMMAND", "HISTFILE"}
)


class HostUnavailable(CropsearchError):
    """No warm host can be used here; the command runs in its own process instead."""


@dataclass(frozen=True)
class HostAddress:
    """A host's files: its socket, the lock only a live host holds, and its log."""

    folder: Path
    key: str

    @property
    def socket(self) -> Path:
        return self.folder / f"{self.key}.sock"

    @property
    def lock(self) -> Path:
        return self.folder / f"{self.key}.lock"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.key}.log"


def hosts_folder(environment: Mapping[str, str]) -> Path:
    """The user's folder for host sockets: under XDG_RUNTIME_DIR (a per-user tmpfs) when set, else ~/.cache."""
    runtime = environment.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "cropsearch"
    return Path(environment.get("HOME", "~")).expanduser() / ".cache" / "cropsearch" / "hosts"


def private_folder(folder: Path) -> Path:
    """Make `folder` (mode 0700) or check an existing one is this user's alone: nobody else may reach a host."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = folder.lstat()
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise HostUnavailable(f"{folder} must be a folder only this user can open (mode 0700) to hold host sockets")
    return folder


def code_fingerprint(package_folders: Iterable[Path], settings_files: Iterable[Path] = ()) -> str:
    """Names, sizes and mtimes of every cropsearch source file, of settings files, and of the installed packages.

    Stat calls only (a few ms): the key must be cheap, since every `cropsearch` process computes it.
    The mtime is what notices an edit that keeps a file's size (a fixed typo, a flipped flag).
    Installing, upgrading or removing a package changes the site-packages folder's mtime. Settings
    files are those a library reads at start-up (Prefect's profiles, where `stack up` saves its API).
    """
    digest = hashlib.sha256()
    files = [path for folder in package_folders for path in sorted(folder.rglob("*.py"))]
    for path in [*files, *settings_files]:
        try:
            status = path.stat()
        except FileNotFoundError:
            digest.update(f"{path}\0absent\n".encode())
            continue
        digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    for name in ("purelib", "platlib"):
        site = Path(sysconfig.get_paths()[name])
        if site.exists():
            digest.update(f"{site}\0{site.stat().st_mtime_ns}\n".encode())
    return digest.hexdigest()


def environment_digest(python: str, environment: Mapping[str, str], working_dir: Path, nice: int) -> str:
    """Everything a host's key covers except the code: hosts that share it differ only by an edit or an install.

    The nice value is here because a host is started by its first caller and inherits its nice
    value, so each caller is led to a host that already runs at its own priority.
    """
    digest = hashlib.sha256()
    digest.update(f"{python}\0{working_dir.resolve()}\0nice={nice}\n".encode())
    for name in sorted(set(environment) - VOLATILE_VARIABLES):
        digest.update(f"{name}={environment[name]}\0".encode())
    return digest.hexdigest()


def host_address(
    folder: Path, python: str, code: str, environment: Mapping[str, str], working_dir: Path, nice: int
) -> HostAddress:
    """The address of the host that may serve a command from this Python, code, environment, folder and nice value."""
    key = hashlib.sha256(f"{code}\0{environment_digest(python, environment, working_dir, nice)}".encode()).hexdigest()
    # 16 hex digits keep the socket's path well under the 108 bytes a Unix socket allows.
    return HostAddress(folder, key[:16])
