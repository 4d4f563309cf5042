"""One log line per generation request (server.enable_log_requests), truncated to
``max_log_len``."""

from __future__ import annotations

import logging

from toolkit.api.context import ServingContext
from toolkit.protocol import SamplingParams

logger = logging.getLogger("toolkit.api.requests")


def log_request(ctx: ServingContext, request_id: str, prompts: list[list[int]],
                params: SamplingParams) -> None:
    """Log the prompts' token ids (first ``max_log_len`` of each) and the parameters."""
    if not ctx.enable_log_requests or not logger.isEnabledFor(logging.INFO):
        return
    limit = ctx.max_log_len
    shown = [ids if limit is None else ids[:limit] for ids in prompts]
    logger.info("request %s: prompt_token_ids=%s params=%s", request_id, shown, params)
