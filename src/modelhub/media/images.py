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


def decode_image(data: bytes, settings: Settings, location: str) -> Image.Image:
    """Decode fully (so truncation shows now), after checking the pixel count from the
    header alone (so a decompression bomb is never expanded). Our cap is checked before
    Pillow's own (a warning only past 89 Mpx), so no process-wide warnings filter is needed,
    which would not be thread-safe."""
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size  # ICO: the largest frame; GIF: the first frame
        if width * height > settings.max_image_pixels:
            raise InvalidImageError(
                f"The image is {width}x{height} pixels, over this hub's limit of "
                f"{settings.max_image_pixels} pixels.",
                param=location,
            )
        image.load()
    except InvalidImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise InvalidImageError(
            "The data is not an image this hub can read, or is too large.", param=location
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(f"The image could not be decoded: {exc}.", param=location) from None
    return image


async def load_images(
    slots: Sequence[tuple[str, str]], settings: Settings
) -> dict[str, Image.Image]:
    """``(location, url)`` pairs, in request order -> decoded images by location."""
    if len(slots) > settings.max_images_per_request:
        raise InvalidImageError(
            f"The request has {len(slots)} images; this hub accepts at most "
            f"{settings.max_images_per_request} per request.",
            param=slots[settings.max_images_per_request][0],
        )
    images = {}
    for location, url in slots:
        if url.startswith("data:"):
            data = _data_uri_bytes(url, settings, location)
        else:
            data = await fetch_image_bytes(url, settings, location)
        # Decoding a large image takes up to a second of CPU: not on the event loop.
        images[location] = await anyio.to_thread.run_sync(decode_image, data, settings, location)
    return images
