"""One xgrammar ``TokenizerInfo`` and one guarded grammar compiler per served model."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import replace

import xgrammar as xgr

from toolkit.guided.compile_pool import CompilePool, CompileTimeout
from toolkit.guided.errors import GuidedSpecError
from toolkit.guided.grammars import is_plain_json_format
from toolkit.guided.schema_support import check_schema, with_exact_formats
from toolkit.protocol.guided import GuidedSpec

__all__ = ["DEFAULT_CACHE_BYTES", "GuidedCompiler", "GuidedSpecError"]

logger = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 256 << 20
"""Bound of the compiled-grammar cache (least recently used grammars are evicted)."""


class GuidedCompiler:
    """Compiles ``GuidedSpec``s into ``CompiledGrammar``s, once per distinct spec.

    Every compile runs in a worker process with a time limit (a regex or grammar whose
    automaton blows up is refused, not left burning a core); the result is cached here.
    Thread-safe; ``compile`` blocks, so callers use worker threads (``asyncio.to_thread``).
    """

    def __init__(self, hf_tokenizer, vocab_size: int, stop_token_ids: tuple[int, ...],
                 max_threads: int = 2, cache_limit_bytes: int = DEFAULT_CACHE_BYTES,
                 compile_timeout_s: float | None = 10.0,
                 max_compile_workers: int = 2) -> None:
        if compile_timeout_s is not None and compile_timeout_s <= 0:
            raise ValueError(f"server.guided.compile_timeout_s must be > 0 or null, got "
                             f"{compile_timeout_s}")
        if max_compile_workers < 1:
            raise ValueError(f"server.guided.max_compile_workers must be >= 1, got "
                             f"{max_compile_workers}")
        self.vocab_size = vocab_size
        """Width of the model's logits (lm_head rows), which the bitmask covers."""
        self.info = xgr.TokenizerInfo.from_huggingface(
            hf_tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids) or None)
        self.compile_timeout_s = compile_timeout_s
        """Seconds one compile may take before the spec is refused; None: no limit."""
        self._pool = CompilePool(self.info, max_compile_workers, max_threads)
        self._cache: OrderedDict[GuidedSpec, tuple[xgr.CompiledGrammar, int]] = OrderedDict()
        self._cache_limit_bytes = cache_limit_bytes
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Start a compile worker in the background (AsyncEngine.start calls this)."""
        self._pool.warm()

    def compile(self, spec: GuidedSpec) -> xgr.CompiledGrammar:
        """The compiled grammar of ``spec`` (from the cache when seen before); raises
        ``GuidedSpecError`` naming the request field when it does not compile in time or
        uses a JSON-schema keyword xgrammar would not enforce."""
        cached = self._cached(spec)
        if cached is not None:
            return cached
        compiled_spec = (_exact_json_spec(spec) if spec.kind == "json"
                         else _exact_structural_tag(spec) if spec.kind == "structural_tag"
                         else spec)
        start = time.perf_counter()
        try:
            serialized = self._pool.compile(compiled_spec, self.compile_timeout_s)
        except CompileTimeout:
            raise GuidedSpecError(spec.param, f"{spec.param} did not compile within "
                                  f"{self.compile_timeout_s:g} s; simplify it") from None
        compiled = xgr.CompiledGrammar.deserialize_json(serialized, self.info)
        self._store(spec, compiled, len(serialized))
        logger.debug("compiled %s grammar in %.1f ms", spec.kind,
                     (time.perf_counter() - start) * 1e3)
        return compiled

    @property
    def cache_size_bytes(self) -> int:
        """Bytes (serialized) of the grammars held by the cache."""
        with self._lock:
            return sum(size for _, size in self._cache.values())

    def close(self) -> None:
        """Stop the idle compile workers."""
        self._pool.close()

    def _cached(self, spec: GuidedSpec) -> xgr.CompiledGrammar | None:
        with self._lock:
            entry = self._cache.get(spec)
            if entry is None:
                return None
            self._cache.move_to_end(spec)
            return entry[0]

    def _store(self, spec: GuidedSpec, compiled: xgr.CompiledGrammar, size: int) -> None:
        with self._lock:
            self._cache[spec] = (compiled, size)
            total = sum(s for _, s in self._cache.values())
            while total > self._cache_limit_bytes and len(self._cache) > 1:
                _, (_, evicted) = self._cache.popitem(last=False)
                total -= evicted


def _exact_json_spec(spec: GuidedSpec) -> GuidedSpec:
    """The spec to compile for a JSON schema: refused (GuidedSpecError) when it uses a
    keyword xgrammar would not enforce, with loose formats made exact patterns."""
    return replace(spec, value=json.dumps(_exact_schema(_loads(spec), spec.param)))


def _exact_structural_tag(spec: GuidedSpec) -> GuidedSpec:
    """A structural tag whose plain JSON-schema formats pass ``_exact_json_spec``'s check
    and have exact formats."""
    return replace(spec, value=json.dumps(_exact_formats_in(_loads(spec), spec.param)))


def _exact_formats_in(node, param: str):
    if isinstance(node, list):
        return [_exact_formats_in(item, param) for item in node]
    if not isinstance(node, dict):
        return node
    if is_plain_json_format(node):
        return {**node, "json_schema": _exact_schema(node["json_schema"], param)}
    return {key: _exact_formats_in(value, param) for key, value in node.items()}


def _exact_schema(schema, param: str):
    found = check_schema(schema)
    if found is not None:
        raise GuidedSpecError(param, f"{param}: {found.message()}")
    return with_exact_formats(schema)


def _loads(spec: GuidedSpec):
    try:
        return json.loads(spec.value)
    except json.JSONDecodeError as exc:
        raise GuidedSpecError(spec.param, f"{spec.param} is not valid JSON: {exc}") from None
