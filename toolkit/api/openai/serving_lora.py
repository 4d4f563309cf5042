"""LoRA adapters over HTTP: a request's ``model`` -> adapter key, and vLLM's
``POST /v1/load_lora_adapter`` / ``POST /v1/unload_lora_adapter`` (behind the admin key and
server.allow_runtime_lora_updating)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from blacksheep import Request, Response
from pydantic import BaseModel, ConfigDict

from toolkit.api.context import ServingContext
from toolkit.api.http.body import parse_body
from toolkit.api.http.errors import APIError
from toolkit.api.http.render import json_response


class ServedAdapterInfo(Protocol):
    name: str
    key: str
    path: str


class LoraClient(Protocol):
    """What the API needs of the engine's LoRA manager (toolkit.lora.manager.LoraManager)."""

    def resolve(self, name: str) -> str | None: ...

    def served(self) -> list[ServedAdapterInfo]: ...

    def add(self, name: str, path: str) -> Any: ...

    def remove(self, name: str) -> None: ...

    def request_counts(self) -> dict[str, int]: ...


def lora_client(ctx: ServingContext) -> LoraClient | None:
    """The engine's LoRA manager, None when the server serves no adapters."""
    return getattr(ctx.engine, "lora", None)


def adapter_key(ctx: ServingContext, model: str | None) -> str | None:
    """The adapter key of a request's ``model`` (None: the base model)."""
    lora = lora_client(ctx)
    if model is None or lora is None or model in ctx.served_model_name:
        return None
    return lora.resolve(model)


def is_served(ctx: ServingContext, model: str) -> bool:
    """A base model name or a served adapter name."""
    return model in ctx.served_model_name or adapter_key(ctx, model) is not None


class LoadLoraAdapterRequest(BaseModel):
    """vLLM's body of POST /v1/load_lora_adapter."""

    model_config = ConfigDict(extra="forbid")
    lora_name: str
    lora_path: str


class UnloadLoraAdapterRequest(BaseModel):
    """vLLM's body of POST /v1/unload_lora_adapter."""

    model_config = ConfigDict(extra="forbid")
    lora_name: str
    lora_int_id: int | None = None


class LoraAdminServing:
    """Load and unload adapters while serving; the adapter is read and validated off the
    event loop, so requests keep streaming meanwhile."""

    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx

    def routes(self):
        return [("POST", "/v1/load_lora_adapter", self.load),
                ("POST", "/v1/unload_lora_adapter", self.unload)]

    def _lora(self) -> LoraClient:
        lora = lora_client(self.ctx)
        if lora is None:
            raise APIError("LoRA adapters are not enabled on this server (lora.enable=false)",
                           status=400, code="lora_disabled")
        return lora

    async def load(self, request: Request) -> Response:
        body = await parse_body(request, LoadLoraAdapterRequest)
        lora = self._lora()
        if body.lora_name in self.ctx.served_model_name:
            raise APIError(f"`{body.lora_name}` is the base model's name", param="lora_name",
                           code="invalid_value")
        try:
            await asyncio.to_thread(lora.add, body.lora_name, body.lora_path)
        except ValueError as exc:  # LoraLoadError: unreadable, unsupported or mismatched
            raise APIError(str(exc), param="lora_path", code="invalid_value") from None
        return json_response({"status": "ok",
                              "message": f"Success: LoRA adapter '{body.lora_name}' added "
                                         "successfully."})

    async def unload(self, request: Request) -> Response:
        body = await parse_body(request, UnloadLoraAdapterRequest)
        lora = self._lora()
        try:
            lora.remove(body.lora_name)
        except KeyError:
            raise APIError(f"The LoRA adapter `{body.lora_name}` is not loaded.", status=404,
                           param="lora_name", code="model_not_found") from None
        return json_response({"status": "ok",
                              "message": f"Success: LoRA adapter '{body.lora_name}' removed "
                                         "successfully."})
