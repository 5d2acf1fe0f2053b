"""Can this host do mDNS on 127.0.0.1 at all? Tests that use real zeroconf on loopback skip, with
the reason, where it cannot (a kernel that does not loop multicast back on `lo`, or another mDNS
stack holding UDP port 5353 without sharing it)."""

from __future__ import annotations

import contextlib
import socket
import struct

import pytest

MDNS_GROUP = "224.0.0.251"


def loopback_multicast_problem() -> str | None:
    """Why mDNS on 127.0.0.1 cannot work here, or None. Sends one datagram to the mDNS group on
    a private port over `lo` (not 5353, so no running responder sees it), and checks that port
    5353 can be shared."""
    try:
        with contextlib.ExitStack() as stack:
            rx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            rx.bind(("", 0))
            port = rx.getsockname()[1]
            group = socket.inet_aton(MDNS_GROUP) + socket.inet_aton("127.0.0.1")
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
            rx.settimeout(2.0)
            tx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, struct.pack("b", 1))
            tx.sendto(b"dn-probe", (MDNS_GROUP, port))
            if rx.recv(64) != b"dn-probe":
                return "a multicast datagram on 127.0.0.1 came back altered"
    except TimeoutError:
        return "multicast on 127.0.0.1 is not looped back to local sockets on this host"
    except OSError as exc:
        return f"multicast on 127.0.0.1 is refused on this host: {exc}"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", 5353))
    except OSError as exc:
        return f"UDP port 5353 is held by another mDNS stack that does not share it: {exc}"
    return None


def skip_without_loopback_multicast() -> None:
    """Skip the calling test (or module, from a module-scoped fixture) where mDNS on loopback
    cannot work."""
    problem = loopback_multicast_problem()
    if problem is not None:
        pytest.skip(f"mDNS on loopback cannot work here: {problem}")
