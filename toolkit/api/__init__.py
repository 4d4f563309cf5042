"""The OpenAI-compatible HTTP layer (BlackSheep + pydantic). Torch is never imported here."""

from toolkit.api.app import build_app

__all__ = ["build_app"]
