"""Image loading for chat requests: data URIs and safely fetched http(s) URLs."""

from modelhub.media.fetch import HostPolicy, fetch_image_bytes
from modelhub.media.images import decode_image, load_images

__all__ = ["HostPolicy", "decode_image", "fetch_image_bytes", "load_images"]
