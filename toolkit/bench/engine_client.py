"""Sends benchmark requests to the in-process AsyncEngine (no HTTP in between)."""

from __future__ import annotations

import time
import uuid

from toolkit.bench.records import RequestRecord
from toolkit.bench.workload import BenchRequest
from toolkit.engine.async_engine import AsyncEngine
from toolkit.protocol import SamplingParams


class EngineClient:
    """Tokenizes like the server does (chat template for chats, plain encode for text) and
    records the arrival of every delta that carries tokens."""

    def __init__(self, engine: AsyncEngine, temperature: float, ignore_eos: bool) -> None:
        self.engine = engine
        self.temperature = temperature
        self.ignore_eos = ignore_eos

    async def send(self, request: BenchRequest, record: RequestRecord) -> None:
        """Run one request to the end, filling `record`; raise on an engine error."""
        tokenizer = self.engine.tokenizer
        if request.is_chat:
            prompt_ids = tokenizer.apply_chat_template(list(request.messages))
        else:
            prompt_ids = tokenizer.encode(request.prompt)
        record.num_prompt_tokens = len(prompt_ids)
        params = SamplingParams(max_tokens=request.max_tokens, temperature=self.temperature,
                                ignore_eos=self.ignore_eos, seed=request.seed,
                                lora_name=self._lora_key(request.lora_name))
        async for output in self.engine.generate(uuid.uuid4().hex, prompt_ids, params):
            if output.error:
                raise RuntimeError(output.error)
            if output.new_token_ids:
                record.chunk_times.append(time.perf_counter())
                record.num_output_tokens += len(output.new_token_ids)

    def _lora_key(self, name: str | None) -> str | None:
        """The engine's key of adapter ``name`` (None: the base model); a ValueError
        naming the served adapters when it serves no such adapter."""
        if name is None:
            return None
        lora = getattr(self.engine, "lora", None)
        key = lora.resolve(name) if lora is not None else None
        if key is None:
            served = [a.name for a in lora.served()] if lora is not None else []
            raise ValueError(f"bench.lora_adapters: {name!r} is not a served LoRA adapter; "
                             f"served: {served} (lora.enable, lora.modules)")
        return key

    async def close(self) -> None:
        """Nothing to release: the engine belongs to the caller."""
