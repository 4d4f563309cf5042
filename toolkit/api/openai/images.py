"""``image_url`` content parts -> decoded images, under the server's media limits.

A ``data:`` URL is decoded in place; an http(s) URL is fetched only when
``server.media.allow_fetch`` is on, within ``fetch_timeout_s``, refusing a body over
``max_image_bytes`` (by Content-Length and while streaming) and any content type but
``image/*``. Bad input is an OpenAI-shaped error naming the part: 400 for a URL that
cannot be used or an image that does not decode, 413 for one over a size limit.
Pillow is imported only when an image arrives.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

from toolkit.api.http.errors import APIError
from toolkit.api.openai.protocol import ChatMessage
from toolkit.config.schema import MediaConfig

_FETCH_SCHEMES = ("http://", "https://")


@dataclass(frozen=True)
class ImagePart:
    """One image_url part of the conversation."""

    param: str
    """Where it is in the request (``messages[0].content[1].image_url``)."""
    url: str


def image_parts(messages: list[ChatMessage]) -> list[ImagePart]:
    """The conversation's image_url parts in order; a part without its url is a 400."""
    parts = []
    for i, message in enumerate(messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            if part.type != "image_url":
                continue
            param = f"messages[{i}].content[{j}].image_url"
            if part.image_url is None:
                raise APIError("An image_url content part needs 'image_url': {'url': ...}",
                               param=param, code="invalid_value")
            parts.append(ImagePart(param, part.image_url.url))
    return parts


async def load_images(parts: list[ImagePart], media: MediaConfig) -> list[Any]:
    """The parts' images, decoded (PIL images, fully loaded)."""
    images = []
    for part in parts:
        data = await _image_bytes(part, media)
        images.append(await asyncio.to_thread(decode_image, data, part.param, media))
    return images


def decode_image(data: bytes, param: str, media: MediaConfig) -> Any:
    """Encoded bytes -> a loaded PIL image; 400 when Pillow cannot read it, 413 when it
    has more pixels than ``media.max_image_pixels``."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > media.max_image_pixels:
            raise _too_large(f"The image is {width}x{height} pixels, more than "
                             f"server.media.max_image_pixels={media.max_image_pixels}", param)
        image.load()
    except APIError:
        raise
    except Image.DecompressionBombError as exc:
        raise _too_large(f"The image is too large to decode: {exc}", param) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise APIError(f"The image could not be decoded: {exc}", param=param,
                       code="invalid_image") from None
    return image


async def _image_bytes(part: ImagePart, media: MediaConfig) -> bytes:
    url = part.url
    if url.startswith("data:"):
        return _data_url_bytes(url, part.param, media.max_image_bytes)
    if url.lower().startswith(_FETCH_SCHEMES):
        if not media.allow_fetch:
            raise APIError("Fetching image URLs is disabled on this server "
                           "(server.media.allow_fetch=false); send the image as a data: URL",
                           param=part.param, code="image_fetch_disabled")
        return await _fetch(url, part.param, media)
    raise APIError("An image URL must be a data: URL or an http(s) URL",
                   param=part.param, code="invalid_value")


def _data_url_bytes(url: str, param: str, max_bytes: int) -> bytes:
    """The payload of ``data:image/<type>;base64,<data>``."""
    header, comma, payload = url[len("data:"):].partition(",")
    media_type, *options = header.split(";")
    if not comma or "base64" not in options:
        raise APIError("A data: image URL must be base64: data:image/png;base64,...",
                       param=param, code="invalid_image")
    if media_type and not media_type.startswith("image/"):
        raise APIError(f"A data: URL of type {media_type!r} is not an image",
                       param=param, code="invalid_image")
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise _too_large(f"The image is over server.media.max_image_bytes={max_bytes}", param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError("The data: URL is not valid base64", param=param,
                       code="invalid_image") from None
    if len(data) > max_bytes:
        raise _too_large(f"The image is {len(data)} bytes, over "
                         f"server.media.max_image_bytes={max_bytes}", param)
    return data


async def _fetch(url: str, param: str, media: MediaConfig) -> bytes:
    """GET an image within the time, size and content-type limits."""
    import httpx

    limit = media.max_image_bytes
    try:
        async with httpx.AsyncClient(timeout=media.fetch_timeout_s,
                                     follow_redirects=True) as client:
            return await asyncio.wait_for(_download(client, url, param, limit),
                                          media.fetch_timeout_s)
    except (httpx.HTTPError, asyncio.TimeoutError) as exc:
        raise APIError(f"Fetching the image failed: {type(exc).__name__}", param=param,
                       code="image_fetch_failed") from None


async def _download(client: Any, url: str, param: str, limit: int) -> bytes:
    async with client.stream("GET", url) as response:
        if response.status_code != 200:
            raise APIError(f"Fetching the image failed: HTTP {response.status_code}",
                           param=param, code="image_fetch_failed")
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        if not content_type.startswith("image/"):
            raise APIError(f"The URL's content type {content_type or 'none'!r} is not an "
                           "image", param=param, code="invalid_image")
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(f"The image is {declared} bytes, over "
                             f"server.media.max_image_bytes={limit}", param)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise _too_large(f"The image is over server.media.max_image_bytes={limit}",
                                 param)
        return bytes(body)


def _too_large(message: str, param: str) -> APIError:
    return APIError(message, status=413, param=param, code="image_too_large")
