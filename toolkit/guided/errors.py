"""The error a guided spec raises when it cannot be compiled exactly."""

from __future__ import annotations


class GuidedSpecError(ValueError):
    """A guided spec that does not compile, compiles too slowly, or would not be enforced
    exactly; ``param`` names the request field the API's 400 points at."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
