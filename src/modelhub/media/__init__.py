"""Image loading for chat requests: data URIs and safely fetched http(s) URLs."""

from modelhub.media.fetch import HostPolicy, fetch_image_bytes
from modelhub.media.images import decode_image, image_parts, load_images

__all__ = ["HostPolicy", "decode_image", "fetch_image_bytes", "image_parts", "load_images"]
