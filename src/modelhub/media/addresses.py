"""Which IP addresses the hub may fetch from: public ones, seen through IPv6's wrappings.

An IPv6 address can carry an IPv4 address that a translator or tunnel on the path unwraps
and connects to: IPv4-mapped (``::ffff:10.0.0.1``) and the deprecated IPv4-compatible
(``::10.0.0.1``) forms, NAT64 (RFC 6052's ``64:ff9b::/96`` and RFC 8215's local-use
``64:ff9b:1::/48``), 6to4 (``2002::/16``) and Teredo (``2001::/32``). Python's
``is_global`` judges the IPv6 wrapper only (3.11 calls ``64:ff9b::7f00:1``, loopback
through NAT64, global), so every IPv4 address a wrapper may carry is judged too.
"""

from __future__ import annotations

import ipaddress

__all__ = ["IPAddress", "embedded_ipv4", "is_public"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _low32(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address that ``address`` may stand for on the way (none for plain ones)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _IPV4_COMPATIBLE or address in _NAT64:
        found.append(_low32(address))
    if address in _NAT64_LOCAL:
        # A local-use prefix may be any length from /48 to /96: the IPv4 address sits either
        # in the last 32 bits (/96) or, for /48, in bits 48-63 and 72-87 (RFC 6052, 2.2).
        bits = int(address)
        found.append(_low32(address))
        found.append(ipaddress.IPv4Address(((bits >> 64) & 0xFFFF) << 16 | (bits >> 40) & 0xFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)  # (server, client): a packet may go to either
    return found


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast, and so is every IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)  # an IPv4 address in IPv6 notation, nothing more
    if not address.is_global or address.is_multicast:
        return False
    return all(is_public(inner) for inner in embedded_ipv4(address))
