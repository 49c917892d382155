"""A request's images (data URIs or URLs, by location) -> decoded images, with every refusal a
400 naming the part."""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Sequence

import anyio
from PIL import Image, UnidentifiedImageError

from modelhub.errors import InvalidImageError
from modelhub.media.fetch import fetch_image_bytes
from modelhub.media.memory import track_large_image
from modelhub.settings import Settings

__all__ = ["decode_image", "load_images"]

_DATA_URI = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,(?P<data>.*)$",
    re.DOTALL,
)


def _data_uri_bytes(uri: str, settings: Settings, location: str) -> bytes:
    match = _DATA_URI.match(uri)
    if match is None or not match.group("b64"):
        raise InvalidImageError(
            "A data URI image must be 'data:image/<type>;base64,<data>'.", param=location
        )
    mime = (match.group("mime") or "").lower()
    if not mime.startswith("image/"):
        raise InvalidImageError(
            f"The data URI says '{mime or 'no type'}', not an image type.", param=location
        )
    data = match.group("data")
    if len(data) * 3 // 4 > settings.max_image_bytes:
        raise InvalidImageError(
            f"The image is larger than this hub's limit of {settings.max_image_bytes} bytes.",
            param=location,
        )
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError("The data URI is not valid base64.", param=location) from None


def _open(data: bytes, settings: Settings, location: str) -> Image.Image:
    """Read the header only: the pixel count is known before anything is decoded, so a
    decompression bomb is never expanded. Our caps come before Pillow's own (a warning only
    past 89 Mpx), so no process-wide warnings filter is needed, which would not be
    thread-safe."""
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise InvalidImageError(
            "The data is not an image this hub can read, or is too large.", param=location
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(f"The image could not be read: {exc}.", param=location) from None
    width, height = image.size  # ICO: the largest frame; GIF: the first frame
    if width * height > settings.max_image_pixels:
        image.close()
        raise InvalidImageError(
            f"The image is {width}x{height} pixels, over this hub's limit of "
            f"{settings.max_image_pixels} pixels.",
            param=location,
        )
    return image


def _load(image: Image.Image, location: str) -> Image.Image:
    """Decode fully, so that truncation shows now."""
    try:
        image.load()
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError) as exc:
        image.close()
        raise InvalidImageError(f"The image could not be decoded: {exc}.", param=location) from None
    track_large_image(image)
    return image


def decode_image(data: bytes, settings: Settings, location: str) -> Image.Image:
    return _load(_open(data, settings, location), location)


async def _image_bytes(url: str, settings: Settings, location: str) -> bytes:
    if url.startswith("data:"):
        return _data_uri_bytes(url, settings, location)
    return await fetch_image_bytes(url, settings, location)


async def load_images(
    slots: Sequence[tuple[str, str]], settings: Settings
) -> dict[str, Image.Image]:
    """``(location, url)`` pairs, in request order -> decoded images by location. All
    headers are read first: the request's pixels together must stay within
    ``max_request_image_pixels`` (3 parallel requests with 8 images of 36 Mpx each took
    6 GB) before a single image is decoded."""
    if len(slots) > settings.max_images_per_request:
        raise InvalidImageError(
            f"The request has {len(slots)} images; this hub accepts at most "
            f"{settings.max_images_per_request} per request.",
            param=slots[settings.max_images_per_request][0],
        )
    opened: dict[str, Image.Image] = {}
    pixels = 0
    try:
        for location, url in slots:
            data = await _image_bytes(url, settings, location)
            image = await anyio.to_thread.run_sync(_open, data, settings, location)
            opened[location] = image
            pixels += image.size[0] * image.size[1]
            if pixels > settings.max_request_image_pixels:
                raise InvalidImageError(
                    f"The request's images have {pixels} pixels up to this one, over this "
                    f"hub's limit of {settings.max_request_image_pixels} per request.",
                    param=location,
                )
        # Decoding a large image takes up to a second of CPU: not on the event loop.
        for location, image in opened.items():
            await anyio.to_thread.run_sync(_load, image, location)
    except BaseException:
        for image in opened.values():
            image.close()
        raise
    return opened
