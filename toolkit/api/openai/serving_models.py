"""``GET /v1/models``, ``GET /health`` and ``GET /version``."""

from __future__ import annotations

from blacksheep import Request, Response

import toolkit
from toolkit.api.context import ServingContext
from toolkit.api.http.errors import APIError
from toolkit.api.http.render import json_response
from toolkit.api.openai.responses import ModelCard, ModelList, now


class InfoServing:
    """The endpoints that describe the server rather than generate."""

    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx
        self.created = now()

    async def models(self, request: Request) -> Response:
        """Every served name (the reported one first), in OpenAI's model-list shape."""
        cards = [
            ModelCard(id=name, created=self.created, max_model_len=self.ctx.engine.max_model_len,
                      deterministic=self.ctx.engine.deterministic)
            for name in self.ctx.model_names
        ]
        return json_response(ModelList(data=cards))

    async def health(self, request: Request) -> Response:
        """200 while the engine loop runs, 503 (OpenAI-shaped) once it died."""
        if not self.ctx.engine.healthy:
            raise APIError("The engine is not running.", status=503, code="engine_unavailable")
        return json_response({"status": "ok"})

    async def version(self, request: Request) -> Response:
        """The toolkit version, and whether this server is deterministic."""
        return json_response({"version": toolkit.__version__,
                              "deterministic": self.ctx.engine.deterministic})
