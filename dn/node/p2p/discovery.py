"""mDNS discovery: find the other DeepNode nodes on the LAN without typing their addresses.

Each node registers one service of type `_deepnode._tcp.local.` and browses for the others. The
TXT record carries what a node needs to decide whether a stranger is worth a handshake:

    g  genesis hash       a  node address      r  roles, comma-joined
    p  API port           v  protocol version

`on_found` hears only about services whose TXT parses, whose genesis hash is ours and whose node
address is not our own; everything else is dropped (logged at debug). Nothing here is trusted: a
found service is only a *candidate*, and `dn.node.p2p.network` adds it as a peer after the signed
handshake (`dn.node.p2p.handshake`). `on_lost(name)` is called when a service we reported goes away
(its goodbye, its records expiring, or an update that no longer qualifies).

Sockets. Each `Discovery` owns its own `AsyncZeroconf`, bound only to the IPv4 addresses in
`interfaces`, which are also the addresses the service advertises. Several instances in one
process (the devnet) or one host (the functional tests) share UDP port 5353 through
SO_REUSEPORT. Multicast reaches every such socket, but a *unicast* datagram to 127.0.0.1:5353
reaches only one of them, chosen by the kernel - so a unicast answer to a "QU" question could
land in the wrong instance. That is why every question here is asked as QM (answer by
multicast). Closing one instance leaves its group membership and sockets alone for the others:
the kernel counts memberships per socket.

Loopback. Tests, the devnet and the demo pass `interfaces=["127.0.0.1"]`. On Linux that works
with no setup and no privileges (5353 is not a privileged port; joining a group needs no
capability). `lo` needs neither the MULTICAST flag nor a 224.0.0.0/4 route: zeroconf sets
IP_MULTICAST_IF to 127.0.0.1 on its sending socket, so the kernel sends on `lo`, and
IP_MULTICAST_LOOP hands the datagram to every local socket that joined 224.0.0.251 on 127.0.0.1.
Checked on Linux 6.18 with a packet counter on `eth0` while the tests ran: nothing left the host.
Sharing 5353 also works across users (checked: root and uid 65534 both bound it and both got the
datagram). It cannot work where another mDNS stack holds port 5353 without SO_REUSEADDR (avahi
with `disallow-other-stacks=yes`); `start()` then raises `NodeError`. Only a user's own
`dn node start` on a real LAN passes real interface addresses.

Record lifetimes: the service's records live 2 minutes (zeroconf refreshes them before they
expire) instead of RFC 6762's 75 minutes for PTR and TXT, so a node that crashed without a
goodbye is reported lost within minutes, not after an hour of failed handshakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zeroconf import (
    DNSQuestionType,
    IPVersion,
    NonUniqueNameException,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from dn import PROTOCOL_VERSION
from dn.encoding import is_address
from dn.errors import InputError, NodeError

log = logging.getLogger("dn.discovery")

SERVICE_TYPE = "_deepnode._tcp.local."
RECORD_TTL = 120  # seconds, for every record of our service (see the module docstring)
RESOLVE_TIMEOUT_MS = 3000
GOODBYE_TIMEOUT_S = 2.0

_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_ROLE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}", re.ASCII)
_DIGITS = re.compile(r"[0-9]{1,10}", re.ASCII)


def mdns_interfaces(enabled: bool, chosen: list[str], host: str) -> list[str] | None:
    """The IPv4 addresses a node announces itself and listens for others on, or None for no
    mDNS: the `chosen` ones (each checked), else the address the node listens on; for a node
    listening on every interface (0.0.0.0) every address of the machine but loopback, and for
    a hostname none (it cannot be told apart from here: name the interfaces)."""
    if not enabled:
        return None
    for value in chosen:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise InputError(f"--mdns-interface wants an IPv4 address, got {value!r}") from None
    if chosen:
        return chosen
    if host in ("0.0.0.0", ""):
        import ifaddr

        return [
            str(ip.ip)
            for adapter in ifaddr.get_adapters()
            for ip in adapter.ips
            if isinstance(ip.ip, str) and not ip.ip.startswith("127.")
        ] or None
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return None
    return [host]


@dataclass(frozen=True)
class Found:
    """A DeepNode service on our genesis, as its mDNS records describe it (not yet verified)."""

    name: str  # the mDNS instance name
    host: str  # an IPv4 address from the record
    port: int
    address: str  # node address from TXT
    genesis_hash: str
    roles: tuple[str, ...]
    protocol: int


def instance_name(address: str, port: int) -> str:
    """`dn-<first 20 characters of the address>-<port>._deepnode._tcp.local.`: unique per node."""
    return f"dn-{address[:20]}-{port}.{SERVICE_TYPE}"


def txt_record(*, address: str, genesis_hash: str, roles: list[str], port: int) -> dict[str, str]:
    """The TXT properties we advertise."""
    return {
        "g": genesis_hash,
        "a": address,
        "r": ",".join(roles),
        "p": str(port),
        "v": str(PROTOCOL_VERSION),
    }


def parse_txt(properties: Mapping[bytes, bytes | None]) -> dict[str, Any] | None:
    """The node fields of a TXT record, or None when any is missing or malformed."""
    text: dict[str, str] = {}
    for key, value in properties.items():
        if value is None:
            continue
        try:
            text[key.decode("ascii")] = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    try:
        genesis, address, roles_text = text["g"], text["a"], text["r"]
        port_text, protocol_text = text["p"], text["v"]
    except KeyError:
        return None
    roles = tuple(roles_text.split(",")) if roles_text else ()
    if not (
        _HEX64.fullmatch(genesis)
        and is_address(address)
        and all(_ROLE.fullmatch(role) for role in roles)
        and _DIGITS.fullmatch(port_text)
        and 1 <= int(port_text) <= 65535
        and _DIGITS.fullmatch(protocol_text)
    ):
        return None
    return {
        "genesis_hash": genesis,
        "address": address,
        "roles": roles,
        "port": int(port_text),
        "protocol": int(protocol_text),
    }


def _check_interfaces(interfaces: list[str]) -> list[str]:
    if not interfaces:
        raise InputError("mDNS needs at least one IPv4 interface address")
    out: list[str] = []
    for text in interfaces:
        try:
            ip = ipaddress.IPv4Address(text)
        except ValueError:
            raise InputError(f"mDNS interfaces are IPv4 addresses, got {text!r}") from None
        if ip.is_unspecified or ip.is_multicast:
            raise InputError(f"cannot advertise {text} over mDNS; name an interface's address")
        if str(ip) not in out:
            out.append(str(ip))
    return out


class Discovery:
    """Advertise this node and report the other nodes on our genesis, over mDNS."""

    def __init__(
        self,
        *,
        address: str,
        genesis_hash: str,
        port: int,
        roles: list[str],
        interfaces: list[str],
        on_found: Callable[[Found], None],
        on_lost: Callable[[str], None],
    ) -> None:
        if not is_address(address):
            raise InputError(f"not a node address: {address!r}")
        if not _HEX64.fullmatch(genesis_hash):
            raise InputError(f"not a genesis hash: {genesis_hash!r}")
        if not 1 <= port <= 65535:
            raise InputError(f"not a TCP port: {port}")
        if not all(_ROLE.fullmatch(role) for role in roles):
            raise InputError(f"roles must be short lowercase names, got {roles!r}")
        self.address = address
        self.genesis_hash = genesis_hash
        self.port = port
        self.roles = list(roles)
        self.interfaces = _check_interfaces(interfaces)
        self.name = instance_name(address, port)
        self.on_found = on_found
        self.on_lost = on_lost
        self.found: dict[str, Found] = {}  # what we reported, by instance name
        self._aiozc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._announce: asyncio.Future[Any] | None = None
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._started = False
        self._closed = False

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Register our service (after mDNS probing for the name) and start browsing."""
        if self._closed:
            raise NodeError("this discovery was closed; make a new one", reason="mdns")
        if self._started:
            return
        self._started = True
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            self.name,
            port=self.port,
            properties=txt_record(
                address=self.address,
                genesis_hash=self.genesis_hash,
                roles=self.roles,
                port=self.port,
            ),
            server=self.name.removesuffix(SERVICE_TYPE) + "local.",
            host_ttl=RECORD_TTL,
            other_ttl=RECORD_TTL,
            parsed_addresses=self.interfaces,
        )
        try:
            self._aiozc = AsyncZeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
            zc = self._aiozc.zeroconf
            await zc.async_wait_for_start()
            if not zc.engine.senders:
                raise NodeError(
                    f"mDNS could not open a socket on {', '.join(self.interfaces)}", reason="mdns"
                )
            self._browser = AsyncServiceBrowser(
                zc, SERVICE_TYPE, handlers=[self._on_change], question_type=DNSQuestionType.QM
            )
            self._announce = asyncio.ensure_future(await self._aiozc.async_register_service(info))
            self._info = info
        except NonUniqueNameException:
            await self.close()
            raise NodeError(
                f"another node already announces {self.name} over mDNS", reason="mdns-name-taken"
            ) from None
        except OSError as exc:
            await self.close()
            raise NodeError(
                f"mDNS cannot start on {', '.join(self.interfaces)}: {exc}", reason="mdns"
            ) from None
        except BaseException:
            await self.close()
            raise
        log.info("mDNS: announcing %s on %s", self.name, ", ".join(self.interfaces))

    async def close(self) -> None:
        """Say goodbye, stop browsing and close the sockets. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        aiozc, self._aiozc = self._aiozc, None
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.async_cancel()
            self._browser = None
        for task in self._resolving.values():
            task.cancel()
        await asyncio.gather(*self._resolving.values(), return_exceptions=True)
        self._resolving.clear()
        if aiozc is None:
            return
        try:
            if self._announce is not None:
                self._announce.cancel()
            if self._info is not None:
                goodbye = await aiozc.async_unregister_service(self._info)
                await asyncio.wait_for(goodbye, GOODBYE_TIMEOUT_S)
        except Exception as exc:  # closing must not fail because the network did
            log.debug("mDNS goodbye for %s failed: %s", self.name, exc)
        finally:
            self._info = None
            await aiozc.async_close()

    # --- browsing --------------------------------------------------------------------------

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        """Called by zeroconf on our loop; resolving awaits, so it runs as a task."""
        if self._closed or name == self.name:
            return
        pending = self._resolving.pop(name, None)
        if pending is not None:
            pending.cancel()  # newer news about this name wins
        if state_change is ServiceStateChange.Removed:
            self._lose(name)
            return
        task = asyncio.ensure_future(self._resolve(zeroconf, name))
        self._resolving[name] = task
        task.add_done_callback(lambda done: self._forget_task(name, done))

    def _forget_task(self, name: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(name) is task:
            del self._resolving[name]

    async def _resolve(self, zc: Zeroconf, name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(zc, RESOLVE_TIMEOUT_MS, question_type=DNSQuestionType.QM):
            log.debug("mDNS: %s did not resolve", name)
            return
        found = self._found_from(name, info)
        if found is None:
            self._lose(name)  # an update that no longer qualifies
            return
        if self.found.get(name) == found:
            return
        self.found[name] = found
        try:
            self.on_found(found)
        except Exception:
            log.exception("mDNS: on_found failed for %s", name)

    def _found_from(self, name: str, info: AsyncServiceInfo) -> Found | None:
        fields = parse_txt(info.properties)
        if fields is None:
            log.debug("mDNS: ignoring %s: malformed TXT %r", name, info.properties)
            return None
        if fields["genesis_hash"] != self.genesis_hash:
            log.debug("mDNS: ignoring %s: another genesis", name)
            return None
        if fields["address"] == self.address:
            log.debug("mDNS: ignoring %s: our own address", name)
            return None
        hosts = info.parsed_addresses(IPVersion.V4Only)
        if not hosts:
            log.debug("mDNS: ignoring %s: no IPv4 address", name)
            return None
        if info.port != fields["port"]:
            log.debug(
                "mDNS: ignoring %s: SRV port %s, TXT port %s", name, info.port, fields["port"]
            )
            return None
        return Found(name=name, host=hosts[0], **fields)

    def _lose(self, name: str) -> None:
        if self.found.pop(name, None) is None:
            return
        try:
            self.on_lost(name)
        except Exception:
            log.exception("mDNS: on_lost failed for %s", name)
