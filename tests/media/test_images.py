"""Image loading: formats, bad data, limits, and SSRF protection against real local servers."""

from __future__ import annotations

import base64
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from PIL import Image

from modelhub.errors import InvalidImageError
from modelhub.media import load_images
from modelhub.media.addresses import is_public
from modelhub.media.fetch import HostPolicy
from modelhub.schemas.chat import ChatCompletionRequest
from modelhub.serving.conversation import to_conversation
from modelhub.settings import Settings


def _encoded(fmt: str, size=(40, 30), **save) -> bytes:
    buf = io.BytesIO()
    mode = "RGBA" if fmt in ("PNG", "ICO", "WEBP") else "RGB"
    Image.new(mode, size, (200, 10, 10)).save(buf, format=fmt, **save)
    return buf.getvalue()


def _request(*urls: str) -> ChatCompletionRequest:
    parts = [{"type": "text", "text": "see"}] + [
        {"type": "image_url", "image_url": {"url": u}} for u in urls
    ]
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": parts}])


def _data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


async def _load(*urls: str, **settings) -> dict:
    conversation = to_conversation(_request(*urls))
    slots = [(s.location, s.url) for s in conversation.image_slots()]
    return await load_images(slots, Settings(**settings))


@pytest.mark.parametrize(
    ("fmt", "mime", "save"),
    [
        ("PNG", "image/png", {}),
        ("JPEG", "image/jpeg", {}),
        ("WEBP", "image/webp", {}),
        ("GIF", "image/gif", {}),
        ("BMP", "image/bmp", {}),
        ("TIFF", "image/tiff", {}),
        ("ICO", "image/vnd.microsoft.icon", {"sizes": [(16, 16), (32, 32), (48, 48)]}),
    ],
)
async def test_data_uris_in_every_format(fmt, mime, save):
    size = (48, 48) if fmt == "ICO" else (40, 30)
    images = await _load(_data_uri(_encoded(fmt, size, **save), mime))
    assert images["messages[0].content[1]"].size == size  # ICO: its largest frame


async def test_gif_gives_its_first_frame():
    frames = [Image.new("P", (8, 8), i) for i in (1, 2)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    image = (await _load(_data_uri(buf.getvalue(), "image/gif")))["messages[0].content[1]"]
    assert image.tell() == 0


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (_data_uri(b"hello, not an image"), "not an image"),
        (_data_uri(_encoded("PNG")[:60]), "could not be decoded"),
        ("data:text/plain;base64,aGVsbG8=", "not an image type"),
        ("data:image/png;base64,***", "not valid base64"),
        ("data:image/png,rawdata", "base64"),
        ("ftp://example.com/a.png", "http(s)"),
        ("file:///etc/passwd", "http(s)"),
    ],
)
async def test_bad_images_are_400_naming_the_part(uri, reason):
    with pytest.raises(InvalidImageError) as info:
        await _load(_data_uri(_encoded("PNG")), uri)
    assert info.value.status_code == 400
    assert info.value.param == "messages[0].content[2]"
    assert reason in info.value.message


async def test_the_pixel_budget_is_per_request_and_read_from_headers():
    big = _data_uri(_encoded("PNG", (3000, 3000)))  # 9 Mpx
    images = await _load(big, max_request_image_pixels=9_000_000)
    assert images["messages[0].content[1]"].size == (3000, 3000)
    with pytest.raises(InvalidImageError, match="limit of 10000000 per request") as info:
        await _load(big, big, max_request_image_pixels=10_000_000)
    assert info.value.param == "messages[0].content[2]"


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/x.png",
        "http://[::1]:99999/x.png",
        "http://host:port/x.png",
        "http://" + "a" * 300 + ".example/x.png",
        "http://exa\x00mple.com/x.png",
        "http:///x.png",
    ],
)
async def test_urls_that_do_not_parse_are_invalid_image(url):
    with pytest.raises(InvalidImageError) as info:
        await _load(url)
    assert info.value.param == "messages[0].content[1]"
    assert info.value.code == "invalid_image"


