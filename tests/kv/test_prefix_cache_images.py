"""Pages holding image tokens are named by the images' hashes too (MultiModalInput's
page_key); text pages keep the hashes they had."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.kv.prefix_cache import PrefixCache, hash_pages
from toolkit.protocol.multimodal import ImageInput, MultiModalInput

IMAGE_TOKEN = 9
TOKENS = [1, 2, 3, 4, 5, 6, IMAGE_TOKEN, IMAGE_TOKEN, IMAGE_TOKEN, 7, 8, 8, 2]


def _media(seed: bytes) -> MultiModalInput:
    image = ImageInput(seed * 32, np.zeros((1, 3, 2, 2), np.float32),
                       np.ones((1, 2, 2), bool), num_embeddings=3)
    return MultiModalInput.bind((image,), TOKENS, IMAGE_TOKEN)


def test_only_pages_with_image_tokens_change_and_text_hashes_stay():
    plain = hash_pages(TOKENS, 4)
    first, second = (hash_pages(TOKENS, 4, page_key=_media(s).page_key) for s in (b"a", b"b"))
    assert first[0] == second[0] == plain[0]  # positions 0-3: text
    assert first[1] != second[1] and first[1] != plain[1]  # positions 4-7 hold the image
    assert first[2] != second[2]  # chained after it


def test_lookup_hits_past_the_image_only_for_the_same_image():
    cache = PrefixCache(page_size=4)
    media = _media(b"a")
    for page, page_hash in enumerate(hash_pages(TOKENS, 4, page_key=media.page_key)):
        cache.insert(page_hash, page)
    assert cache.lookup(TOKENS, _media(b"a").page_key).num_tokens == 12
    assert cache.lookup(TOKENS, _media(b"b").page_key).num_tokens == 4
    assert cache.lookup(TOKENS).num_tokens == 4


def test_binding_checks_the_image_token_count():
    image = ImageInput(b"x" * 32, None, None, num_embeddings=2)
    with pytest.raises(ValueError, match="3 image tokens"):
        MultiModalInput.bind((image,), TOKENS, IMAGE_TOKEN)
