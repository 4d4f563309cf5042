"""A request's images as the engine sees them: preprocessed pixels, where their
embeddings go in the prompt, and the hashes that key their pages in the prefix cache.

Pure data (numpy arrays, no torch): built by the tokenizer side (toolkit.tokenizer.images)
for the API, consumed by the runner (toolkit.runner.multimodal) and the page manager.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ImageInput:
    """One preprocessed image."""

    content_hash: bytes
    """SHA-256 of the preprocessed pixels: equal images share prefix-cache pages."""
    pixel_values: Any
    """numpy float32 [num_tiles, 3, S, S]: the image's tiles, normalized."""
    pixel_mask: Any
    """numpy bool [num_tiles, S, S]: real (not padding) pixels of each tile."""
    num_embeddings: int
    """Embeddings the vision encoder makes of it = its ``<image>`` tokens in the prompt."""


@dataclass(frozen=True)
class MultiModalInput:
    """A prompt's images, in prompt order, and the prompt positions each one fills."""

    images: tuple[ImageInput, ...]
    positions: tuple[tuple[int, ...], ...]
    """Per image, the ascending prompt positions of its ``<image>`` tokens (one per
    embedding, in the embeddings' order)."""

    @classmethod
    def bind(cls, images: tuple[ImageInput, ...], prompt_token_ids: list[int],
             image_token_id: int) -> MultiModalInput:
        """Assign the prompt's ``<image>`` tokens to the images in order; ValueError when
        the prompt holds another number of them than the images fill."""
        slots = [p for p, token in enumerate(prompt_token_ids) if token == image_token_id]
        needed = sum(image.num_embeddings for image in images)
        if len(slots) != needed:
            raise ValueError(f"the prompt has {len(slots)} image tokens where its "
                             f"{len(images)} image(s) fill {needed}")
        positions, start = [], 0
        for image in images:
            positions.append(tuple(slots[start:start + image.num_embeddings]))
            start += image.num_embeddings
        return cls(tuple(images), tuple(positions))

    @property
    def last_position(self) -> int:
        """The last prompt position an image fills (its prefill is done past it)."""
        return max(p[-1] for p in self.positions)

    def images_in(self, start: int, end: int) -> list[int]:
        """Indices of the images with at least one token at positions [start, end)."""
        found = []
        for index, positions in enumerate(self.positions):
            first = bisect.bisect_left(positions, start)
            if first < len(positions) and positions[first] < end:
                found.append(index)
        return found

    def page_key(self, start: int, end: int) -> bytes:
        """What a KV page of positions [start, end) depends on besides its token ids:
        the hashes of the images with tokens in it (b"" when none)."""
        return b"".join(self.images[i].content_hash for i in self.images_in(start, end))
