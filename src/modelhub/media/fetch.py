"""Fetching image URLs without letting a caller reach into the operator's network (SSRF).

The host is resolved once; every address it resolves to must be public (or admitted by
the operator's allow-list); the connection goes to the address that was checked, with the
original name in the Host header and TLS SNI, so a second DNS answer cannot swap it
(rebinding). Redirects are followed by hand, each target checked the same way. Which
addresses count as public is ``media.addresses``' business.

A URL that does not parse (``http://[::1/``, a port out of range, a 300-character label
that IDNA refuses) is the caller's mistake: ``_url_errors`` makes every such error from the
standard library and httpx an ``invalid_image`` 400.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import anyio
import httpx

from modelhub.errors import InvalidImageError
from modelhub.media.addresses import IPAddress, is_public
from modelhub.settings import Settings

__all__ = ["HostPolicy", "fetch_image_bytes"]

_SCHEMES = {"http": 80, "https": 443}
_MAX_REDIRECTS = 3


@dataclass(frozen=True)
class HostPolicy:
    """Which hosts may be fetched: public addresses, plus what the operator admits."""

    allowed_names: frozenset[str]
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        names, networks = set(), []
        for entry in settings.image_fetch_allow_hosts:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def admits(self, host: str, address: IPAddress) -> bool:
        if host in self.allowed_names or any(address in n for n in self.allowed_networks):
            return True
        return is_public(address)


@contextmanager
def _url_errors(location: str) -> Iterator[None]:
    """A URL the standard library or httpx cannot take -> ``invalid_image``."""
    try:
        yield
    except (ValueError, httpx.InvalidURL) as exc:  # UnicodeError (IDNA) is a ValueError
        raise InvalidImageError(f"The image URL is not valid: {exc}.", param=location) from None


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [literal]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


async def _checked_target(url: str, policy: HostPolicy, location: str) -> tuple[str, str, str]:
    """(URL with the checked address in place of the name, Host header, SNI name)."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise InvalidImageError(
            f"Image URLs must be http(s) or data URIs, not '{parts.scheme}:'.", param=location
        )
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise InvalidImageError("The image URL has no host.", param=location)
    port = parts.port or _SCHEMES[parts.scheme]
    try:
        addresses = await _resolve(host, port)
    except (OSError, UnicodeError):
        raise InvalidImageError(
            f"The image host '{host}' could not be resolved.", param=location
        ) from None
    refused = [a for a in addresses if not policy.admits(host, a)]
    if not addresses or refused:
        raise InvalidImageError(
            f"The image host '{host}' resolves to a non-public address ({refused[0] if refused else 'none'}); "
            "this hub does not fetch from private networks.",
            param=location,
        )
    address = addresses[0]
    netloc = f"[{address}]" if address.version == 6 else str(address)
    if parts.port:
        netloc += f":{parts.port}"
    host_header = host if not parts.port else f"{host}:{parts.port}"
    return parts._replace(netloc=netloc).geturl(), host_header, host


async def _read_capped(response: httpx.Response, cap: int, location: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise InvalidImageError(
            f"The image is larger than this hub's limit of {cap} bytes.", param=location
        )
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > cap:
            raise InvalidImageError(
                f"The image is larger than this hub's limit of {cap} bytes.", param=location
            )
    return bytes(body)


async def fetch_image_bytes(url: str, settings: Settings, location: str) -> bytes:
    policy = HostPolicy.from_settings(settings)
    timeout = httpx.Timeout(
        settings.image_fetch_timeout_s, connect=settings.image_connect_timeout_s
    )
    try:
        with _url_errors(location), anyio.fail_after(settings.image_fetch_timeout_s):
            async with httpx.AsyncClient(
                timeout=timeout, follow_redirects=False, trust_env=False
            ) as client:
                for _ in range(_MAX_REDIRECTS + 1):
                    target, host_header, sni = await _checked_target(url, policy, location)
                    request = client.build_request(
                        "GET",
                        target,
                        headers={"Host": host_header, "Accept": "image/*"},
                        extensions={"sni_hostname": sni},
                    )
                    response = await client.send(request, stream=True)
                    try:
                        if response.is_redirect:
                            url = urljoin(url, response.headers.get("location", ""))
                            continue
                        if response.status_code != 200:
                            raise InvalidImageError(
                                f"Fetching the image failed with status {response.status_code}.",
                                param=location,
                            )
                        kind = (
                            response.headers.get("content-type", "").split(";")[0].strip().lower()
                        )
                        if not kind.startswith("image/"):
                            raise InvalidImageError(
                                f"The image URL returned '{kind or 'no content type'}', not an image.",
                                param=location,
                            )
                        return await _read_capped(response, settings.max_image_bytes, location)
                    finally:
                        await response.aclose()
    except TimeoutError:
        raise InvalidImageError("Fetching the image timed out.", param=location) from None
    except httpx.HTTPError as exc:
        raise InvalidImageError(
            f"Fetching the image failed: {type(exc).__name__}.", param=location
        ) from None
    raise InvalidImageError(
        f"The image URL redirected more than {_MAX_REDIRECTS} times.", param=location
    )
