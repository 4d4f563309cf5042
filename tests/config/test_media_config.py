"""model=smolvlm and the server's media switch compose and validate."""

from __future__ import annotations

from toolkit.compose import compose_config
from toolkit.resolve import validate


def test_smolvlm_composes_with_fetching_switched_on():
    cfg = compose_config(["model=smolvlm", "server.media.allow_fetch=true",
                          "server.media.max_image_bytes=1048576"])
    validate(cfg)
    assert cfg.model.source == "hf:HuggingFaceTB/SmolVLM-256M-Instruct"
    assert cfg.server.media.allow_fetch is True
    assert cfg.server.media.max_image_bytes == 1048576


def test_fetching_is_off_by_default():
    media = compose_config([]).server.media
    assert media.allow_fetch is False and media.max_image_bytes > 0
