"""The outbound policy: which addresses the platform may connect to when it calls a model's URL.

One module for the whole rule, used by the server's connection test and by the OpenCompass process
(oc_ext.SecretKeyOpenAISDK, oc_ext.DifyChatModel, the async request pool of oc_pool.py), so what a
connection test may reach and what an evaluation may reach can never differ.

The decision is made on addresses, not names: a host name is resolved (getaddrinfo) and EVERY address
it resolves to must be allowed. Categories, checked in this order:
- never allowed, whatever the configuration: link-local (169.254.0.0/16, fe80::/10, where cloud
  metadata services answer), known metadata addresses outside that range (AWS fd00:ec2::254, Alibaba
  100.100.100.200, Azure 168.63.129.16), unspecified (0.0.0.0 and :: reach this machine), multicast,
  reserved and broadcast addresses;
- loopback (127.0.0.0/8, ::1): allowed when `allow_loopback` or listed in `allow_networks`;
- every other non-public address (10/8, 172.16/12, 192.168/16, 100.64/10 carrier-grade NAT, fc00::/7,
  documentation and benchmark ranges...): allowed when `allow_private` or listed in `allow_networks`;
- public addresses: allowed.
IPv6 addresses that embed an IPv4 one (::ffff:a.b.c.d, 64:ff9b::/96, 6to4) are judged on both.

Enforcement happens when connecting: `GuardedTransport` is an httpx transport whose network backend
resolves the host, checks every address and then connects to one of the checked addresses itself, so a
name cannot resolve to an allowed address for the check and to another one for the connection (DNS
rebinding). Every connection goes through it, including each hop of a redirect. URLs with user info
(`http://localhost@169.254.169.254/`) are refused outright: they only serve to make a URL look like it
goes somewhere else.

The policy reaches the OpenCompass process as JSON in the environment variable AIEVAL_OUTBOUND_POLICY.
Without that variable (the `aieval` CLI run by the person who owns the machine) the policy is
`OutboundPolicy()`: loopback and private networks allowed, the never-allowed addresses refused.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpcore
import httpx

POLICY_ENV = "AIEVAL_OUTBOUND_POLICY"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

# Cloud metadata and platform services that are not in the link-local range.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's own defaults
_CA_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR")  # what httpx.create_ssl_context reads from the environment
_ssl_contexts: dict[tuple[str | None, ...], ssl.SSLContext] = {}
_ssl_contexts_lock = threading.Lock()
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NOT_LISTED = "{} address, which this policy allows only for the networks it lists (see docs/SECURITY.md)"


class OutboundPolicyError(Exception):
    """A URL or an address the outbound policy does not allow; the message says which and why."""


def _refused(reason: str) -> OutboundPolicyError:
    return OutboundPolicyError(f"refused by the outbound policy: {reason}")


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (TCP), in its order of preference."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host denotes without any DNS: IPv4/IPv6 literals and the legacy IPv4 forms the
    C library also accepts (2852039166, 0xa9.0xfe.0xa9.0xfe, 169.254.43518); None for a name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not host or not all(part for part in host.split(".")) or not host.replace(".", "").isalnum():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _reached(address: IPAddress) -> list[IPAddress]:
    """The address itself and the IPv4 address an IPv6 one embeds (a connection to ::ffff:127.0.0.1 or to
    NAT64 64:ff9b::7f00:1 reaches 127.0.0.1): a policy judges all of them."""
    if not isinstance(address, ipaddress.IPv6Address):
        return [address]
    embedded = [address.ipv4_mapped, address.sixtofour]
    if address in _NAT64:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [address, *(a for a in embedded if a is not None)]


def never_allowed(address: IPAddress) -> str | None:
    """Why an address is refused under every policy, or None."""
    for reached in _reached(address):
        if reached.is_link_local:
            return "a link-local address (where cloud metadata services answer), never allowed"
        if reached in METADATA_ADDRESSES:
            return "a cloud metadata address, never allowed"
        if reached.is_unspecified:
            return "the unspecified address (it reaches this machine), never allowed"
        if reached.is_multicast:
            return "a multicast address, never allowed"
        # IPv6's "reserved" ::/8 holds ::1 and the IPv4-mapped addresses, judged above through _reached.
        if isinstance(reached, ipaddress.IPv4Address) and reached.is_reserved:
            return "a reserved or broadcast address, never allowed"
    return None


@dataclass(frozen=True)
class OutboundPolicy:
    """Which loopback and private addresses may be reached (public ones always may, never-allowed ones
    never). `resolver` is how host names become addresses; tests inject their own."""

    allow_loopback: bool = True
    allow_private: bool = True
    allow_networks: tuple[IPNetwork, ...] = ()
    resolver: Resolver = field(default=system_resolver, compare=False, repr=False)

    @classmethod
    def build(cls, *, allow_loopback: bool, allow_private: bool, allow_networks: Iterable[str] = (),
              resolver: Resolver = system_resolver) -> OutboundPolicy:
        """A policy from plain settings; ValueError naming the entry that is not a network."""
        networks = []
        for entry in allow_networks:
            try:
                networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP network such as 10.0.0.0/8 or 192.168.1.20") from None
        return cls(allow_loopback, allow_private, tuple(networks), resolver)

    # ---- travelling to the OpenCompass process ----------------------------------------------------
    def to_env(self) -> str:
        return json.dumps({"allow_loopback": self.allow_loopback, "allow_private": self.allow_private,
                           "allow_networks": [str(n) for n in self.allow_networks]})

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OutboundPolicy:
        """The policy in environ[POLICY_ENV]; the engine's default when unset. A value that cannot be read
        is an error, never a silently open policy."""
        raw = environ.get(POLICY_ENV)
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            return cls.build(allow_loopback=bool(data["allow_loopback"]), allow_private=bool(data["allow_private"]),
                             allow_networks=data.get("allow_networks") or ())
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{POLICY_ENV} is not a valid outbound policy: {exc}") from None

    # ---- decisions ---------------------------------------------------------------------------------
    def refusal(self, address: IPAddress) -> str | None:
        """Why this policy refuses an address, or None when it may be reached."""
        reason = never_allowed(address)
        if reason:
            return reason
        reached = _reached(address)
        if any(a in network for a in reached for network in self.allow_networks if a.version == network.version):
            return None
        if any(a.is_loopback for a in reached):
            return None if self.allow_loopback else _NOT_LISTED.format("a loopback")
        if not all(a.is_global and not getattr(a, "is_site_local", False) for a in reached):
            return None if self.allow_private else _NOT_LISTED.format("a private")
        return None

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address host resolves to, all of them allowed; OutboundPolicyError naming the first that is
        not, OSError when the name does not resolve."""
        literal = literal_address(host)
        addresses = [literal] if literal is not None else [ipaddress.ip_address(a.split("%")[0])
                                                            for a in self.resolver(host, port)]
        if not addresses:
            raise OSError(f"{host} resolves to no address")
        for address in addresses:
            reason = self.refusal(address)
            if reason:
                where = f"{address} is" if literal is not None else f"{host} resolves to {address},"
                raise _refused(f"{where} {reason}")
        return addresses

    def check_url(self, url: str | httpx.URL) -> list[IPAddress]:
        """Static checks (check_url_form), then resolve and check the host; the allowed addresses."""
        parsed = check_url_form(url)
        return self.resolve(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80))


