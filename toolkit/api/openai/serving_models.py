"""``GET /v1/models``, ``GET /v1/models/{model}``, ``GET /health`` and ``GET /version``."""

from __future__ import annotations

from urllib.parse import unquote

from blacksheep import Request, Response

import toolkit
from toolkit.api.context import ServingContext
from toolkit.api.http.errors import APIError
from toolkit.api.http.render import json_response
from toolkit.api.openai.responses import ModelCard, ModelList, now
from toolkit.api.openai.serving_lora import lora_client


class InfoServing:
    """The endpoints that describe the server rather than generate."""

    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx
        self.created = now()

    async def models(self, request: Request) -> Response:
        """Every served name (the reported one first), then the LoRA adapters with their
        ``parent`` (vLLM's shape), in OpenAI's model-list shape."""
        cards = [self._card(name) for name in self.ctx.served_model_name]
        cards += [self._adapter_card(a.name, a.path) for a in self._adapters()]
        return json_response(ModelList(data=cards))

    async def model(self, request: Request) -> Response:
        """``GET /v1/models/{model}``: one served name's card; an OpenAI-shaped 404 for a
        name this server does not serve."""
        name = unquote(request.route_values.get("model", ""))
        if name in self.ctx.served_model_name:
            return json_response(self._card(name))
        adapter = next((a for a in self._adapters() if a.name == name), None)
        if adapter is None:
            raise APIError(f"The model `{name}` does not exist.", status=404, param="model",
                           code="model_not_found")
        return json_response(self._adapter_card(adapter.name, adapter.path))

    def _adapters(self) -> list:
        lora = lora_client(self.ctx)
        return lora.served() if lora is not None else []

    def _adapter_card(self, name: str, path: str) -> ModelCard:
        """A LoRA adapter: ``root`` its directory, ``parent`` the base model's name."""
        engine = self.ctx.engine
        return ModelCard(id=name, created=self.created, root=path, parent=self.ctx.model_name,
                         max_model_len=engine.max_model_len, deterministic=engine.deterministic)

    def _card(self, name: str) -> ModelCard:
        engine = self.ctx.engine
        return ModelCard(id=name, created=self.created, root=engine.model_name,
                         max_model_len=engine.max_model_len, deterministic=engine.deterministic)

    async def health(self, request: Request) -> Response:
        """200 while the engine loop runs, 503 (OpenAI-shaped) once it died."""
        if not self.ctx.engine.healthy:
            raise APIError("The engine is not running.", status=503, code="engine_unavailable")
        return json_response({"status": "ok"})

    async def version(self, request: Request) -> Response:
        """The toolkit version, and whether this server is deterministic."""
        return json_response({"version": toolkit.__version__,
                              "deterministic": self.ctx.engine.deterministic})
