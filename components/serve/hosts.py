"""Which names a search server answers to: the `Host` header checked against the server's own names.

A web page on another site can point its own name at 127.0.0.1 (DNS rebinding): the browser then
treats the server as that site's and lets its scripts read the answers. The one thing such a
request cannot hide is the name it was sent to, in `Host`, so a server answers only to its own
names: localhost, 127.0.0.1, [::1], the address it is bound to, and those its operator adds.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# What a Host header may be: a DNS name or IPv4 address, or an IPv6 address in brackets; a port after a colon.
_HOST = re.compile(r"(?P<name>[a-z0-9._-]+|\[(?P<ipv6>[0-9a-f:.]+)\])(?::(?P<port>[0-9]{1,5}))?")
_WILDCARDS = frozenset({"0.0.0.0", "::"})


def normalized(name: str) -> str:
    """A name as compared: lower case, an IPv6 address without brackets and in its short form."""
    name = name.strip().lower()
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        return ipaddress.ip_address(bare).compressed
    except ValueError:
        return bare


def host_name(header: str) -> str | None:
    """The name a Host header names (its port dropped), normalized; None when it is no well-formed host."""
    match = _HOST.fullmatch(header.lower())
    if match is None:
        return None
    if match["ipv6"] is not None:
        try:
            return ipaddress.IPv6Address(match["ipv6"]).compressed
        except ValueError:
            return None
    return normalized(match["name"])


class HostCheck:
    """The names one server answers to, from the address it is bound to and the names its operator adds."""

    def __init__(self, bound: str, added: Iterable[str] = ()) -> None:
        bound_name = normalized(bound)
        self.names = LOOPBACK_NAMES | {bound_name} | {normalized(name) for name in added}
        # Bound to every address, it is reached by whichever of the machine's addresses a client uses.
        # An address typed as such cannot be rebound (rebinding needs a name the attacker's DNS answers
        # for), so any IP address is one of the server's own; a name still has to be listed.
        self.any_address = bound_name in _WILDCARDS

    def allows(self, header: str | None) -> bool:
        """Whether a request with this Host header (None: without one) was sent to one of the server's names."""
        if header is None:
            return False
        name = host_name(header)
        if name is None:
            return False
        if name in self.names:
            return True
        return self.any_address and _is_address(name)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
