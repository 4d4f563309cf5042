"""One xgrammar ``TokenizerInfo`` and one ``GrammarCompiler`` per served model."""

from __future__ import annotations

import logging
import re
import time

import xgrammar as xgr

from toolkit.guided.grammars import compile_spec
from toolkit.protocol.guided import GuidedSpec

logger = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 256 << 20
"""Bound of the compiled-grammar cache (xgrammar evicts least recently used)."""


class GuidedSpecError(ValueError):
    """A guided spec that does not compile; ``param`` names the request field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class GuidedCompiler:
    """Compiles ``GuidedSpec``s into ``CompiledGrammar``s, once per distinct spec.

    Thread-safe: xgrammar releases the GIL while compiling, so callers compile in worker
    threads (``asyncio.to_thread``) and never on the event loop or the engine thread.
    """

    def __init__(self, hf_tokenizer, vocab_size: int, stop_token_ids: tuple[int, ...],
                 max_threads: int = 2, cache_limit_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.vocab_size = vocab_size
        """Width of the model's logits (lm_head rows), which the bitmask covers."""
        self.info = xgr.TokenizerInfo.from_huggingface(
            hf_tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids) or None)
        self._compiler = xgr.GrammarCompiler(self.info, max_threads=max_threads,
                                             cache_enabled=True,
                                             cache_limit_bytes=cache_limit_bytes)

    def compile(self, spec: GuidedSpec) -> xgr.CompiledGrammar:
        """The compiled grammar of ``spec`` (from the cache when seen before); raises
        ``GuidedSpecError`` naming ``spec.param`` when it does not compile."""
        if spec.whitespace_pattern is not None:
            _check_regex(spec.whitespace_pattern)
        start = time.perf_counter()
        try:
            compiled = compile_spec(self._compiler, spec)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise GuidedSpecError(spec.param, f"{spec.param} is not valid: "
                                  f"{_first_line(exc)}") from None
        logger.debug("compiled %s grammar in %.1f ms", spec.kind,
                     (time.perf_counter() - start) * 1e3)
        return compiled

    @property
    def cache_size_bytes(self) -> int:
        """Bytes held by the compiled-grammar cache."""
        return self._compiler.get_cache_size_bytes()


def _check_regex(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise GuidedSpecError("guided_whitespace_pattern",
                              f"guided_whitespace_pattern is not a valid regex: {exc}") from None


def _first_line(exc: Exception) -> str:
    """xgrammar's message without its source location prefix and trailing lines."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", text)