async def test_decompression_bomb_and_count_and_size_caps():
    with pytest.raises(InvalidImageError, match="pixels"):
        await _load(_data_uri(_encoded("PNG", (4000, 4000))), max_image_pixels=1_000_000)
    png = _data_uri(_encoded("PNG"))
    with pytest.raises(InvalidImageError, match="at most 2") as info:
        await _load(png, png, png, max_images_per_request=2)
    assert info.value.param == "messages[0].content[3]"
    with pytest.raises(InvalidImageError, match="limit of 100 bytes"):
        await _load(png, max_image_bytes=100)


def test_address_policy():
    import ipaddress

    for private in (
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.5.5",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        # IPv4 inside IPv6: compatible, NAT64 (well-known and local-use, RFC 6052's /96 and
        # /48 layouts), 6to4, Teredo (server 10.0.0.1, client 127.0.0.1 obfuscated).
        "::127.0.0.1",
        "::10.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::a00:1",
        "64:ff9b:1:a00:1::",
        "2002:7f00:1::1",
        "2002:c0a8:101::",
        "2001:0:a00:1::80ff:fffe",
    ):
        assert not is_public(ipaddress.ip_address(private)), private
    for public in (
        "93.184.216.34",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "::ffff:1.1.1.1",
        "64:ff9b::101:101",
        "2002:101:101::1",
    ):
        assert is_public(ipaddress.ip_address(public)), public
    policy = HostPolicy.from_settings(
        Settings(image_fetch_allow_hosts=["10.0.0.0/8", "images.internal"])
    )
    assert policy.admits("x", ipaddress.ip_address("10.9.9.9"))
    assert policy.admits("images.internal", ipaddress.ip_address("192.168.1.1"))
    assert not policy.admits("x", ipaddress.ip_address("192.168.1.1"))


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict] = {}
    hits: ClassVar[list] = []

    def do_GET(self):
        self.hits.append((self.path, self.headers.get("Host")))
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        if status == "stall":
            threading.Event().wait(5)
            return
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def local_http():
    _Handler.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    png = _encoded("PNG")
    _Handler.routes = {
        "/ok.png": (200, {"Content-Type": "image/png"}, png),
        "/text": (200, {"Content-Type": "text/html"}, b"<html>"),
        "/big.png": (200, {"Content-Type": "image/png"}, png * 50),
        "/hop": (302, {"Location": "/ok.png"}, b""),
        "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
        "/to-private": (302, {"Location": "http://10.0.0.1/x.png"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/stall": ("stall", {}, b""),
    }
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_loopback_is_refused_by_default_without_contacting_it(local_http):
    with pytest.raises(InvalidImageError, match="non-public address") as info:
        await _load(f"{local_http}/ok.png")
    assert info.value.param == "messages[0].content[1]"
    with pytest.raises(InvalidImageError, match="non-public"):
        await _load(local_http.replace("127.0.0.1", "localhost") + "/ok.png")
    assert _Handler.hits == []


async def test_allow_list_admits_the_on_prem_host(local_http):
    images = await _load(f"{local_http}/ok.png", image_fetch_allow_hosts=["127.0.0.1"])
    assert images["messages[0].content[1]"].size == (40, 30)
    # Connected to the checked address, with the original name in the Host header.
    assert _Handler.hits[-1][1] == local_http.removeprefix("http://")
    images = await _load(f"{local_http}/hop", image_fetch_allow_hosts=["127.0.0.0/8"])
    assert len(images) == 1


@pytest.mark.parametrize(
    ("path", "reason", "settings"),
    [
        ("/to-metadata", "non-public address (169.254.169.254)", {}),
        ("/to-private", "non-public address (10.0.0.1)", {}),
        ("/loop", "redirected more than 3 times", {}),
        ("/text", "not an image", {}),
        ("/big.png", "limit of 2000 bytes", {"max_image_bytes": 2000}),
        ("/missing.png", "status 404", {}),
        ("/stall", "timed out", {"image_fetch_timeout_s": 0.5}),
    ],
)
async def test_fetch_refusals(local_http, path, reason, settings):
    with pytest.raises(InvalidImageError) as info:
        await _load(f"{local_http}{path}", image_fetch_allow_hosts=["127.0.0.1"], **settings)
    assert reason in info.value.message
    assert info.value.param == "messages[0].content[1]"