def check_url_form(url: str | httpx.URL) -> httpx.URL:
    """What is refused whatever the policy and without any DNS: user info in the URL, and a literal host
    that is never allowed (link-local, metadata...). Returns the parsed URL."""
    parsed = httpx.URL(url)
    if parsed.userinfo or "@" in urlsplit(str(url)).netloc:  # even an empty one: https://@host/
        raise _refused(
            "the URL contains a user name or password before '@' (user@host); give the host alone "
            "and the API key separately"
        )
    literal = literal_address(parsed.host)
    reason = never_allowed(literal) if literal is not None else None
    if reason:
        raise _refused(f"{literal} is {reason}")
    return parsed


def default_ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context (SSL_CERT_FILE/SSL_CERT_DIR apply), made once per process and per value of
    those variables, and shared by every transport here. Loading the CA bundle costs 25-120 ms of CPU per context;
    an endpoint run made three before its first request (the sync client's transport two, the pool's client one).
    A context may serve many clients and threads at once; httpcore sets its ALPN to HTTP/1.1 on each connection,
    the same value for every client here (none speaks HTTP/2). The warm fork server makes it before forking
    (_preload.py), so a forked run starts with it loaded."""
    key = tuple(os.environ.get(name) for name in _CA_ENV)
    with _ssl_contexts_lock:
        context = _ssl_contexts.get(key)
        if context is None:
            context = _ssl_contexts[key] = httpx.create_ssl_context()
        return context


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's network backend with the policy applied at connect time: resolve, check every
    address, then connect to a checked address (never to the name again)."""

    def __init__(self, policy: OutboundPolicy, inner: httpcore.NetworkBackend | None = None):
        self.policy = policy
        self.inner = inner or httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            addresses = self.policy.resolve(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        error: Exception | None = None
        for address in addresses:
            try:
                return self.inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise _refused("connections to Unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's own transport, connecting through GuardedBackend. No proxy: a proxy would make the
    connection for us, to an address the policy never sees (so HTTP(S)_PROXY is not used either)."""

    def __init__(self, policy: OutboundPolicy, *, limits: httpx.Limits = DEFAULT_LIMITS,
                 inner: httpcore.NetworkBackend | None = None):
        ssl_context = default_ssl_context()  # SSL_CERT_FILE/SSL_CERT_DIR still apply
        # trust_env=False: the context already follows the environment (httpx would load the bundle again)
        super().__init__(limits=limits, verify=ssl_context, trust_env=False)
        # httpx 0.27/0.28 take no network backend (encode/httpx#3749 proposes the parameter): the pool it
        # built is replaced by the same pool with ours. The policy tests fail if this ever stops working.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, inner),
        )


class GuardedAsyncBackend(httpcore.AsyncNetworkBackend):
    """GuardedBackend for asyncio clients: the same decision (policy.resolve checks every address the name
    resolves to), made in a worker thread because resolving blocks, then a connection to a checked address."""

    def __init__(self, policy: OutboundPolicy, inner: httpcore.AsyncNetworkBackend | None = None):
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        import anyio.to_thread

        try:
            if literal_address(host) is not None:  # nothing to look up, nothing that blocks: no thread
                addresses = self.policy.resolve(host, port)
            else:
                addresses = await anyio.to_thread.run_sync(self.policy.resolve, host, port)
        except OutboundPolicyError:
            raise
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        error: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise _refused("connections to Unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedAsyncTransport(httpx.AsyncHTTPTransport):
    """GuardedTransport for httpx.AsyncClient (the continuous request pool, oc_pool.py); no proxy either."""

    def __init__(self, policy: OutboundPolicy, *, limits: httpx.Limits = DEFAULT_LIMITS,
                 inner: httpcore.AsyncNetworkBackend | None = None, ssl_context: ssl.SSLContext | None = None):
        ssl_context = ssl_context or default_ssl_context()
        super().__init__(limits=limits, verify=ssl_context, trust_env=False)  # as in GuardedTransport
        self._pool = httpcore.AsyncConnectionPool(  # replaced as in GuardedTransport, for the same reason
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedAsyncBackend(policy, inner),
        )


def guarded_client(policy: OutboundPolicy, *, limits: httpx.Limits = DEFAULT_LIMITS, **kwargs) -> httpx.Client:
    """An httpx client that connects only where the policy allows. Redirects (when followed) connect
    through the same transport, so each hop is checked."""
    return httpx.Client(transport=GuardedTransport(policy, limits=limits), trust_env=False, **kwargs)
