"""Where the control plane may send a webhook: public addresses only, unless the
operator allows private ones.

A webhook URL is chosen by an account (a tenant), but the POST leaves from inside
the operator's network, next to the database, the gRPC port and a cloud's metadata
service (169.254.169.254). Unchecked, any account could make the gateway call
those for it (server-side request forgery). So by default a webhook may only go to
a global address: not loopback, private (RFC 1918, unique-local IPv6), link-local,
shared (CGNAT), multicast, reserved or unspecified, and not an IPv4 address dressed
as IPv6. An operator whose receivers are on its own network sets
SPENDGATE_WEBHOOK_ALLOW_PRIVATE=1 (`Config.webhook_allow_private`).

The check is made at delivery on every address the host name resolves to, and the
connection goes to the address that was checked: the URL's host stays in the
`Host` header and, for https, in the TLS server name the certificate is verified
against. So a name that resolves to a public address when checked and to a
private one a moment later (DNS rebinding) cannot slip past. A URL naming a
non-public address literally is refused when it is configured."""

from __future__ import annotations

import ipaddress
import socket

import httpx

from controlplane.errors import InvalidArgument

ALLOW_VARIABLE = "SPENDGATE_WEBHOOK_ALLOW_PRIVATE"
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRefused(httpx.TransportError):
    """The destination is not a public address (a failed delivery attempt, with this message)."""


def is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


def literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_configured(host: str, allow_private: bool) -> None:
    """A URL's host at configuration time: only a literal address can be judged now."""
    address = literal(host)
    if address is not None and not allow_private and not is_public(address):
        raise InvalidArgument("url", f"{address} is not a public address ({ALLOW_VARIABLE}=1 allows it)")


def resolve(host: str, port: int, allow_private: bool) -> list[str]:
    """The addresses to try for host:port, in the resolver's order, every one checked."""
    address = literal(host)
    if address is not None:
        found = [address]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from exc
        found = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
    if not allow_private:
        for candidate in found:
            if not is_public(candidate):
                raise EgressRefused(
                    f"{host} is {candidate}, not a public address ({ALLOW_VARIABLE}=1 allows it)"
                )
    return list(dict.fromkeys(str(a) for a in found))


def pinned(url: str, allow_private: bool) -> tuple[list[httpx.URL], dict[str, str], dict[str, str]]:
    """The URL rewritten to each checked address (tried in turn until one connects), the Host
    header they need, and the request's extensions (the TLS server name, for https)."""
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    targets = [parsed.copy_with(host=a) for a in resolve(parsed.host, port, allow_private)]
    extensions = {"sni_hostname": parsed.host} if parsed.scheme == "https" else {}
    return targets, {"host": parsed.netloc.decode("ascii")}, extensions
