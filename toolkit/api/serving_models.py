"""``GET /v1/models``, ``GET /health`` and ``GET /version``."""

from __future__ import annotations

from blacksheep import Request, Response

import toolkit
from toolkit.api.engine_client import EngineClient
from toolkit.api.errors import APIError
from toolkit.api.render import json_response
from toolkit.api.responses import ModelCard, ModelList, now


class InfoServing:
    """The endpoints that describe the server rather than generate."""

    def __init__(self, engine: EngineClient) -> None:
        self.engine = engine
        self.created = now()

    async def models(self, request: Request) -> Response:
        """The served model, in OpenAI's model-list shape."""
        card = ModelCard(
            id=self.engine.model_name,
            created=self.created,
            max_model_len=self.engine.max_model_len,
        )
        return json_response(ModelList(data=[card]))

    async def health(self, request: Request) -> Response:
        """200 while the engine loop runs, 503 (OpenAI-shaped) once it died."""
        if not self.engine.healthy:
            raise APIError("The engine is not running.", status=503, code="engine_unavailable")
        return json_response({"status": "ok"})

    async def version(self, request: Request) -> Response:
        """The toolkit version."""
        return json_response({"version": toolkit.__version__})
