"""Image embeddings for a step: each image encoded once, kept on its request until the
prefill has passed it, and laid out as (batch rows, embeddings) for the model's forward.

With chunked prefill (or a prefix-cache hit that ends inside an image) a chunk holds only
part of an image's tokens: the whole image is encoded at its first chunk and the rows of
later chunks are taken from the kept embeddings, so the vision encoder runs once per
image per prefill (a preempted request that recomputes encodes again).
"""

from __future__ import annotations

import bisect

import torch

from toolkit.protocol.multimodal import ImageInput
from toolkit.protocol.outputs import ScheduledRequest


class ImageEmbeddingCache:
    """Per request, the embeddings of the images encoded so far, by image index."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str) -> None:
        self.model = model
        """A model with ``encode_images(pixel_values, pixel_mask)``."""
        self.device = device
        self._kept: dict[str, dict[int, torch.Tensor]] = {}
        self.num_encoded = 0
        """Images encoded since start (each image of a prefill once)."""

    def __len__(self) -> int:
        return len(self._kept)

    def gather(self, scheduled: list[ScheduledRequest],
               row_starts: list[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(rows [M] int64, embeddings [M, hidden]) of the image tokens among the step's
        chunks (``row_starts``: each chunk's first row of the batch); None when the step
        has none."""
        rows: list[int] = []
        pieces: list[torch.Tensor] = []
        for item, first_row in zip(scheduled, row_starts):
            media = item.request.multimodal
            if media is None:
                continue
            request_id, start = item.request.request_id, item.start
            end = start + item.num_tokens
            for index in media.images_in(start, end):
                positions = media.positions[index]
                lo, hi = bisect.bisect_left(positions, start), bisect.bisect_left(positions, end)
                embeddings = self._embeddings(request_id, index, media.images[index])
                rows.extend(first_row + p - start for p in positions[lo:hi])
                pieces.append(embeddings[lo:hi])
            if end > media.last_position:
                self._kept.pop(request_id, None)  # the prefill is past every image
        if not rows:
            return None
        return torch.tensor(rows, dtype=torch.int64, device=self.device), torch.cat(pieces)

    def release(self, request_id: str) -> None:
        """Forget a finished or aborted request's kept embeddings."""
        self._kept.pop(request_id, None)

    def _embeddings(self, request_id: str, index: int, image: ImageInput) -> torch.Tensor:
        """[num_embeddings, hidden] of one image of a request, encoded on first use."""
        kept = self._kept.setdefault(request_id, {})
        if index not in kept:
            pixels = torch.from_numpy(image.pixel_values).to(self.device)
            mask = torch.from_numpy(image.pixel_mask).to(self.device, torch.bool)
            embeddings = self.model.encode_images(pixels, mask)
            if embeddings.shape[0] != image.num_embeddings:
                raise ValueError(f"an image gave {embeddings.shape[0]} embeddings where "
                                 f"its prompt has {image.num_embeddings} image tokens")
            kept[index] = embeddings
            self.num_encoded += 1
        return kept[index]
