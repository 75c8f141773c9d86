"""The warm host process: `python -m flows.host FOLDER KEY`, started in the background by `cropsearch`.

It imports the flows, starts the one Prefect API its runs report to (a temporary one, as any
`cropsearch` process would, unless PREFECT_API_URL names a server), then serves CLI commands
until it has been idle for `IDLE_SECONDS` (or CROPSEARCH_HOST_IDLE_SECONDS). Models stay loaded
between commands (`load_once`). The Prefect API must be up before the first command: a server
started during one would inherit that caller's terminal and keep its pipes open after the
command ended.

The temporary API listens on 127.0.0.1, where every local user can reach it; a host keeps it for
up to 15 idle minutes, not for one command, so it requires a secret the host makes at start
(Prefect's own server auth string) that only this user's processes can read (`owner_only_api`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import time
import traceback
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from types import FrameType

from components.host.address import IDLE_SECONDS, IDLE_VARIABLE, HostAddress, environment_digest
from components.host.reaper import children_running, start_reaper
from components.host.server import host_lock, serve

# How the temporary Prefect API's process is told from the host's other children.
PREFECT_API_COMMAND = "prefect.server.api.server:create_app"


def run_cli_command(argv: list[str]) -> int:
    """One `cropsearch` command, as its own process would run it; its exit status."""
    from flows.cli import main
    from flows.cli_runs import HOSTED

    try:
        main(argv, prog_name="cropsearch", obj=HOSTED)
    except HostStopping:
        raise
    except SystemExit as ended:
        if isinstance(ended.code, int) or ended.code is None:
            return ended.code or 0
        print(ended.code, file=sys.stderr)  # `sys.exit("message")`, as Python itself would show it
        return 1
    except Exception:
        traceback.print_exc()  # still on the caller's stderr, as their own process would have shown it
        return 1
    return 0


class HostStopping(BaseException):
    """SIGTERM to the host: not a command's exit, so no command catches it as one."""


def owner_only_api(environment: MutableMapping[str, str]) -> bool:
    """Make the temporary Prefect API answer only this user's processes; False when no temporary API is used.

    Prefect's server auth (PREFECT_SERVER_API_AUTH_STRING, checked on every route but the health
    probe) with a fresh secret, and the same secret for the host's own client (PREFECT_API_AUTH_STRING).
    Both live in this process's environment, which the API's process and a command's children
    inherit and which /proc shows to this user alone. A server PREFECT_API_URL names, from the
    environment or a profile, keeps its own rules: its address and settings are the user's.
    """
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled or settings.server.api.auth_string is not None:
        return False
    secret = secrets.token_urlsafe(32)
    environment["PREFECT_SERVER_API_AUTH_STRING"] = secret
    environment["PREFECT_API_AUTH_STRING"] = secret
    refresh_global_settings_context()  # Prefect read its settings when imported, before these were set
    return True


def warm_up() -> None:
    """Import what commands run and start their Prefect API, before any caller's terminal is attached."""
    from flows.cli_runs import quiet_prefect_defaults

    quiet_prefect_defaults()
    owner_only_api(os.environ)
    from prefect.client.orchestration import get_client

    import flows.demo  # noqa: F401  (imports index, query and evaluate too)

    with get_client(sync_client=True) as client:
        client.api_healthcheck()


def stop_superseded_hosts(address: HostAddress, ours: str) -> None:
    """Stop idle hosts that differ from this one only by code or settings files: after an edit nothing reaches them."""
    from components.host.client import ask_host, live_hosts

    for other in live_hosts(address.folder):
        status = ask_host(other, "status") if other.key != address.key else None
        if status is not None and status.get("environment") == ours and not status["busy"]:
            ask_host(other, "stop")


def _stop(signum: int, frame: FrameType | None) -> None:
    raise HostStopping  # ends serve(); the normal exit runs atexit, which stops the temporary Prefect API


def idle_seconds_from(environment: Mapping[str, str]) -> float:
    """How long the host waits for a command before it exits: 15 minutes unless the environment says otherwise."""
    value = environment.get(IDLE_VARIABLE)
    return float(value) if value else IDLE_SECONDS


def main(folder: Path, key: str, idle_seconds: float = IDLE_SECONDS) -> int:
    address = HostAddress(folder, key)
    signal.signal(signal.SIGTERM, _stop)
    with host_lock(address) as held:
        if not held:
            return 0  # another caller started this host first
        # The environment as the caller had it: warm_up adds Prefect defaults to this process's own.
        environment = environment_digest(sys.executable, os.environ, Path.cwd(), os.getpriority(os.PRIO_PROCESS, 0))
        stop_superseded_hosts(address, environment)
        started = time.perf_counter()
        warm_up()
        # A host killed outright cannot stop its temporary Prefect API: the reaper ends it then.
        start_reaper(children_running(os.getpid(), PREFECT_API_COMMAND))
        warm = time.perf_counter() - started
        print(f"host {key} warm in {warm:.1f} s; exits after {idle_seconds:.0f} idle seconds", flush=True)
        with contextlib.suppress(HostStopping):
            serve(address, run_cli_command, idle_seconds, environment)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], idle_seconds_from(os.environ)))
